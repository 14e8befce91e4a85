"""From task examples to token ids: chat-rendered prompts, completions closed by the end-of-turn token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fasttune import chat_templates, conversation
from fasttune.errors import FasttuneError
from fasttune.task import Example, Messages, Sample, Task


def render_prompt(tokenizer, messages: Messages, where: str = "a prompt") -> str:
    """The chat-template text of `messages`, ending where the assistant's reply begins.

    `where` names the example in the error raised when the template cannot render the messages.
    """
    chat_templates.require(tokenizer)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises many types; name the example and field that failed
        raise FasttuneError(f"{where}: the chat template cannot render field 'prompt' ({type(error).__name__}: "
                            f"{error}) (prompt={messages!r}). Make format() return a list of "
                            "{'role': str, 'content': str} messages.") from None


def prompt_ids(tokenizer, messages: Messages, where: str = "a prompt") -> list[int]:
    """Token ids of the rendered prompt (the template already holds any special tokens)."""
    return tokenizer(render_prompt(tokenizer, messages, where), add_special_tokens=False)["input_ids"]


def example_prompt_ids(task: Task, example: Example, tokenizer) -> list[int]:
    """Token ids of an example's formatted prompt; errors name the task, its data and the example."""
    return prompt_ids(tokenizer, task.format(example).prompt, where_example(task, example))


def text_after_assistant_turn(render: Callable[[Messages], str], where: str = "the chat template") -> str:
    """What a chat template (`render`: messages -> text) writes after an assistant message: its end of turn first.

    `where` names the template (e.g. its model folder) in the error raised when it never writes that message."""
    marker = "\u2063fasttune\u2063"
    rendered = render([{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}])
    if marker not in rendered:
        raise FasttuneError(f"{where} does not render the assistant's message (rendered={rendered[-200:]!r}), so "
                            "fasttune can neither train nor score replies with it. Use a model whose chat template "
                            "writes assistant turns, or set tokenizer.chat_template to one that does.")
    return rendered.split(marker, 1)[1]


def where_example(task: Task, example: Example) -> str:
    """How error messages name one example: task, data folder and id."""
    source = f" ({task.data_dir})" if task.data_dir is not None else ""
    return f"Task '{task.name}'{source}, example id={example['id']}"


def completion_ids(tokenizer, completion: str, end_of_turn: str) -> list[int]:
    """Token ids of an assistant reply followed by the template's end-of-turn token."""
    return tokenizer(completion + end_of_turn, add_special_tokens=False)["input_ids"]


@dataclass
class Encoded:
    """Training rows for TRL (input_ids + completion_mask), their example ids, and what was left out."""

    rows: list[dict[str, list[int]]]
    ids: list[str]
    too_long: list[str]
    tokens: int


def encode_for_training(task: Task, examples: list[Example], tokenizer, end_of_turn: str,
                        max_seq_length: int) -> Encoded:
    """Tokenize examples for completion-only SFT; rows over `max_seq_length` are set aside and listed. An example
    with a whole conversation (`task.conversation`) is trained on its assistant turns."""
    def tokens(example: Example) -> tuple[list[int], list[int]]:
        messages = task.conversation(example)
        if messages is None:
            return _sample_tokens(task, example, task.format(example), tokenizer, end_of_turn)
        chat = conversation.encode(tokenizer, messages, end_of_turn, task.train_on, where_example(task, example))
        return chat.input_ids, chat.completion_mask

    return _collect(((example, tokens(example)) for example in examples), max_seq_length)


def encode_samples(task: Task, samples: list[tuple[Example, Sample]], tokenizer, end_of_turn: str,
                   max_seq_length: int) -> Encoded:
    """Tokenize (example, prompt + completion) pairs for completion-only SFT; over-long rows are set aside."""
    return _collect(((example, _sample_tokens(task, example, sample, tokenizer, end_of_turn))
                     for example, sample in samples), max_seq_length)


def _sample_tokens(task: Task, example: Example, sample: Sample, tokenizer, end_of_turn: str
                   ) -> tuple[list[int], list[int]]:
    """(input ids, completion mask) of a prompt and its completion closed by the end-of-turn token."""
    where = where_example(task, example)
    if not isinstance(sample.completion, str) or not sample.completion.strip():
        raise FasttuneError(f"{where}: field 'completion' is empty (completion={sample.completion!r}). "
                            "Give every training example a gold answer, or leave it out of the split.")
    prompt = prompt_ids(tokenizer, sample.prompt, where)
    completion = completion_ids(tokenizer, sample.completion, end_of_turn)
    return prompt + completion, [0] * len(prompt) + [1] * len(completion)


def _collect(encoded, max_seq_length: int) -> Encoded:
    """Training rows from (example, (input ids, completion mask)) pairs; rows over `max_seq_length` are listed."""
    rows, ids, too_long, tokens = [], [], [], 0
    for example, (input_ids, completion_mask) in encoded:
        if len(input_ids) > max_seq_length:
            too_long.append(str(example["id"]))
            continue
        rows.append({"input_ids": input_ids, "completion_mask": completion_mask})
        ids.append(str(example["id"]))
        tokens += len(input_ids)
    return Encoded(rows, ids, too_long, tokens)
