"""Padding-free batches compute the same loss as padded ones, and device steps are sized to the free memory."""

import random

import pytest
import torch

import fasttune
from fasttune import memory
from fasttune.configs import TrainConfig
from fasttune.plan import (DevicePlan, activation_bytes_per_token, bytes_per_token, checkpointed_bytes_per_token,
                           free_for_activations, needs_checkpointing, plan, plan_device_steps)
from fasttune.trainers import sft_trainer
from fasttune.errors import FasttuneError


def test_a_batch_that_fits_runs_in_one_device_step():
    assert plan_device_steps(16, 1, longest_row=100, bytes_per_token=1000, free_bytes=10**9) == DevicePlan(16, 1)


def test_a_batch_too_large_for_memory_is_split_and_the_optimizer_step_keeps_its_examples():
    # 16 rows x 1000 tokens x 1 kB = 16 MB; 80% of 15 MB holds 12 rows, so 8 rows a device step, 2 of them.
    plan = plan_device_steps(16, 2, longest_row=1000, bytes_per_token=1000, free_bytes=15 * 10**6)
    assert plan == DevicePlan(8, 4)
    assert plan.micro_batch * plan.accumulation == 16 * 2


def test_a_row_too_large_for_memory_still_gets_a_device_step_of_one():
    assert plan_device_steps(6, 1, longest_row=10**6, bytes_per_token=10**6, free_bytes=10**9) == DevicePlan(1, 6)


def test_the_memory_estimate_grows_with_the_model_shape(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    wider = AutoConfig.from_pretrained(tiny_model_dir, hidden_size=128, intermediate_size=256)
    assert 0 < activation_bytes_per_token(config) < activation_bytes_per_token(wider)


def _llama_8b_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256)


def test_checkpointing_keeps_only_layer_inputs_and_logits_so_a_token_needs_far_less():
    config = _llama_8b_config()
    assert activation_bytes_per_token(config) == 32 * 2 * (4 * 4096 + 2 * 14336) + 4 * 128256  # 3.4 MB
    assert checkpointed_bytes_per_token(config) == 2 * 32 * 4096 + 2 * (4 * 4096 + 2 * 14336) + 4 * 128256  # 0.87 MB
    assert bytes_per_token(config, True) == checkpointed_bytes_per_token(config)
    assert bytes_per_token(config, False) == activation_bytes_per_token(config)


def test_checkpointing_is_chosen_only_when_one_longest_row_would_not_fit_without_it():
    config = _llama_8b_config()
    one_row = 2048 * activation_bytes_per_token(config)  # 6.9 GB at 8B for 2k tokens
    assert not needs_checkpointing(2048, config, free_bytes=70 * 2**30)  # an 80 GB GPU: speed first
    assert not needs_checkpointing(2048, config, free_bytes=int(one_row / 0.8) + 1)
    assert needs_checkpointing(2048, config, free_bytes=int(one_row / 0.8) - 10**6)
    assert needs_checkpointing(2048, config, free_bytes=2 * 2**30)  # what an 8 GiB cap leaves after 4-bit weights
    assert not needs_checkpointing(200, config, free_bytes=2 * 2**30)  # short rows fit without it


def test_the_device_step_plan_follows_the_checkpointing_choice():
    config, free = _llama_8b_config(), 12 * 2**30
    plain = plan_device_steps(8, 1, 2048, bytes_per_token(config, False), free)
    checkpointed = plan_device_steps(8, 1, 2048, bytes_per_token(config, True), free)
    assert plain == DevicePlan(1, 8) and checkpointed == DevicePlan(4, 2)


def test_the_optimizer_state_of_the_trainable_weights_is_kept_out_of_the_activation_budget():
    assert free_for_activations(10**9, trainable_parameters=42 * 10**6) == 10**9 - 12 * 42 * 10**6
    assert free_for_activations(10**6, trainable_parameters=10**6) == 0


