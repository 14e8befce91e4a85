"""The app's three pages as one Gradio Blocks: Chat, Side by side, Report.

Gradio because it is well kept, runs fully offline (its fonts and scripts ship in the wheel), and has the chat,
streaming and table components these pages need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import gradio as gr

from fasttune import tasks
from fasttune.app import report_view
from fasttune.app.catalog import Catalog
from fasttune.app.models import Sampling
from fasttune.comparison import compare
from fasttune.errors import FasttuneError
from fasttune.task import Task

NO_TASK = "none"
NO_COMPARISON = "none"


def build(catalog: Catalog) -> gr.Blocks:
    """The app for `catalog`'s models and reports."""
    with gr.Blocks(title="fasttune", analytics_enabled=False) as app:
        gr.Markdown("## fasttune: look at the model")
        with gr.Tab("Chat", id="chat"):
            chat_page(app, catalog)
        with gr.Tab("Side by side", id="side-by-side"):
            side_by_side_page(catalog)
        with gr.Tab("Report", id="report"):
            report_page(catalog)
    return app


def sampling_controls() -> list[gr.components.Component]:
    """Temperature, top-p, max new tokens and seed, in the order `Sampling` takes them."""
    with gr.Accordion("Sampling", open=False):
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0: greedy)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
            max_new_tokens = gr.Slider(1, 1024, value=128, step=1, label="max new tokens")
            seed = gr.Number(value=None, precision=0, label="seed (empty: none)")
    return [temperature, top_p, max_new_tokens, seed]


def _sampling(temperature, top_p, max_new_tokens, seed) -> Sampling:
    return Sampling(float(temperature), float(top_p), int(max_new_tokens), None if seed is None else int(seed))


