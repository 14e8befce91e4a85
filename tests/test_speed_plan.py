"""The device plan's speed choices (issue 15): varlen routing of packed batches, the optimizer, and the host-side
token count."""

import pytest
import torch

import fasttune
from fasttune import backend, hooks, memory, plan
from fasttune.configs import TrainConfig


def _tiny_with_lora(tiny_model_dir):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], seed=0, gradient_checkpointing=False)
    return model


ROWS = [{"input_ids": [5] * n, "completion_mask": [1] * n} for n in (7, 12, 30)]


def test_packed_batches_are_chosen_exactly_where_unsloth_gets_a_varlen_kernel(tiny_model_dir, monkeypatch):
    model = _tiny_with_lora(tiny_model_dir)
    assert hooks.unsloth_varlen_kernel() is None  # no CUDA, no Unsloth here
    assert plan.plan(model, ROWS, TrainConfig()).padding_free is False
    monkeypatch.setattr(memory, "free_memory_bytes", lambda max_memory_gib=None: 80 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backend, "USE_UNSLOTH", True)
    for kernel, packed in ((None, False), (object(), True)):
        monkeypatch.setattr(hooks, "unsloth_varlen_kernel", lambda kernel=kernel: kernel)
        assert backend.varlen_attention(model) is packed
        assert plan.plan(model, ROWS, TrainConfig()).padding_free is packed
        assert plan.plan(model, ROWS, TrainConfig(padding_free=not packed)).padding_free is (not packed)


def test_the_varlen_hook_changes_nothing_without_unsloth():
    with hooks.unsloth_varlen_attention():
        pass  # no Unsloth imported: nothing to route, nothing raised


def _per_segment_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
    """torch 2.11's varlen_attn contract (tokens, heads, dim; causal as window (-1, 0); no enable_gqa) in SDPA."""
    assert key.shape[1] == query.shape[1] and window_size == (-1, 0)
    bounds = cu_seq_q.tolist()
    return torch.cat([torch.nn.functional.scaled_dot_product_attention(
        *(x[a:b].transpose(0, 1) for x in (query, key, value)), is_causal=True, scale=scale).transpose(0, 1)
        for a, b in zip(bounds, bounds[1:])])


def test_repeating_kv_heads_gives_grouped_query_attention_with_query_head_h_on_kv_head_h_by_groups():
    torch.manual_seed(0)
    lengths, heads, kv_heads = [5, 9, 2], 8, 2
    query = torch.randn(sum(lengths), heads, 16)
    key, value = torch.randn(sum(lengths), kv_heads, 16), torch.randn(sum(lengths), kv_heads, 16)
    cu = torch.tensor([0, 5, 14, 16], dtype=torch.int32)
    attend = hooks._with_repeated_kv_heads(_per_segment_attention)
    packed = attend(query, key, value, cu, cu, 9, 9, scale=None, window_size=(-1, 0), enable_gqa=True)
    for a, b in ((0, 5), (5, 14), (14, 16)):
        expected = torch.nn.functional.scaled_dot_product_attention(
            *(x[a:b].transpose(0, 1) for x in (query, key, value)), is_causal=True, enable_gqa=True).transpose(0, 1)
        assert torch.allclose(packed[a:b], expected, atol=1e-5)


def test_fused_adamw_unless_its_state_would_crowd_a_gpus_free_memory():
    lora_1b = 11_272_192  # r=16 on every projection of Llama-3.2-1B
    assert plan.choose_optimizer(lora_1b, 80 * 2**30, on_gpu=True) == "adamw_torch_fused"
    assert plan.choose_optimizer(lora_1b, 1 * 2**30, on_gpu=True) == "adamw_8bit"  # 135 MB > 10% of 1 GiB
    assert plan.choose_optimizer(lora_1b, 1 * 2**30, on_gpu=False) == "adamw_torch_fused"  # bitsandbytes needs CUDA


def test_the_trainer_steps_with_the_planned_optimizer_and_a_forced_one_is_kept(tiny_model_dir, tmp_path):
    from fasttune.trainers import sft_trainer

    model = _tiny_with_lora(tiny_model_dir)
    decided = plan.plan(model, ROWS, TrainConfig())
    assert decided.optimizer == "adamw_torch_fused"
    assert plan.plan(model, ROWS, TrainConfig(optimizer="adamw_8bit")).optimizer == "adamw_8bit"
    trainer = sft_trainer(model, ROWS, TrainConfig(output_dir=str(tmp_path)), tmp_path)
    assert trainer.args.optim == "adamw_torch_fused" and trainer.args.include_num_input_tokens_seen in ("no", False)


def test_the_tokens_trained_are_counted_on_the_host_row_by_row(tiny_model_dir, tmp_path):
    from fasttune.seam import sft_rows

    task = fasttune.tasks.get("larger_number")
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    rows = sft_rows(task, task.load("train")[:8], model.tokenizer, end_of_turn=model.end_of_turn,
                    max_seq_length=model.max_seq_length)
    run = fasttune.train(model, task, output_dir=str(tmp_path), epochs=1, batch_size=4, limit=8, save_steps=None,
                         logging_steps=1)
    assert run.train_tokens == sum(len(row["input_ids"]) for row in rows) > 0
    assert run.tokens_per_second == pytest.approx(run.train_tokens / run.seconds)