def test_a_memory_cap_leaves_only_the_cap_less_what_the_process_holds():
    assert memory.within_budget(70 * 2**30, held=6 * 2**30, max_memory_gib=None) == 70 * 2**30
    assert memory.within_budget(70 * 2**30, held=6 * 2**30, max_memory_gib=8) == 2 * 2**30
    assert memory.within_budget(1 * 2**30, held=6 * 2**30, max_memory_gib=8) == 1 * 2**30  # the device has less
    assert memory.within_budget(70 * 2**30, held=9 * 2**30, max_memory_gib=8) == 0
    # On a CPU the cap counts against this process's resident memory.
    held = memory.resident_bytes()
    assert 0 <= memory.free_memory_bytes(max_memory_gib=(held + 2**30) / 2**30) <= 2**30
    assert memory.free_memory_bytes() > memory.free_memory_bytes(max_memory_gib=(held + 2**20) / 2**30)


def test_a_memory_cap_out_of_range_is_refused_naming_the_field_and_the_fix(tiny_model_dir):
    for bad in (0, -2, float("nan")):
        with pytest.raises(FasttuneError, match=rf"max_memory_gib must be positive \(max_memory_gib={bad}\)\. Pass"):
            fasttune.load(tiny_model_dir, max_memory_gib=bad)
    with pytest.raises(FasttuneError, match=r"max_memory_gib is more than the machine \(RAM\) has \(max_memory_gib="
                                            r"100000, the machine \(RAM\) has [0-9.]+ GiB\)\. Pass at most"):
        memory.limit_memory(100000)
    memory.limit_memory(None)
    memory.limit_memory(1)  # accepted on a CPU: nothing to cap there, the plan takes it into account


def test_a_memory_cap_splits_the_batch_into_smaller_device_steps(tiny_model_dir, tmp_path):
    from fasttune import backend

    rows = [{"input_ids": [5] * 64, "completion_mask": [1] * 64} for _ in range(16)]  # 16 x 64 x 0.2 MB: 200 MB
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], seed=0, gradient_checkpointing=False)
    config = TrainConfig(batch_size=16, output_dir=str(tmp_path))
    assert sft_trainer(model, rows, config, tmp_path).args.per_device_train_batch_size == 16
    model.max_memory_gib = (memory.resident_bytes() + 64 * 2**20) / 2**30  # 64 MB above what the process holds
    args = sft_trainer(model, rows, config, tmp_path).args
    assert args.per_device_train_batch_size < 16
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16


def _train_tiny(tiny_model_dir, output_dir, **settings):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    return fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=str(output_dir), max_steps=2,
                          batch_size=4, limit=8, save_steps=None, **settings)


def test_fasttune_checkpoints_only_when_memory_is_short_and_records_its_choice(tiny_model_dir, tmp_path,
                                                                              monkeypatch):
    import json

    monkeypatch.setattr(memory, "free_memory_bytes", lambda max_memory_gib=None: 10**6)  # 1 MB: no row fits
    for setting, expected in ((None, True), (False, False)):
        run = _train_tiny(tiny_model_dir, tmp_path / str(setting), gradient_checkpointing=setting)
        card = json.loads((run.adapter_dir / "fasttune.json").read_text())
        config = json.loads((run.output_dir / "config.json").read_text())
        assert config["gradient_checkpointing"] is card["config"]["gradient_checkpointing"] is expected
        assert run.model.model.is_gradient_checkpointing is expected


def test_an_explicit_gradient_checkpointing_false_is_not_overridden_by_trls_default(tiny_model_dir, tmp_path):
    """TRL's SFTConfig defaults to gradient_checkpointing=True, which turned checkpointing on in every run."""
    run = _train_tiny(tiny_model_dir, tmp_path)  # plenty of free memory: fasttune leaves it off
    assert run.config.gradient_checkpointing is False
    assert run.model.model.is_gradient_checkpointing is False


def _rows(vocab_size: int) -> list[dict[str, list[int]]]:
    generator = random.Random(0)
    rows = []
    for prompt, completion in ((5, 3), (11, 6), (2, 9), (17, 4)):
        ids = [generator.randrange(3, vocab_size) for _ in range(prompt + completion)]
        rows.append({"input_ids": ids, "completion_mask": [0] * prompt + [1] * completion})
    return rows


def _first_batch_loss(model, rows, padding_free: bool, tmp_path) -> tuple[float, dict]:

    config = TrainConfig(batch_size=len(rows), padding_free=padding_free, output_dir=str(tmp_path))
    trainer = sft_trainer(model, rows, config, tmp_path)
    trainer.args.train_sampling_strategy = "sequential"
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(model.model, batch, num_items_in_batch=None)
    return loss.item(), batch


