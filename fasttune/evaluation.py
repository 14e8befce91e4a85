"""Evaluation: batched generation or log-likelihood scoring, then parse -> score -> aggregate into a Report."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from scipy import stats

from fasttune import backend, data, guards, hooks
from fasttune.backend import Model
from fasttune.errors import FasttuneError, not_positive, raise_problems
from fasttune.progress import progress_bar
from fasttune.task import Task


@dataclass
class EvalConfig:
    """Settings of one evaluation."""

    split: str = "test"
    """Task split to score."""
    limit: int | None = None
    """Score only the first `limit` examples of the split."""
    engine: Literal["auto", "loglik", "generate"] = "auto"
    """loglik: pick the most likely of the task's choices; generate: greedy decoding; auto: loglik when possible."""
    batch_size: int = 16
    """Sequences per forward pass."""
    max_new_tokens: int | None = None
    """Generation length (default: the task's)."""
    bootstrap_resamples: int = 1000
    """Resamples for the 95% bootstrap intervals."""
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self):
        problems = not_positive(self, ("limit", "batch_size", "max_new_tokens", "bootstrap_resamples"))
        if self.engine not in ("auto", "loglik", "generate"):
            problems.append(f"engine must be auto, loglik or generate (engine={self.engine!r})")
        raise_problems(problems)


