"""The device plan of a run: padding-free batches or not, gradient checkpointing or not, device steps sized to
the free memory, and the optimizer, decided in one place (`plan`) from the longest row, the free memory and a
per-token estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fasttune import backend, distributed, memory
from fasttune.backend import Model
from fasttune.configs import TrainConfig
from fasttune.errors import FasttuneError

MEMORY_HEADROOM = 0.8
"""Share of the free memory that one device step's activations may take (the rest: allocator slack, optimizer)."""

# Measured peak memory / the generic estimate below, from the fasttune stack's rows of the speed benchmark
# (peak includes the weights, so the measured per-token share is an upper bound). Padding-free (H100):
# Llama-3.2-1B 8x1024 peaked at 2.69 GiB = 0.27 of the estimate
# (benchmarks/results/gpu-speed-2026-11-21/speed-llama-3.2-1b.json), Llama-3.1-8B 8x2048 at 12.2 GiB = 0.24
# (speed-llama-3.1-8b.json). Padded (H200, no flash-attn): Llama-3.1-8B 8x2048 at 60.8 GiB = 1.17
# (benchmarks/results/gpu-speed-h200-2026-11-21/speed-8b.json), SmolLM2-135M 8x1024 at 3.77 GiB = 0.93
# (speed-135m.json). Safety margin: each share is rounded up (0.27 -> 0.3, 1.17 -> 1.2), and MEMORY_HEADROOM
# keeps a further 20% of the free memory out of the budget.
PADDING_FREE_SHARE = 0.3
PADDED_SHARE = 1.2


def activation_bytes_per_token(config) -> int:
    """The generic estimate of the memory one training token needs: bf16 activations that LoRA's backward keeps
    in every decoder layer (no checkpointing), plus float32 logits; `plan` scales it by the measured share."""
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


def needs_checkpointing(longest_row: int, config, free_bytes: int, share: float = 1.0) -> bool:
    """Whether gradient checkpointing is needed: a device step of one `longest_row`-token row would not fit in the
    free memory without it (the estimate scaled by `share`). Checkpointing recomputes every layer in the backward
    (about a third more compute), so it is left off whenever memory allows."""
    return longest_row * activation_bytes_per_token(config) * share > MEMORY_HEADROOM * free_bytes


def bytes_per_token(config, gradient_checkpointing: bool) -> int:
    """The memory estimate of a training token that matches the checkpointing choice."""
    return (checkpointed_bytes_per_token if gradient_checkpointing else activation_bytes_per_token)(config)


OPTIMIZER_BYTES_PER_PARAMETER = 12
"""What training adds for each trainable weight: its float32 gradient and AdamW's two float32 moments."""

OPTIMIZER_STATE_SHARE = 0.1
"""Largest share of the free memory that AdamW's float32 state may take before the plan picks 8-bit AdamW."""


def choose_optimizer(trainable_parameters: int, free_bytes: int, on_gpu: bool) -> str:
    """transformers' name of the optimizer a run steps with: fused AdamW (one launch for all the adapter's tensors)
    unless, on a GPU, its float32 state would take more than `OPTIMIZER_STATE_SHARE` of the free memory; then
    bitsandbytes' 8-bit AdamW (a quarter of the state, but one launch per tensor: 224 for LoRA on a 16-layer
    model's 7 projections, and Unsloth's default; bitsandbytes' optimizers need CUDA). A LoRA adapter is small:
    r=16 on every projection of Llama-3.2-1B is 11M weights, 135 MB with their gradients."""
    if not on_gpu or OPTIMIZER_BYTES_PER_PARAMETER * trainable_parameters <= OPTIMIZER_STATE_SHARE * free_bytes:
        return "adamw_torch_fused"
    return "adamw_8bit"


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


@dataclass(frozen=True)
class Plan:
    """How a run's batches reach the device, and the numbers it was decided from (config.json's "plan")."""

    padding_free: bool
    """Each batch packed into one row (True) or padded, length-grouped rows (False)."""
    gradient_checkpointing: bool
    """Activations recomputed in the backward."""
    micro_batch: int
    """Rows per device step."""
    accumulation: int
    """Device steps per optimizer step (micro_batch x accumulation = batch_size x gradient_accumulation)."""
    longest_row: int
    """Tokens in the longest training row (max_seq_length where the trainer tokenizes the rows itself)."""
    free_bytes: int
    """Memory free for training when planned (within the model's max_memory_gib)."""
    trainable_parameters: int
    """Weights the run trains (their gradients and optimizer state are kept out of the activation budget)."""
    bytes_per_token: int
    """Calibrated activation memory of one training token under this plan."""
    world_size: int = 1
    """Processes training data-parallel (torchrun's WORLD_SIZE); micro_batch and accumulation are each one's share,
    so an optimizer step takes world_size x micro_batch x accumulation rows."""
    optimizer: str = "adamw_torch_fused"
    """transformers' name of the optimizer (fused AdamW, or 8-bit AdamW where memory is short)."""


