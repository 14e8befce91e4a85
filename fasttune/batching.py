"""How training rows reach the device: padding-free batches, device steps sized to the free memory, and gradient
checkpointing only where a row would not fit without it."""

from __future__ import annotations

from dataclasses import dataclass

MEMORY_HEADROOM = 0.8
"""Share of the free memory that one device step's activations may take (the rest: allocator slack, optimizer)."""


def activation_bytes_per_token(config) -> int:
    """A generous estimate of the memory one training token needs: bf16 activations that LoRA's backward keeps
    in every decoder layer (no checkpointing), plus float32 logits. (Measured on an H100, 2026-11-21: Unsloth
    needs about 0.2 MB a token at Llama-3.2-1B's shape, against 1.3 MB estimated here.)"""
    config = _text_config(config)
    return config.num_hidden_layers * _layer_bytes_per_token(config) + 4 * config.vocab_size


def checkpointed_bytes_per_token(config) -> int:
    """The same estimate with gradient checkpointing: each decoder layer keeps only its bf16 input, plus the
    activations of the one layer being recomputed in the backward, plus float32 logits."""
    config = _text_config(config)
    return 2 * config.num_hidden_layers * config.hidden_size + _layer_bytes_per_token(config) + 4 * config.vocab_size


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _layer_bytes_per_token(config) -> int:
    return 2 * (4 * config.hidden_size + 2 * config.intermediate_size)


def needs_checkpointing(longest_row: int, config, free_bytes: int) -> bool:
    """Whether gradient checkpointing is needed: a device step of one `longest_row`-token row would not fit in the
    free memory without it. Checkpointing recomputes every layer in the backward (about a third more compute), so
    it is left off whenever memory allows."""
    return longest_row * activation_bytes_per_token(config) > MEMORY_HEADROOM * free_bytes


def bytes_per_token(config, gradient_checkpointing: bool) -> int:
    """The memory estimate of a training token that matches the checkpointing choice."""
    return (checkpointed_bytes_per_token if gradient_checkpointing else activation_bytes_per_token)(config)


OPTIMIZER_BYTES_PER_PARAMETER = 12
"""What training adds for each trainable weight: its float32 gradient and AdamW's two float32 moments."""


def free_for_activations(free_bytes: int, trainable_parameters: int) -> int:
    """The free memory left for activations once the optimizer's state for the trainable weights is allocated."""
    return max(0, free_bytes - OPTIMIZER_BYTES_PER_PARAMETER * trainable_parameters)


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
