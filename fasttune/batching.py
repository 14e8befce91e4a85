"""How training rows reach the device: padding-free batches, and device steps sized to the free memory."""

from __future__ import annotations

from dataclasses import dataclass

MEMORY_HEADROOM = 0.8
"""Share of the free memory that one device step's activations may take (the rest: allocator slack, optimizer)."""


def activation_bytes_per_token(config) -> int:
    """A generous estimate of the memory one training token needs: bf16 activations that LoRA's backward keeps
    in every decoder layer (no checkpointing), plus float32 logits. (Measured on an H100, 2026-11-21: Unsloth
    needs about 0.2 MB a token at Llama-3.2-1B's shape, against 1.3 MB estimated here.)"""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    per_layer = 4 * config.hidden_size + 2 * config.intermediate_size
    return 2 * config.num_hidden_layers * per_layer + 4 * config.vocab_size


@dataclass(frozen=True)
class DevicePlan:
    """Examples per device step and device steps per optimizer step."""

    micro_batch: int
    accumulation: int


def plan_device_steps(batch_size: int, gradient_accumulation: int, longest_row: int, bytes_per_token: int,
                      free_bytes: int) -> DevicePlan:
    """Split each batch of `batch_size` rows into the fewest equal device steps whose worst case (every row as long
    as `longest_row`) fits in the free memory; the examples per optimizer step stay `batch_size *
    gradient_accumulation`, so the loss and the updates are those of the unsplit batch."""
    budget = MEMORY_HEADROOM * free_bytes
    for micro in sorted((d for d in range(1, batch_size + 1) if batch_size % d == 0), reverse=True):
        if micro * longest_row * bytes_per_token <= budget:
            break
    return DevicePlan(micro, gradient_accumulation * batch_size // micro)
