"""Padding-free batches compute the same loss as padded ones, and device steps are sized to the free memory."""

import random

import pytest
import torch

import fasttune
from fasttune.batching import DevicePlan, activation_bytes_per_token, plan_device_steps


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


def _rows(vocab_size: int) -> list[dict[str, list[int]]]:
    generator = random.Random(0)
    rows = []
    for prompt, completion in ((5, 3), (11, 6), (2, 9), (17, 4)):
        ids = [generator.randrange(3, vocab_size) for _ in range(prompt + completion)]
        rows.append({"input_ids": ids, "completion_mask": [0] * prompt + [1] * completion})
    return rows


def _first_batch_loss(model, rows, padding_free: bool, tmp_path) -> tuple[float, dict]:
    from fasttune.training import TrainConfig, sft_trainer

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
    from fasttune.training import TrainConfig, resolve_batching, sft_trainer

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], seed=0, gradient_checkpointing=False)
    assert not backend.varlen_attention(model)
    assert TrainConfig().padding_free is None
    assert resolve_batching(TrainConfig(), model).padding_free is False
    assert resolve_batching(TrainConfig(padding_free=True), model).padding_free is True  # a forced choice stays
    trainer = sft_trainer(model, _rows(len(model.tokenizer)), TrainConfig(output_dir=str(tmp_path)), tmp_path)
    assert trainer.args.padding_free is False and trainer.args.train_sampling_strategy == "group_by_length"


def test_length_grouped_batches_pad_to_their_longest_row_and_waste_less_than_random_ones(tiny_model_dir, tmp_path):
    from fasttune.training import TrainConfig, sft_trainer

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
