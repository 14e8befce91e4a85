"""train -> evaluate -> save -> reload on a tiny random-weight Llama (seconds on a CPU)."""

import json
import math

import pytest
import torch

import fasttune
from conftest import check_choice_scores
from fasttune import data


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    task = fasttune.tasks.get("larger_number")
    base = fasttune.evaluate(model, task, limit=24)
    run = fasttune.train(model, task, max_steps=10, batch_size=8, limit=80, logging_steps=2,
                         output_dir=str(tmp_path_factory.mktemp("run")))
    return model, task, base, run


def test_training_pins_the_tiny_models_first_losses(tiny_run):
    # Measured on this project's 2-core CPU machine (2026-12-02); runs are bitwise reproducible on one machine,
    # the tolerance leaves room for another CPU's float rounding.
    _, _, _, run = tiny_run
    assert run.losses == [(2, pytest.approx(10.767941, rel=1e-4)), (4, pytest.approx(10.734812, rel=1e-4)),
                          (6, pytest.approx(10.693130, rel=1e-4)), (8, pytest.approx(10.722902, rel=1e-4)),
                          (10, pytest.approx(10.705418, rel=1e-4))]


def test_training_records_finite_moving_losses_and_draws_them(tiny_run):
    _, _, _, run = tiny_run
    losses = [loss for _, loss in run.losses]
    assert [step for step, _ in run.losses] == [2, 4, 6, 8, 10]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert run.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.train_tokens > 0 and run.tokens_per_second > 0


def test_adapter_folder_holds_weights_card_and_config(tiny_run):
    _, task, _, run = tiny_run
    card = json.loads((run.adapter_dir / "fasttune.json").read_text())
    assert (run.adapter_dir / "adapter_model.safetensors").exists()
    assert card["task"] == task.describe() and card["config"]["max_steps"] == 10
    config = json.loads((run.output_dir / "config.json").read_text())
    assert config["lora"]["r"] == 16
    # The batching fasttune chose (padded: no varlen attention kernel on a CPU) is recorded, not left as None.
    assert config["padding_free"] is card["config"]["padding_free"] is run.config.padding_free is False


def test_reloaded_adapter_gives_identical_logits(tiny_run, tiny_model_dir):
    model, task, _, run = tiny_run
    reloaded = fasttune.load(run.adapter_dir, dtype=torch.float32)
    assert reloaded.adapter_dir == run.adapter_dir and reloaded.base_path == tiny_model_dir
    ids = torch.tensor([data.prompt_ids(model.tokenizer, task.format(task.load("test")[0]).prompt)])
    model.model.eval()
    reloaded.model.eval()
    with torch.no_grad():
        assert torch.equal(model.model(input_ids=ids).logits, reloaded.model(input_ids=ids).logits)
    assert fasttune.evaluate(reloaded, task, limit=24).records == fasttune.evaluate(model, task, limit=24).records


def test_loglik_engine_picks_the_choice_with_the_higher_summed_log_probability(tiny_run):
    model, task, base, _ = tiny_run
    example = task.load("test")[0]
    prompt = data.prompt_ids(model.tokenizer, task.format(example).prompt)
    scores = []
    for choice in task.choices(example):
        continuation = data.completion_ids(model.tokenizer, choice, model.end_of_turn)
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([prompt + continuation])).logits[0].float()
        log_probs = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
        scores.append(log_probs[torch.arange(len(continuation)), torch.tensor(continuation)].sum().item())
    report = fasttune.evaluate(model, task, limit=1)
    assert report.records[0]["output"] == task.choices(example)[scores.index(max(scores))]


def test_token_batches_keep_rows_times_the_longest_within_the_budget():
    from fasttune.engines.transformers_model import token_batches

    lengths = [50, 40, 30, 30, 20, 10, 10, 10, 10]
    assert list(token_batches(lengths, lambda n: n, 100)) == [[50, 40], [30, 30, 20], [10] * 4]
    assert list(token_batches([300, 20], lambda n: n, 100)) == [[300], [20]]  # a longer row runs alone
    assert list(token_batches([30, 20, 10], lambda n: n, 120, rows=lambda n: 2)) == [[30, 20], [10]]


def test_whole_rows_score_exactly_without_a_mask_and_only_continuation_positions_reach_the_output_layer(
        tiny_model_dir):
    """The scorer used under Unsloth, on the transformers backend: right-padded rows with no attention mask, batched
    by tokens, equal each row run alone."""
    from fasttune.engines import TransformersEngine

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    check_choice_scores(model, TransformersEngine(model.model, model.tokenizer, model.name, prompt_cache=False), 1e-4)


def test_scoring_each_prompt_once_over_its_cache_equals_scoring_every_prompt_and_choice_whole(tiny_model_dir):
    """The prompt-cached scorer against the one it replaced: every prompt + choice + end of turn as its own row."""
    from fasttune.engines import engine_for

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    engine = engine_for(model)
    assert engine.prompt_cache  # the transformers backend
    check_choice_scores(model, engine, 1e-4)


def test_report_counts_distributions_and_writes_every_prediction(tiny_run, tmp_path):
    _, _, base, _ = tiny_run
    assert base.n == 24 and base.engine == "loglik" and base.parse_failures == 0
    assert sum(base.predicted.values()) == sum(base.gold.values()) == 24
    assert set(base.gold) <= {"first", "second"}
    assert sum(row["n"] for row in base.per_category.values()) == 24
    low, high = base.intervals["accuracy"]
    assert low <= base.metrics["accuracy"] <= high
    base.save(tmp_path, "base")
    lines = (tmp_path / "base.predictions.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["id"] == "test-0"
    assert json.loads((tmp_path / "base.json").read_text())["n"] == 24


def test_generation_engine_counts_unparseable_outputs_as_wrong(tiny_run):
    model, task, _, _ = tiny_run
    report = fasttune.evaluate(model, task, config=fasttune.EvalConfig(limit=8, engine="generate",
                                                                       max_new_tokens=4, batch_size=3))
    assert report.engine == "generate" and report.n == 8
    unparsed = [r for r in report.records if r["parsed"] is None]
    assert report.parse_failures == len(unparsed) == report.predicted.get("unparsed", 0)
    assert all(r["scores"]["accuracy"] == 0.0 for r in unparsed)


def test_bad_training_settings_are_all_reported_at_once():
    with pytest.raises(fasttune.FasttuneError, match=r"learning_rate must be positive.*warmup_ratio must be in"):
        fasttune.TrainConfig(learning_rate=0, warmup_ratio=1.0)


def test_a_method_that_does_not_go_with_the_config_class_is_refused():
    # The method is the config class's attribute, so a config cannot name another method; train() checks the pair.
    assert fasttune.TrainConfig.method == "sft" and fasttune.DpoConfig().method == "dpo"
    with pytest.raises(fasttune.FasttuneError, match=r"method='dpo' but the config is a TrainConfig"):
        fasttune.train(None, fasttune.tasks.get("larger_number"), "dpo", config=fasttune.TrainConfig())


def test_nested_lora_settings_are_named_with_their_prefix():
    with pytest.raises(fasttune.FasttuneError, match=r"lora.r must be positive \(lora.r=0\)"):
        fasttune.TrainConfig(lora=fasttune.LoraConfig(r=0))


def test_loading_a_missing_model_folder_says_what_can_be_loaded(tmp_path):
    with pytest.raises(fasttune.FasttuneError, match="Model folder not found.*a model hub id such as"):
        fasttune.load(tmp_path / "HuggingFaceTB/SmolLM2-1.7B")
