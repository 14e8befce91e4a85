"""The engine protocol: the transformers engine and the GGUF engine (llama.cpp) agree on the tiny random Llama."""

import numpy as np
import pytest
import torch

import fasttune
from fasttune import backend, data, sampling
from fasttune.engines import Engine, GgufEngine, TransformersEngine, engine_for
from fasttune.sampling import SamplingConfig


@pytest.fixture(scope="module")
def both(tiny_wide_model_dir, tmp_path_factory):
    """The transformers engine of the tiny model's float16 merge (computed in float32) and the GGUF f16 of it."""
    result = fasttune.export(tiny_wide_model_dir, tmp_path_factory.mktemp("exports") / "tiny",
                             formats=("merged_16bit", "gguf"), gguf_quants=("f16",), merged_dtype="float16")
    return engine_for(fasttune.load(result.merged_dir, dtype=torch.float32)), engine_for(result.gguf_files["f16"])


@pytest.fixture(scope="module")
def examples():
    task = fasttune.tasks.get("larger_number")
    return task, task.load("test")[:4]


def test_both_engines_implement_the_protocol(both):
    transformers_engine, gguf_engine = both
    assert isinstance(transformers_engine, TransformersEngine) and isinstance(transformers_engine, Engine)
    assert isinstance(gguf_engine, GgufEngine) and isinstance(gguf_engine, Engine)
    assert engine_for(gguf_engine) is gguf_engine
    assert transformers_engine.precision == "dtype=float32" and gguf_engine.name.endswith("-f16.gguf")


def test_end_of_turn_is_the_same_token_for_the_tokenizer_and_the_gguf_template(both):
    transformers_engine, gguf_engine = both
    assert backend.end_of_turn_token(transformers_engine.tokenizer) == "<|im_end|>"
    assert gguf_engine.end_of_turn_id == transformers_engine.end_of_turn_id == \
        transformers_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_transformers_and_gguf_f16_give_the_same_prompts_greedy_replies_and_choice_ranking(both, examples):
    transformers_engine, gguf_engine = both
    task, rows = examples
    prompts = [transformers_engine.prompt_ids(task.format(row).prompt) for row in rows]
    assert [gguf_engine.prompt_ids(task.format(row).prompt) for row in rows] == prompts
    expected = transformers_engine.generate(prompts, 6, batch_size=1)
    replies = gguf_engine.generate(prompts, 6)
    assert [r[0].tokens for r in replies] == [e[0].tokens for e in expected]
    assert [r[0].text for r in replies] == [e[0].text for e in expected]
    assert all(len(r[0].tokens) > 0 for r in replies)
    choices = [task.choices(row) + [f"The larger number is {task.answer(row)}."] for row in rows]
    full_sequence = transformers_engine.choice_logprobs(prompts, choices)
    prompt_cached = gguf_engine.choice_logprobs(prompts, choices)
    assert [list(np.argsort(s)) for s in prompt_cached] == [list(np.argsort(s)) for s in full_sequence]
    for cached, full in zip(prompt_cached, full_sequence, strict=True):
        assert cached == pytest.approx(full, abs=1e-2)


def test_gguf_sampling_with_a_seed_repeats_and_differs_from_greedy(both, examples):
    _, gguf_engine = both
    task, rows = examples
    prompts = [gguf_engine.prompt_ids(task.format(row).prompt) for row in rows[:2]]
    first = gguf_engine.generate(prompts, 8, num_samples=3, temperature=1.0, seed=3)
    again = gguf_engine.generate(prompts, 8, num_samples=3, temperature=1.0, seed=3)
    assert first == again and all(len(samples) == 3 for samples in first)
    greedy = [samples[0].tokens for samples in gguf_engine.generate(prompts, 8)]
    assert [sample.tokens for samples in first for sample in samples] != [g for g in greedy for _ in range(3)]


def test_transformers_sample_answers_equal_what_rewards_sample_judged_draws(tiny_model_dir):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    task = fasttune.tasks.get("larger_number")
    rows = task.load("train")[:3]
    config = SamplingConfig(samples=3, temperature=1.0, max_new_tokens=6, batch_size=2)
    judged = sampling.sample_judged(model, task, rows, config, seed=7)
    engine = engine_for(model)
    prompts = [data.prompt_ids(model.tokenizer, task.format(row).prompt) for row in rows]
    sampled = engine.sample_answers(prompts, samples=3, temperature=1.0, seed=7, max_new_tokens=6, batch_size=2)
    assert [[s.text for s in samples] for samples in sampled] == [[j.text for j in row] for row in judged]
    assert all(len(s.tokens) <= 6 for samples in sampled for s in samples)
    other = engine.sample_answers(prompts, samples=3, temperature=1.0, seed=8, max_new_tokens=6, batch_size=2)
    assert [[s.tokens for s in samples] for samples in other] != [[s.tokens for s in samples] for samples in sampled]
