"""Evaluation: batched generation or log-likelihood scoring, then parse -> score -> aggregate into a Report."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from fasttune import data, distributed, hooks
from fasttune.backend import Model
from fasttune.engines import Engine, engine_for
from fasttune.errors import FasttuneError, not_positive, raise_problems
from fasttune.report import Report
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
    """Prompts per batch of generation."""
    batch_tokens: int = 16384
    """Log-likelihood scoring: rows of a forward pass add up to at most this many tokens, padding included (a longer
    row runs alone)."""
    max_new_tokens: int | None = None
    """Generation length (default: the task's)."""
    bootstrap_resamples: int = 1000
    """Resamples for the 95% bootstrap intervals."""
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self):
        problems = not_positive(self, ("limit", "batch_size", "batch_tokens", "max_new_tokens", "bootstrap_resamples"))
        if self.engine not in ("auto", "loglik", "generate"):
            problems.append(f"engine must be auto, loglik or generate (engine={self.engine!r})")
        raise_problems(problems)


@hooks.library_scope()
def evaluate(model: Model | Engine | str | Path, task: Task, split: str = "test", *, limit: int | None = None,
             config: EvalConfig | None = None) -> Report:
    """Score `model` (a Model, an engine, or a GGUF file run by llama.cpp) on a task split; parse failures count as
    wrong.

    Under torchrun each process scores a contiguous share of the examples and every process gets the whole report,
    the same as one process's (only `seconds` differs); save it from rank 0 (`distributed.is_main_process()`)."""
    config = config or EvalConfig(split=split, limit=limit)
    return score_examples(engine_for(model), task, task.load(config.split)[: config.limit], config)


def score_examples(engine: Engine, task: Task, examples: list[dict], config: EvalConfig,
                   prompts: list[list[int]] | None = None) -> Report:
    """Score `engine` on `examples` (of split `config.split`) as `config` says, batch by batch: only a batch's
    logits exist at a time, reduced at once to the log-likelihood of each choice. `prompts`: the examples' prompt
    ids when the caller has rendered them already (validation does so once a run)."""
    has_choices = task.kind == "choices"
    use_loglik = config.engine == "loglik" or (config.engine == "auto" and has_choices)
    if use_loglik and not has_choices:
        raise FasttuneError(f"Task '{task.name}' has no choices, so it cannot be scored by log-likelihood "
                            "(engine='loglik'). Use engine='generate'.")
    started, truncated = time.perf_counter(), None
    share = distributed.split(examples)
    prompts = render_prompts(engine, task, share) if prompts is None else distributed.split(prompts)
    if use_loglik:
        outputs = distributed.gather(_pick_choices(engine, task, share, prompts, config.batch_tokens))
    else:
        completions = distributed.gather([samples[0] for samples in engine.generate(
            prompts, config.max_new_tokens or task.max_new_tokens, batch_size=config.batch_size,
            description=f"generating {task.name}")])
        outputs = [completion.text for completion in completions]
        truncated = [completion.truncated for completion in completions]
    return score_outputs(task, examples, outputs, model_name=engine.name, engine="loglik" if use_loglik else "generate",
                         seconds=time.perf_counter() - started, config=config, truncated=truncated)


def render_prompts(engine: Engine, task: Task, examples: list[dict]) -> list[list[int]]:
    """Each example's prompt ids, rendered by the engine's chat template."""
    return [engine.prompt_ids(task.format(example).prompt, data.where_example(task, example)) for example in examples]


def _pick_choices(engine: Engine, task: Task, examples: list[dict], prompts: list[list[int]],
                  batch_tokens: int) -> list[str]:
    """For each example, the choice whose tokens (plus end of turn) have the highest summed log-probability."""
    choices = [checked_choices(task, example) for example in examples]
    scores = engine.choice_logprobs(prompts, choices, batch_tokens=batch_tokens,
                                    description=f"scoring {task.name}")
    broken = [example["id"] for example, s in zip(examples, scores, strict=True) if not np.isfinite(s).all()]
    if broken:  # argmax over NaN would silently pick the first choice
        raise FasttuneError(
            f"The model gives non-finite log-likelihoods for {len(broken)} of {len(examples)} examples "
            f"(ids={', '.join(map(str, broken[:10]))}{' ...' if len(broken) > 10 else ''}). Its weights hold NaN/inf "
            f"or its dtype overflows ({engine.precision}): retrain with a lower "
            "learning_rate, or load in bfloat16/float32.")
    return [options[int(np.argmax(s))] for options, s in zip(choices, scores, strict=True)]


def checked_choices(task: Task, example: dict) -> list[str]:
    """The example's choices, refused when picking among them cannot be scored honestly: fewer than two (always
    right), two the same (the pick is arbitrary), or none that parses to the gold answer (never right)."""
    options = task.choices(example)
    where = data.where_example(task, example)
    if not isinstance(options, list | tuple) or len(options) < 2:
        raise FasttuneError(f"{where}: choices() gave {len(options or [])} choices (choices={options!r}); picking "
                            "among fewer than two is always right. Give every example two or more choices.")
    if len(set(options)) < len(options):
        raise FasttuneError(f"{where}: choices() gave the same choice twice (choices={list(options)!r}); the pick "
                            "between equal texts is arbitrary. Make every choice distinct.")
    gold = task.answer(example)
    parsed = [task.parse_answer(option, example) for option in options]
    if not any(answer == gold or (isinstance(gold, tuple) and answer in gold) for answer in parsed):
        raise FasttuneError(f"{where}: the gold answer is none of the choices (gold={gold!r}, choices="
                            f"{list(options)!r}, parsed as {parsed!r}), so the example can never be right. Fix the "
                            "example's answer or the task's choices().")
    return list(options)


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
    closed = [i for i, example in enumerate(examples) if task.has_closed_answer(example)]
    return Report(
        task={**task.describe(), "primary_metric": task.primary_metric},
        model=model_name, split=config.split, engine=engine, n=len(examples),
        metrics=task.aggregate(per_example, predictions, references), intervals=intervals,
        parse_failures=sum(p is None for p in predictions),
        predicted=_distribution(task.answer_label(predictions[i], examples[i]) if predictions[i] is not None
                                else "unparsed" for i in closed),
        gold=_distribution(task.answer_label(references[i], examples[i]) for i in closed),
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

