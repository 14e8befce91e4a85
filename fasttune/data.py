"""From task examples to token ids: chat-rendered prompts, completions closed by the end-of-turn token."""

from __future__ import annotations

from dataclasses import dataclass

from fasttune.errors import FasttuneError
from fasttune.task import Example, Messages, Task


def render_prompt(tokenizer, messages: Messages) -> str:
    """The chat-template text of `messages`, ending where the assistant's reply begins."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises many types; name the prompt that failed
        raise FasttuneError(f"The chat template cannot render this prompt ({error}): {messages!r}.") from error


def prompt_ids(tokenizer, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt (the template already holds any special tokens)."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


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
    """Tokenize examples for completion-only SFT; rows over `max_seq_length` are set aside and listed."""
    rows, ids, too_long, tokens = [], [], [], 0
    for example in examples:
        sample = task.format(example)
        if not sample.completion.strip():
            raise FasttuneError(f"Task '{task.name}', example id={example['id']}: empty completion.")
        prompt = prompt_ids(tokenizer, sample.prompt)
        completion = completion_ids(tokenizer, sample.completion, end_of_turn)
        if len(prompt) + len(completion) > max_seq_length:
            too_long.append(str(example["id"]))
            continue
        rows.append({"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)})
        ids.append(str(example["id"]))
        tokens += len(prompt) + len(completion)
    return Encoded(rows, ids, too_long, tokens)