@dataclass
class Report:
    """Everything one evaluation measured. `records` holds one entry per example."""

    task: dict
    model: str
    split: str
    engine: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    parse_failures: int
    predicted: dict[str, int]
    gold: dict[str, int]
    per_category: dict[str, dict[str, float]]
    seconds: float
    records: list[dict] = field(repr=False)
    empty_outputs: int | None = None
    """Generation only: replies that were empty after stripping."""
    truncated_outputs: int | None = None
    """Generation only: replies cut off at max_new_tokens before the end-of-turn token."""

    @property
    def primary(self) -> str:
        return self.task.get("primary_metric", next(iter(self.metrics)))

    def save(self, folder: str | Path, name: str = "eval") -> Path:
        """Write `<name>.json` (summary) and `<name>.predictions.jsonl` (every example) to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = {key: value for key, value in asdict(self).items() if key != "records"}
        (folder / f"{name}.json").write_text(json.dumps(summary, indent=2))
        with open(folder / f"{name}.predictions.jsonl", "w") as handle:
            for record in self.records:
                handle.write(json.dumps(record, default=str) + "\n")
        return folder / f"{name}.json"

    def __rich__(self):
        from fasttune.tables import report_table

        return report_table(self)

    def __str__(self) -> str:
        from fasttune.tables import render

        return render(self.__rich__())


@hooks.library_scope()
def evaluate(model: Model | str | Path, task: Task, split: str = "test", *, limit: int | None = None,
             config: EvalConfig | None = None) -> Report:
    """Score `model` (or a GGUF file, run by llama.cpp) on a task split; parse failures count as wrong."""
    config = config or EvalConfig(split=split, limit=limit)
    if not isinstance(model, Model):
        from fasttune.gguf_engine import GgufModel

        model = GgufModel.open(model)
    examples = task.load(config.split)[: config.limit]
    has_choices = task.kind == "choices"
    use_loglik = config.engine == "loglik" or (config.engine == "auto" and has_choices)
    if use_loglik and not has_choices:
        raise FasttuneError(f"Task '{task.name}' has no choices, so it cannot be scored by log-likelihood "
                            "(engine='loglik'). Use engine='generate'.")
    engine = "loglik" if use_loglik else "generate"
    max_new_tokens = config.max_new_tokens or task.max_new_tokens
    started, truncated = time.perf_counter(), None
    if not isinstance(model, Model):  # a GgufModel
        outputs = (model.loglik_choices(task, examples) if use_loglik else
                   model.generate(task, examples, max_new_tokens))
    else:
        backend.for_inference(model)
        with torch.inference_mode():
            if use_loglik:
                outputs = _loglik_choices(model, task, examples, config.batch_size)
            else:
                prompts = [data.example_prompt_ids(task, example, model.tokenizer) for example in examples]
                completions = [samples[0] for samples in generate(
                    model, prompts, max_new_tokens=max_new_tokens, batch_size=config.batch_size,
                    description=f"generating {task.name}")]
                outputs = [completion.text for completion in completions]
                truncated = [completion.truncated for completion in completions]
    return score_outputs(task, examples, outputs, model_name=model.name, engine=engine,
                         seconds=time.perf_counter() - started, config=config, truncated=truncated)


def _loglik_choices(model: Model, task: Task, examples: list[dict], batch_size: int) -> list[str]:
    """For each example, the choice whose tokens (plus end of turn) have the highest summed log-probability."""
    tokenizer, end = model.tokenizer, model.end_of_turn
    choices = [task.choices(example) for example in examples]
    sequences = []  # (example index, choice index, prompt ids, continuation ids)
    for index, example in enumerate(examples):
        prompt = data.example_prompt_ids(task, example, tokenizer)
        for choice_index, choice in enumerate(choices[index]):
            sequences.append((index, choice_index, prompt, data.completion_ids(tokenizer, choice, end)))
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][2]) - len(sequences[i][3]))
    scores = [[float("-inf")] * len(options) for options in choices]
    pad_id = tokenizer.pad_token_id
    with progress_bar(f"scoring {task.name}", len(order)) as advance:
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start:start + batch_size]]
            width = max(len(p) + len(c) for _, _, p, c in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, _, prompt, continuation) in enumerate(batch):
                ids[row, : len(prompt) + len(continuation)] = torch.tensor(prompt + continuation)
                mask[row, : len(prompt) + len(continuation)] = 1
            with _out_of_memory_advice(len(batch), width):
                logits = model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            for (index, choice_index, _, _), score in zip(batch, _continuation_logprobs(logits, batch), strict=True):
                scores[index][choice_index] = score
            advance(len(batch))
    broken = [example["id"] for example, s in zip(examples, scores, strict=True) if not np.isfinite(s).all()]
    if broken:  # argmax over NaN would silently pick the first choice
        raise FasttuneError(
            f"The model gives non-finite log-likelihoods for {len(broken)} of {len(examples)} examples "
            f"(ids={', '.join(map(str, broken[:10]))}{' ...' if len(broken) > 10 else ''}). Its weights hold NaN/inf "
            f"or its dtype overflows (dtype={str(model.model.dtype).removeprefix('torch.')}): retrain with a lower "
            "learning_rate, or load in bfloat16/float32.")
    return [options[int(np.argmax(s))] for options, s in zip(choices, scores, strict=True)]


def _continuation_logprobs(logits: torch.Tensor, batch: list[tuple]) -> list[float]:
    """Summed log-probability of each row's continuation, gathered for the whole batch at once (one device sync)."""
    rows, positions, targets = [], [], []
    for row, (_, _, prompt, continuation) in enumerate(batch):
        rows += [row] * len(continuation)
        positions += range(len(prompt) - 1, len(prompt) + len(continuation) - 1)
        targets += continuation
    rows, positions, targets = (torch.tensor(values, device=logits.device) for values in (rows, positions, targets))
    log_probs = torch.log_softmax(logits[rows, positions].float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    return torch.zeros(len(batch), device=logits.device).index_add_(0, rows, log_probs).tolist()


def generate(model: Model, prompts: list[list[int]], *, max_new_tokens: int, batch_size: int = 16,
             num_samples: int = 1, temperature: float = 0.0, description: str = "generating") -> list[list[Completion]]:
    """`num_samples` completions of each tokenized chat prompt, batched with left padding, stopped at the end-of-turn
    token.

    temperature 0 decodes greedily; above 0 it samples. The caller sets inference or training mode.
    """
    tokenizer = model.tokenizer
    end_id = tokenizer.convert_tokens_to_ids(model.end_of_turn)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    completions: list[list[Completion]] = [[] for _ in prompts]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 else \
        {"do_sample": False}
    with progress_bar(description, len(order)) as advance:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            with _out_of_memory_advice(len(batch) * num_samples, width + max_new_tokens):
                generated = model.model.generate(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                    max_new_tokens=max_new_tokens, num_return_sequences=num_samples, eos_token_id=end_id,
                    pad_token_id=tokenizer.pad_token_id, **sampling)
            for row, i in enumerate(batch):
                completions[i] = [_completion(tokenizer, sequence[width:], end_id, max_new_tokens)
                                  for sequence in generated[row * num_samples:(row + 1) * num_samples]]
            advance(len(batch))
    return completions


class Completion(NamedTuple):
    """One generated reply, and whether it stopped at max_new_tokens without ending its turn."""

    text: str
    truncated: bool


def _completion(tokenizer, new_tokens: torch.Tensor, end_id: int, max_new_tokens: int) -> Completion:
    ended = end_id in new_tokens.tolist()
    return Completion(tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                      not ended and len(new_tokens) == max_new_tokens)


def _out_of_memory_advice(batch_size: int, sequence_length: int):
    return guards.out_of_memory_advice("evaluation", batch_size, sequence_length,
                                       "Lower EvalConfig.batch_size, or limit the prompt length")


def score_outputs(task: Task, examples: list[dict], outputs: list[str], *, model_name: str, engine: str,
                  seconds: float, config: EvalConfig, truncated: list[bool] | None = None) -> Report:
    """The Report of model (or baseline) `outputs` on `examples`: parse, score each, aggregate, bootstrap."""
    predictions = [task.parse_answer(text, example) for text, example in zip(outputs, examples, strict=True)]
    references = [task.answer(example) for example in examples]
    records, per_example = [], []
    for example, output, prediction, reference in zip(examples, outputs, predictions, references, strict=True):
        scores = task.score(prediction, reference)
        per_example.append(scores)
        records.append({"id": example["id"], "output": output, "parsed": prediction, "gold": reference,
                        "scores": scores, "categories": task.categories(example)})
    if type(task).aggregate is Task.aggregate:  # means: scipy's vectorised bootstrap of each score
        intervals = {key: bootstrap_interval([s[key] for s in per_example], config.bootstrap_resamples, config.seed)
                     for key in per_example[0]}
    else:
        intervals = reaggregated_intervals(task, per_example, predictions, references, config.bootstrap_resamples,
                                           config.seed)
    closed = task.choices(examples[0]) is not None
    return Report(
        task={**task.describe(), "primary_metric": task.primary_metric},
        model=model_name, split=config.split, engine=engine, n=len(examples),
        metrics=task.aggregate(per_example, predictions, references), intervals=intervals,
        parse_failures=sum(p is None for p in predictions),
        predicted=_distribution(task.answer_label(p, e) if p is not None else "unparsed"
                                for p, e in zip(predictions, examples)) if closed else {},
        gold=_distribution(task.answer_label(r, e) for r, e in zip(references, examples)) if closed else {},
        per_category=_per_category(records, task.primary_metric),
        seconds=seconds, records=records,
        empty_outputs=None if truncated is None else sum(not text.strip() for text in outputs),
        truncated_outputs=None if truncated is None else sum(truncated))


def bootstrap_interval(values: list[float], resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values`."""
    array = np.asarray(values, dtype=float)
    if len(array) < 2 or np.all(array == array[0]):
        return float(array.mean()), float(array.mean())
    result = stats.bootstrap((array,), np.mean, n_resamples=resamples, confidence_level=0.95,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def reaggregated_intervals(task: Task, scores: list[dict], predictions: list, references: list, resamples: int,
                           seed: int) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals of every metric `task.aggregate` reports, resampling examples.

    A metric missing from a resample (e.g. a group no resampled example belongs to) is left out of that draw.
    """
    full = task.aggregate(scores, predictions, references)
    if len(scores) < 2:
        return {key: (value, value) for key, value in full.items()}
    rng, draws = np.random.default_rng(seed), {key: [] for key in full}
    for _ in range(resamples):
        picked = rng.integers(0, len(scores), len(scores))
        resampled = task.aggregate([scores[i] for i in picked], [predictions[i] for i in picked],
                                   [references[i] for i in picked])
        for key, value in resampled.items():
            draws.setdefault(key, []).append(value)
    return {key: (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
            for key, values in draws.items()}


def _distribution(labels) -> dict[str, int]:
    return dict(Counter(labels).most_common())


def _per_category(records: list[dict], metric: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for record in records:
        for category in record["categories"]:
            groups.setdefault(category, []).append(record["scores"][metric])
    return {category: {"n": len(values), metric: sum(values) / len(values)}
            for category, values in sorted(groups.items())}