def plan(model: Model, rows: list[dict], config: TrainConfig) -> Plan:
    """The device plan of training `model` on `rows` with `config`; settings the config fixes (padding_free,
    gradient_checkpointing not None) are kept, the others are decided for this machine. Under torchrun each
    process plans its share of every optimizer step on its own device."""
    world = distributed.world_size()
    if world > 1:
        four_bit, _ = backend.count_4bit_linear_layers(model)
        check_data_parallel(four_bit, model.device, distributed.local_rank(), world)
    batch_size, accumulation = rank_share(config.batch_size, config.gradient_accumulation, world)
    padding_free = backend.varlen_attention(model) if config.padding_free is None else config.padding_free
    share = PADDING_FREE_SHARE if padding_free else PADDED_SHARE
    longest = max(len(row.get("input_ids", ())) for row in rows) or model.max_seq_length
    free = memory.free_memory_bytes(model.max_memory_gib)
    shape = model.model.config
    checkpointing = (needs_checkpointing(longest, shape, free, share) if config.gradient_checkpointing is None
                     else config.gradient_checkpointing)
    per_token = int(bytes_per_token(shape, checkpointing) * share)
    trainable = trainable_parameters(model, config)
    steps = plan_device_steps(batch_size, accumulation, longest, per_token, free_for_activations(free, trainable))
    optimizer = config.optimizer or choose_optimizer(trainable, free, torch.cuda.is_available())
    return Plan(padding_free, checkpointing, steps.micro_batch, steps.accumulation, longest, free, trainable,
                per_token, world, optimizer)


def rank_share(batch_size: int, gradient_accumulation: int, world_size: int) -> tuple[int, int]:
    """(rows per batch, batches per optimizer step) of one of `world_size` data-parallel processes: the
    batch_size x gradient_accumulation rows of an optimizer step split evenly between them, so that the update is
    the one a single device makes with that batch."""
    if batch_size % world_size == 0:
        return batch_size // world_size, gradient_accumulation
    if batch_size * gradient_accumulation % world_size == 0:
        return batch_size * gradient_accumulation // world_size, 1
    raise FasttuneError(
        f"The {batch_size * gradient_accumulation} rows of an optimizer step do not split evenly between "
        f"{world_size} processes (batch_size={batch_size}, gradient_accumulation={gradient_accumulation}, "
        f"processes={world_size}). Use a batch_size that is a multiple of {world_size}.")


def check_data_parallel(four_bit_layers: int, device, local_rank: int, world_size: int) -> None:
    """Refuse a data-parallel run that cannot work: a 4-bit (bitsandbytes) model cannot be moved once quantized,
    so each process must have loaded it whole on its own CUDA GPU, as `fasttune.load` does under torchrun."""
    if not four_bit_layers:
        return
    if device.type != "cuda":
        raise FasttuneError(
            f"4-bit QLoRA cannot train data-parallel on {device.type} (4-bit layers={four_bit_layers}, "
            f"processes={world_size}): bitsandbytes' 4-bit layers train only on CUDA GPUs, where fasttune runs "
            "them under torchrun with Unsloth or PEFT + TRL, each rank loading the model on its own GPU. On this "
            "machine load the model in 16 bits (fasttune.load(..., load_in_4bit=False)).")
    if device.index != local_rank:
        raise FasttuneError(
            f"This rank's 4-bit model is on {device}, not on its own GPU cuda:{local_rank} (processes={world_size}). "
            "A quantized model cannot be moved: load it with fasttune.load under torchrun, which places each "
            "rank's copy on its own GPU, and not with a device_map of your own.")


def trainable_parameters(model: Model, config: TrainConfig) -> int:
    """Weights the run will train, counted before the adapter is attached: r x (inputs + outputs) on each target
    linear layer, and every weight of the layers trained in full."""
    count = 0
    for name, module in model.model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in config.lora.target_modules and hasattr(module, "in_features"):
            count += config.lora.r * (module.in_features + module.out_features)
        elif leaf in (config.modules_to_save or ()):
            count += sum(parameter.numel() for parameter in module.parameters())
    return count
