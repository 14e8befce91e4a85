"""A whole conversation as training tokens: the chat template's rendering, with the loss on assistant turns only.

Each trained assistant turn is found token by token. The template renders the conversation up to that turn with the
generation prompt (what the model is given) and with the turn itself (what it should write); both renderings must
be token prefixes of the whole conversation's rendering, and the second must hold the turn's content followed by the
end-of-turn token. The loss covers the tokens between the two: the reply and its end-of-turn token, exactly what the
model generates at inference. A template whose renderings do not nest this way cannot mark where assistant turns
start and end, and is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fasttune.errors import FasttuneError
from fasttune.task import Messages

TrainOn = Literal["all", "last"]
"""Which assistant turns carry the loss: every one, or the last one only."""
ROLES = ("system", "user", "assistant")
IGNORED = -100
"""The label of a token without loss (PyTorch's cross-entropy ignore_index)."""


@dataclass(frozen=True)
class EncodedChat:
    """A tokenized conversation: its ids, and 1 where a token is part of a trained assistant turn."""

    input_ids: list[int]
    completion_mask: list[int]

    @property
    def labels(self) -> list[int]:
        """The ids where the loss is taken, IGNORED elsewhere."""
        return [token if trained else IGNORED for token, trained in zip(self.input_ids, self.completion_mask)]


def conversation_problem(messages: Messages) -> tuple[int | None, str] | None:
    """What is wrong with a conversation to train on, as (message index or None, problem), or None.

    A conversation is an optional system message, then user and assistant turns in turn, ending on a non-empty
    assistant turn.
    """
    if not isinstance(messages, list) or not messages:
        return None, "the conversation holds no messages"
    expected = "user"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return index, "a message is an object with a role and text content"
        role = message.get("role")
        if role not in ROLES:
            return index, f"role {role!r} is not one of {', '.join(ROLES)}"
        if role == "system":
            if index:
                return index, "a system message may only open the conversation"
            continue
        if role != expected:
            return index, (f"two {role} turns in a row (turns alternate user, assistant, user, ...)" if index and
                           messages[index - 1]["role"] == role else f"expected a {expected} turn, got {role}")
        if not message["content"].strip():
            return index, f"the {role} turn is empty ({message['content']!r}); give it text or leave the row out"
        expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] != "assistant":
        return len(messages) - 1, ("the conversation ends on a user turn; it must end on the assistant reply to "
                                   "train on")
    return None


def encode(tokenizer, messages: Messages, end_of_turn: str, train_on: TrainOn = "all", where: str = "a conversation",
           template: str | None = None) -> EncodedChat:
    """Token ids of `messages` rendered by the tokenizer's chat template, with the loss on its assistant turns
    (`train_on`: all of them, or the last one). `end_of_turn` is the token that closes an assistant turn.

    `where` names the conversation and `template` the chat template in errors (default: the tokenizer's own).
    """
    found = conversation_problem(messages)
    if found:
        index, text = found
        raise FasttuneError(f"{where}{'' if index is None else f', message {index}'}: {text}.")
    if train_on not in ("all", "last"):
        raise FasttuneError(f"train_on must be 'all' or 'last' (train_on={train_on!r}).")
    template = template or f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}"
    render = _renderer(tokenizer, where, template)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    whole = ids(render(messages, False))
    mask = [0] * len(whole)
    turns = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
    for index in turns if train_on == "all" else turns[-1:]:
        start, end = _turn_span(messages, index, render, ids, whole, end_of_turn, template, where)
        mask[start:end] = [1] * (end - start)
    return EncodedChat(whole, mask)


def _renderer(tokenizer, where: str, template: str) -> Callable[[Messages, bool], str]:
    if not getattr(tokenizer, "chat_template", None):
        raise FasttuneError(f"{where}: {template} is missing: the tokenizer has no chat template to render "
                            "conversations with. Load the model with a chat template.")

    def render(messages: Messages, generation_prompt: bool) -> str:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as error:  # jinja raises many types, e.g. a template's own raise_exception
            raise FasttuneError(f"{where}: {template} cannot render the conversation ({type(error).__name__}: "
                                f"{error}). Fix the messages, or use a template that accepts them.") from None

    return render


def _turn_span(messages: Messages, index: int, render, ids, whole: list[int], end_of_turn: str, template: str,
               where: str) -> tuple[int, int]:
    """[start, end) of assistant turn `index`'s reply and end-of-turn token within `whole`."""
    prompt_text, turn_text = render(messages[:index], True), render(messages[: index + 1], False)
    refuse = _refusal(template, where, index)
    if not turn_text.startswith(prompt_text):
        raise refuse("rendering the turn does not extend the prompt that asks for it (the generation prompt differs "
                     "from how an assistant turn starts)")
    reply = turn_text[len(prompt_text):]
    content = messages[index]["content"]
    # templates write the text as given or trimmed (llama-3's `| trim`); the end-of-turn token must follow it
    ends = [reply.find(text) + len(text) for text in dict.fromkeys((content, content.strip())) if text in reply]
    if not ends:
        raise refuse("the rendered turn does not hold the assistant's text")
    closed = next((end for end in ends if reply[end:].startswith(end_of_turn)), None)
    if closed is None:
        raise refuse(f"the assistant's text is not followed by the end-of-turn token {end_of_turn!r} (it is followed "
                     f"by {reply[ends[0]:ends[0] + 20]!r})")
    prompt, turn, through_end = ids(prompt_text), ids(turn_text), ids(prompt_text + reply[: closed + len(end_of_turn)])
    for shorter, longer, what in ((prompt, through_end, "the prompt's tokens are not a prefix of the turn's"),
                                  (through_end, turn, "the reply's tokens change when the turn is rendered whole"),
                                  (turn, whole, "the turn's tokens change when later turns follow it")):
        if longer[: len(shorter)] != shorter:
            raise refuse(what)
    return len(prompt), len(through_end)


def _refusal(template: str, where: str, index: int) -> Callable[[str], FasttuneError]:
    def refuse(why: str) -> FasttuneError:
        return FasttuneError(f"{where}, message {index}: {template} cannot mark where assistant turns start and end: "
                             f"{why}. Train with a chat template whose assistant turns render the same in every "
                             "context (e.g. chatml).")

    return refuse
