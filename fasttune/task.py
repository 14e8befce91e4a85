"""The task contract: data plus small functions (format, parse_answer, score, metric)."""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from fasttune.errors import FasttuneError, FasttuneWarning
from fasttune.reading import first_repeat

Example = dict[str, Any]
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sample:
    """One formatted example: the chat prompt and the assistant completion that answers it."""

    prompt: Messages
    completion: str


class Task:
    """Base class of every task.

    A subclass sets `name`, `VERSION`, `splits` and `kind`, and implements `read` (or `load`), `format`, `answer`
    and `parse_answer(text, example)`. Tasks of kind "choices" also implement `choices`; tasks with categories
    implement `categories`. `read` goes through `fasttune.reading`, declaring the fields of its rows.
    `parse_answer` never raises on model output: it returns None, which scores as wrong and is counted.
    Evaluation keeps three steps apart: `parse_answer` (extraction), `score` (one example), `aggregate` (a split).
    """

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    kind: ClassVar[Literal["choices", "generation"]] = "generation"
    """How answers are produced: "choices" scores the log-likelihood of each of `choices(example)`, "generation"
    parses generated text (lm-eval's output_type)."""
    primary_metric: ClassVar[str] = "accuracy"
    max_new_tokens: ClassVar[int] = 16
    hub_id: ClassVar[str | None] = None
    data_folder: ClassVar[str | None] = None
    """Folder under $FASTTUNE_DATA (or a bench's --data root) holding the task's files; default: the task's name."""
    test_split: ClassVar[str | None] = "test"
    """The held-out split: training on it, or on rows that repeat it, is refused."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parameters = inspect.signature(cls.parse_answer).parameters.values()
        problems = [f"kind is {cls.kind!r}, expected 'choices' or 'generation'"] if cls.kind not in (
            "choices", "generation") else []
        if len(parameters) < 3 and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
            problems.append("parse_answer takes no example; define parse_answer(self, text, example)")
        if "parse" in vars(cls):
            problems.append("it defines parse(text, example); the one parse hook is parse_answer(text, example)")
        if cls.kind == "choices" and cls.choices is Task.choices:
            problems.append("kind is 'choices' but it defines no choices(example)")
        if cls.kind == "generation" and cls.choices is not Task.choices:
            problems.append("it defines choices(example) but kind is 'generation'; set kind = 'choices'")
        if problems:
            raise FasttuneError(f"Task class {cls.__name__}: {'; '.join(problems)}.")

    def __init__(self, data_dir: str | os.PathLike | None = None):
        self.data_dir = Path(data_dir) if data_dir is not None else _default_data_dir(self.data_folder or self.name)

    # --- data -------------------------------------------------------------------------------------
    def load(self, split: str) -> list[Example]:
        """Return the examples of `split`, each a dict with a unique "id"."""
        if split not in self.splits:
            raise FasttuneError(f"Task '{self.name}' has no split '{split}' (split={split!r}). "
                                f"Available: {', '.join(self.splits)}.")
        if self.data_dir is not None and self.data_dir.exists():
            examples = self.read(self.data_dir, split)
        elif self.hub_id is not None and os.environ.get("HF_HUB_OFFLINE") != "1":
            examples = self._read_hub_or_explain(split)
        else:
            raise FasttuneError(
                f"No data for task '{self.name}' (data_dir={self.data_dir}). Pass data_dir= pointing at the task's "
                f"files (e.g. ../shared/data/{self.name}) or set FASTTUNE_DATA to a folder holding '{self.name}/'"
                + (f"; hub dataset '{self.hub_id}' needs network access and HF_HUB_OFFLINE unset." if self.hub_id
                   else "."))
        if not examples:
            raise FasttuneError(f"Task '{self.name}': split '{split}' is empty in {self.data_dir}.")
        _check_unique_ids(examples, self.name, split, self.data_dir)
        return examples

    def read(self, data_dir: Path, split: str) -> list[Example]:
        """Read `split` from local files under `data_dir`."""
        raise NotImplementedError(f"Task '{self.name}' does not read local files.")

    def _read_hub_or_explain(self, split: str) -> list[Example]:
        """`read_hub`, with a network failure (after the hub client's own retries) turned into one FasttuneError."""
        import httpx

        try:
            return self.read_hub(split)
        except (OSError, httpx.HTTPError) as error:  # ConnectionError and requests' errors are OSErrors
            raise FasttuneError(
                f"Task '{self.name}' could not read hub dataset '{self.hub_id}' (split={split!r}; "
                f"{type(error).__name__}: {str(error)[:200]}) and has no local data (data_dir={self.data_dir}). "
                f"Download the dataset where there is network and pass data_dir= pointing at it (or set "
                f"FASTTUNE_DATA to a folder holding '{self.data_folder or self.name}/'); set HF_HUB_OFFLINE=1 to "
                "fail at once instead of trying the network.") from error

    def read_hub(self, split: str) -> list[Example]:
        """Read `split` from the hub dataset `hub_id` (needs network)."""
        raise NotImplementedError(f"Task '{self.name}' has no hub reader.")

    # --- the task's functions ---------------------------------------------------------------------
    def format(self, example: Example) -> Sample:
        """The chat prompt and gold completion for one example."""
        raise NotImplementedError

    def conversation(self, example: Example) -> Messages | None:
        """The whole conversation of a multi-turn example, trained with the loss on its assistant turns (all, or the
        last when `train_on` is "last"; see fasttune.conversation); None (the default) trains on `format`'s prompt
        and completion."""
        return None

    train_on: Literal["all", "last"] = "all"
    """Which assistant turns of `conversation(example)` carry the loss."""

    def answer(self, example: Example) -> Any:
        """The gold answer of an example, in the form `parse_answer` returns."""
        raise NotImplementedError

    def parse_answer(self, text: str, example: Example) -> Any | None:
        """The answer model output `text` states for `example` (most tasks ignore the example), or None."""
        raise NotImplementedError

    def choices(self, example: Example) -> list[str] | None:
        """Candidate completions for log-likelihood scoring (tasks of kind "choices"); None for the others."""
        return None

    def has_closed_answer(self, example: Example) -> bool:
        """Whether `example`'s answer is one of a fixed set, so the report shows its predicted-vs-gold distribution."""
        return self.choices(example) is not None

    def answer_label(self, answer: Any, example: Example) -> str:
        """How an answer is counted in the predicted-vs-gold distribution (e.g. the option letter)."""
        return str(answer)

    def categories(self, example: Example) -> list[str]:
        """Categories an example belongs to, for per-category scores."""
        return []

    def document(self, example: Example) -> str:
        """Raw text of an example for continued pretraining; the default joins the prompt and the completion."""
        sample = self.format(example)
        return "\n\n".join([message["content"] for message in sample.prompt] + [sample.completion])

    def score(self, prediction: Any | None, reference: Any) -> dict[str, float]:
        """Per-example scores; the default is exact match of the parsed answer."""
        return {"accuracy": float(prediction is not None and prediction == reference)}

    def aggregate(self, scores: list[dict[str, float]], predictions: list[Any | None],
                  references: list[Any]) -> dict[str, float]:
        """Split-level metrics from the per-example `scores` (and the answers they came from, for corpus-level
        metrics such as BLEU); the default is the mean of each score. Bootstrap intervals re-run it on resamples."""
        return {key: sum(row[key] for row in scores) / len(scores) for key in scores[0]}

    def metric(self, predictions: list[Any | None], references: list[Any]) -> dict[str, float]:
        """Scores over a whole split: `score` each example, then `aggregate`."""
        if not predictions:
            return {}
        scores = [self.score(p, r) for p, r in zip(predictions, references, strict=True)]
        return self.aggregate(scores, predictions, references)

    def text(self, example: Example) -> str:
        """The example's input text, compared (normalised) when checking splits for overlap."""
        return "\n".join(message["content"] for message in self.format(example).prompt)

    def check(self, example: Example) -> None:
        """Fail when the gold completion of `example` does not parse back to its gold answer (or, when the gold
        answer is a tuple of references, to one of them)."""
        parsed, gold = self.parse_answer(self.format(example).completion, example), self.answer(example)
        if parsed != gold and not (isinstance(gold, tuple) and parsed in gold):
            raise FasttuneError(f"Task '{self.name}' can never be right: parse_answer(gold completion) gave "
                                f"{parsed!r}, expected {self.answer(example)!r} (example id={example['id']}).")

    def describe(self) -> dict[str, Any]:
        """Name, version and class of the task, saved beside adapters and reports."""
        return {"name": self.name, "version": self.VERSION, "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def constructor_arguments(self) -> dict[str, Any]:
        """The constructor's arguments, read back from the attributes of the same names (paths as text), so that
        `fasttune.tasks.get(self.name, **options)` builds this task again; a run's config.json records them. A task
        that stores an argument under another name overrides this."""
        options, unreadable = {}, []
        for parameter in inspect.signature(type(self)).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if not hasattr(self, parameter.name):
                unreadable.append(parameter.name)
                continue
            value = getattr(self, parameter.name)
            options[parameter.name] = str(value) if isinstance(value, Path) else value
        if unreadable:
            warnings.warn(f"fasttune: task '{self.name}' keeps constructor arguments {', '.join(unreadable)} under "
                          "other names, so a run's config.json does not record them. Override "
                          "Task.constructor_arguments() to return them.", FasttuneWarning, stacklevel=2)
        return options


def _default_data_dir(name: str) -> Path | None:
    root = os.environ.get("FASTTUNE_DATA")
    return Path(root) / name if root else None


def _check_unique_ids(examples: list[Example], task: str, split: str, data_dir: Path | None) -> None:
    where = f"Task '{task}', split '{split}'" + (f" ({data_dir})" if data_dir is not None else "")
    for row, example in enumerate(examples, start=1):
        if "id" not in example:
            raise FasttuneError(f"{where}, row {row}: missing field 'id'. Give every example a unique 'id'.")
        if not isinstance(example["id"], (str, int)):
            raise FasttuneError(f"{where}, row {row}: field 'id' should be str or int, got "
                                f"{type(example['id']).__name__} (id={example['id']!r}).")
    repeat = first_repeat(example["id"] for example in examples)
    if repeat:
        first, second = repeat
        raise FasttuneError(f"{where}: duplicate id in rows {first + 1} and {second + 1} "
                            f"(id={examples[second]['id']!r}). Ids must be unique within a split.")

