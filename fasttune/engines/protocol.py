"""The engine protocol: what evaluation, sampling and export checks ask of a model that scores and generates."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from fasttune.task import Messages


class Completion(NamedTuple):
    """One generated reply, whether it stopped at max_new_tokens without ending its turn, and its token ids
    (without the end-of-turn token)."""

    text: str
    truncated: bool
    tokens: list[int]


@runtime_checkable
class Engine(Protocol):
    """A model that renders chat prompts, scores choices and generates replies that stop at the end of a turn."""

    name: str
    """What reports call the model."""
    precision: str
    """How its weights are stored, as `field=value` (named when its scores are not finite)."""

    def prompt_ids(self, messages: Messages, where: str = "a prompt") -> list[int]:
        """Token ids of `messages` rendered by the model's own chat template, up to the assistant's reply;
        `where` names the example in errors."""
        ...

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[str]], *, batch_tokens: int = 16384,
                        description: str = "scoring") -> list[list[float]]:
        """For each prompt, the summed log-probability of each of its choices followed by the end-of-turn token."""
        ...

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, batch_size: int = 16, num_samples: int = 1,
                 temperature: float = 0.0, seed: int | None = None,
                 description: str = "generating") -> list[list[Completion]]:
        """`num_samples` replies to each prompt, stopped at the end-of-turn token; temperature 0 decodes greedily,
        above 0 samples (from `seed` when given)."""
        ...
