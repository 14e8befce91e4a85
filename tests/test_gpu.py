"""The Unsloth 4-bit path: runs only on a CUDA machine with fasttune[gpu]."""

import importlib.util

import pytest
import torch

import fasttune
from conftest import check_choice_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None,
                                reason="needs a CUDA GPU and fasttune[gpu]")


def test_unsloth_loads_the_linear_layers_in_4bit_and_trains(tmp_path):
    from fasttune.backend import count_4bit_linear_layers

    model = fasttune.load(load_in_4bit=True)
    four_bit, linear = count_4bit_linear_layers(model)
    assert model.backend == "unsloth" and four_bit >= linear - 1  # all but lm_head
    run = fasttune.train(model, fasttune.tasks.get("larger_number"), max_steps=5, output_dir=str(tmp_path))
    assert run.losses and run.adapter_dir.exists()


def test_torch_varlen_attention_for_unsloth_equals_per_row_causal_attention():
    """The kernel fasttune gives Unsloth's packed batches (kv heads repeated where torch lacks enable_gqa)."""
    from fasttune import backend, hooks  # noqa: F401  (backend imports Unsloth first)

    kernel = hooks.unsloth_varlen_kernel()
    assert kernel is not None
    generator = torch.Generator(device="cuda").manual_seed(0)
    lengths, heads, kv_heads, dim = [37, 5, 120, 64], 32, 8, 64
    total = sum(lengths)
    q, k, v = (torch.randn(total, h, dim, device="cuda", dtype=torch.bfloat16, generator=generator)
               for h in (heads, kv_heads, kv_heads))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    packed = kernel(q, k, v, cu, cu, max(lengths), max(lengths), scale=None, window_size=(-1, 0), enable_gqa=True)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        row = torch.nn.functional.scaled_dot_product_attention(
            q[start:end].transpose(0, 1), k[start:end].transpose(0, 1).repeat_interleave(4, 0),
            v[start:end].transpose(0, 1).repeat_interleave(4, 0), is_causal=True).transpose(0, 1)
        assert (packed[start:end].float() - row.float()).abs().max() < 2e-2
    import unsloth.utils.attention_dispatch as dispatch

    before = dispatch._TORCH_VARLEN_ATTN
    with hooks.unsloth_varlen_attention():
        assert dispatch._TORCH_VARLEN_ATTN is not None
    assert dispatch._TORCH_VARLEN_ATTN is before


def test_choice_scores_under_unsloth_are_whole_rows_and_equal_scoring_each_row_alone(tiny_model_dir):
    """Scoring over the prompt's KV cache failed this comparison under Unsloth 2026.10.7 (H200, 2026-12-02), so the
    engine scores whole rows there."""
    from fasttune.engines import engine_for

    model = fasttune.load(tiny_model_dir, load_in_4bit=False, dtype=torch.bfloat16)
    assert model.backend == "unsloth"
    engine = engine_for(model)
    assert not engine.prompt_cache
    check_choice_scores(model, engine, 0.1)