def chat_page(app: gr.Blocks, catalog: Catalog) -> None:
    model = gr.Dropdown(catalog.model_labels, value=catalog.model_labels[0], label="model")
    status = gr.Markdown(elem_id="chat-status")
    with gr.Accordion("Chat template (saved with the model)", open=False):
        template = gr.Code(label="chat template", language="jinja2", interactive=False)
    chatbot = gr.Chatbot(label="chat", height=360, elem_id="chat-log")
    history = gr.State([])
    with gr.Row():
        message = gr.Textbox(placeholder="Message", show_label=False, scale=5, elem_id="chat-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("Clear", scale=1)
    sampling = sampling_controls()

    def show_model(label: str):
        started = time.perf_counter()
        loaded = catalog.model(label)
        return f"{label}: ready in {time.perf_counter() - started:.1f} s", loaded.chat_template

    def respond(text: str, turns: list[dict], label: str, *settings) -> Iterator:
        if not text.strip():
            yield turns, turns, text, gr.update()
            return
        started = time.perf_counter()
        turns = [*turns, {"role": "user", "content": text}]
        shown = [*turns, {"role": "assistant", "content": ""}]
        yield shown, turns, "", f"{label}: replying"
        for piece in catalog.model(label).stream(turns, _sampling(*settings)):
            shown[-1]["content"] += piece
            yield shown, turns, "", gr.update()
        yield shown, shown, "", f"{label}: replied in {time.perf_counter() - started:.1f} s"

    app.load(show_model, model, [status, template])
    model.change(show_model, model, [status, template]).then(lambda: ([], []), None, [chatbot, history])
    for trigger in (send.click, message.submit):
        trigger(respond, [message, history, model, *sampling], [chatbot, history, message, status])
    clear.click(lambda: ([], []), None, [chatbot, history])


def side_by_side_page(catalog: Catalog) -> None:
    labels = catalog.model_labels
    with gr.Row():
        task = gr.Dropdown([NO_TASK, *tasks.list()], value=NO_TASK, label="task (parses the answers)")
        split = gr.Textbox(value="test", label="split")
        index = gr.Number(value=0, precision=0, minimum=0, label="example number")
    example = gr.State(None)
    prompt = gr.Textbox(label="prompt", lines=3, elem_id="side-prompt")
    gold = gr.Markdown()
    run = gr.Button("Ask both", variant="primary", elem_id="side-run")
    columns = []
    with gr.Row():
        for side, default in (("left", labels[0]), ("right", labels[min(1, len(labels) - 1)])):
            with gr.Column():
                model = gr.Dropdown(labels, value=default, label=f"{side} model")
                answer = gr.Textbox(label="answer", lines=6, interactive=False, elem_id=f"side-{side}-answer")
                parsed = gr.Markdown(elem_id=f"side-{side}-parsed")
                columns.append((model, answer, parsed))
    sampling = sampling_controls()

    def pick_example(name: str, split_name: str, number) -> tuple:
        if name == NO_TASK:
            return None, gr.update(), ""
        chosen = catalog.task(name)
        examples = chosen.load(split_name)
        if not 0 <= int(number) < len(examples):
            raise FasttuneError(f"Task '{name}' split '{split_name}' has {len(examples)} examples "
                                f"(example number={int(number)}). Pick one from 0 to {len(examples) - 1}.")
        row = examples[int(number)]
        return ((chosen, row), chosen.format(row).prompt[-1]["content"],
                f"example id {row['id']}, gold answer: **{chosen.answer(row)}**")

    def ask(text: str, picked, left: str, right: str, *settings) -> Iterator:
        messages = [{"role": "user", "content": text}]
        if picked is not None:
            chosen, row = picked
            messages = [*chosen.format(row).prompt[:-1], *messages]
        replies, notes = ["", ""], ["", ""]
        for side, label in enumerate((left, right)):
            for piece in catalog.model(label).stream(messages, _sampling(*settings)):
                replies[side] += piece
                yield *replies, *notes
            if picked is not None:
                notes[side] = _parsed_note(*picked, replies[side])
            yield *replies, *notes

    for trigger in (task.change, split.submit, index.change):
        trigger(pick_example, [task, split, index], [example, prompt, gold])
    outputs = [columns[0][1], columns[1][1], columns[0][2], columns[1][2]]
    run.click(ask, [prompt, example, columns[0][0], columns[1][0], *sampling], outputs)


def _parsed_note(task: Task, example: dict, reply: str) -> str:
    parsed, gold = task.parse_answer(reply, example), task.answer(example)
    if parsed is None:
        return f"parsed: no answer found (unparsed) | gold: **{gold}**"
    verdict = "right" if task.score(parsed, gold)[task.primary_metric] >= 1 else "wrong"
    return f"parsed: **{parsed}** | gold: **{gold}** | {verdict}"


def report_page(catalog: Catalog) -> None:
    labels = list(catalog.reports)
    with gr.Row():
        first = gr.Dropdown(labels, value=labels[0] if labels else None, label="report", elem_id="report-pick")
        second = gr.Dropdown([NO_COMPARISON, *labels], value=NO_COMPARISON, label="compare with (optional)")
        open_button = gr.Button("Open", variant="primary", elem_id="report-open")
    heading = gr.Markdown(elem_id="report-heading")
    metrics = gr.Dataframe(label="metrics (percent, 95% bootstrap interval)", interactive=False)
    with gr.Row():
        distribution = gr.Dataframe(label="answer distribution", interactive=False)
        categories = gr.Dataframe(label="per category", interactive=False)
    gallery = gr.Gallery(label="plots saved with the report", columns=3, height=320, object_fit="contain",
                         preview=False, interactive=False)
    shown = gr.Radio(list(report_view.OUTCOMES), value="all", label="predictions", elem_id="report-filter")
    note = gr.Markdown()
    predictions = gr.Dataframe(label="predictions", interactive=False, wrap=True, elem_id="report-predictions")
    opened = gr.State(None)

    def open_report(label: str, other: str):
        if not label:
            raise FasttuneError("No report to open (report=None). Start the app with --reports, or a run folder.")
        report = catalog.report(label)
        comparison = None if other == NO_COMPARISON else compare(report, catalog.report(other))
        reports = [report] if comparison is None else [comparison.a, comparison.b]
        names = [report.model] if comparison is None else list(comparison.labels)
        prompt_of, prompt_note = report_view.prompts(report, catalog.task(report.task["name"]))
        paths = [catalog.reports[label]] + ([] if comparison is None else [catalog.reports[other]])
        filters = [*report_view.OUTCOMES, *(["flipped"] if comparison else [])]
        return ((report, comparison, prompt_of), report_view.summary(report, comparison),
                report_view.metrics_table(report, comparison), report_view.distribution_table(reports, names),
                report_view.category_table(reports, names), [str(png) for png in report_view.plots(paths)],
                gr.update(choices=filters, value="all"), prompt_note,
                report_view.predictions_table(report, "all", prompt_of, comparison))

    def filter_predictions(state, which: str):
        if state is None:
            return gr.update()
        report, comparison, prompt_of = state
        return report_view.predictions_table(report, which, prompt_of, comparison)

    open_button.click(open_report, [first, second],
                      [opened, heading, metrics, distribution, categories, gallery, shown, note, predictions])
    shown.change(filter_predictions, [opened, shown], predictions)