def test_packed_and_padded_batches_give_the_same_loss_on_the_tiny_model(tiny_model_dir, tmp_path):
    from fasttune import backend

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], seed=0,
                     gradient_checkpointing=False)
    torch.manual_seed(0)
    with torch.no_grad():  # nonzero LoRA updates so the adapter's path is part of the comparison
        for name, parameter in model.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    rows = _rows(len(model.tokenizer))
    lengths = [len(row["input_ids"]) for row in rows]

    packed_loss, packed = _first_batch_loss(model, rows, True, tmp_path / "packed")
    padded_loss, padded = _first_batch_loss(model, rows, False, tmp_path / "padded")

    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]
    assert padded["input_ids"].shape == (len(rows), max(lengths))  # the padded batch really holds padding
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    # The comparison can fail: letting examples see each other (no positions, so one causal row) changes the loss.
    with torch.no_grad():
        leaky = model.model(input_ids=packed["input_ids"], labels=packed["labels"]).loss.item()
    assert abs(leaky - packed_loss) > 1e-4


def test_without_a_varlen_attention_kernel_fasttune_pads_length_grouped_batches(tiny_model_dir, tmp_path):
    """On a CPU (no flash-attn) padding-free batches are slower, so the default is padded, length-grouped."""
    from fasttune import backend

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], seed=0, gradient_checkpointing=False)
    assert not backend.varlen_attention(model)
    assert TrainConfig().padding_free is None
    rows = _rows(len(model.tokenizer))
    assert plan(model, rows, TrainConfig()).padding_free is False
    assert plan(model, rows, TrainConfig(padding_free=True)).padding_free is True  # a forced choice stays
    trainer = sft_trainer(model, rows, TrainConfig(output_dir=str(tmp_path)), tmp_path)
    assert trainer.args.padding_free is False and trainer.args.train_sampling_strategy == "group_by_length"


def test_length_grouped_batches_pad_to_their_longest_row_and_waste_less_than_random_ones(tiny_model_dir, tmp_path):

    model = fasttune.load(tiny_model_dir, dtype=torch.float32, max_seq_length=1024)
    generator = random.Random(1)
    lengths = [generator.choice([8, 12, 20, 40, 90, 200]) + generator.randrange(6) for _ in range(256)]
    rows = [{"input_ids": [5] * n, "completion_mask": [0] * (n - 2) + [1, 1]} for n in lengths]
    trainer = sft_trainer(model, rows, TrainConfig(batch_size=8, padding_free=False, output_dir=str(tmp_path)),
                          tmp_path)
    share = {}
    for order in ("random", "group_by_length"):
        trainer.args.train_sampling_strategy = order
        masks = [batch["attention_mask"] for batch in trainer.get_train_dataloader()]
        assert all(mask.shape[1] == int(mask.sum(1).max()) for mask in masks)  # the longest row, not max_seq_length
        assert sum(int(mask.sum()) for mask in masks) == sum(lengths)  # every row once
        share[order] = 1 - sum(lengths) / sum(mask.numel() for mask in masks)
    assert share["group_by_length"] < share["random"] / 3, share


def test_the_device_plan_is_recorded_in_config_json_and_the_card(tiny_model_dir, tmp_path):
    import dataclasses
    import json

    run = _train_tiny(tiny_model_dir, tmp_path)
    config = json.loads((run.output_dir / "config.json").read_text())
    card = json.loads((run.adapter_dir / "fasttune.json").read_text())
    assert config["plan"] == card["plan"] == dataclasses.asdict(run.plan)
    assert config["method"] == "sft" and config["batch_size"] == 4
    assert run.plan.micro_batch * run.plan.accumulation == 4 and run.plan.padding_free is False
    assert run.plan.gradient_checkpointing is config["gradient_checkpointing"] is False
    assert 0 < run.plan.longest_row <= run.model.max_seq_length and run.plan.free_bytes > 0
    assert run.plan.trainable_parameters == sum(p.numel() for p in run.model.model.parameters() if p.requires_grad)
    assert run.plan.bytes_per_token == int(activation_bytes_per_token(run.model.model.config) * 1.2)  # PADDED_SHARE
