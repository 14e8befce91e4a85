"""The training device's memory: its size, what is free for training, and a cap for a process sharing a GPU.

Torch only (it imports neither Unsloth nor transformers): the speed benchmark's HF and Unsloth workers take the same
cap from here as fasttune's own loading does.
"""

from __future__ import annotations

import os

import torch

from fasttune.errors import FasttuneError

GIB = 2**30


def device_memory_bytes() -> int:
    """All memory of the device that trains: the GPU's, or the machine's RAM on a CPU."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def limit_memory(max_memory_gib: float | None) -> None:
    """Cap this process at `max_memory_gib` GiB of GPU memory (None: no cap).

    On a GPU, CUDA's allocator then refuses to hold more (`torch.cuda.set_per_process_memory_fraction`, for the
    whole process: the latest cap wins). On a CPU nothing is capped; `free_memory_bytes` counts the budget against
    the RAM this process holds instead.
    """
    if max_memory_gib is None:
        return
    device = "GPU" if torch.cuda.is_available() else "machine (RAM)"
    total = device_memory_bytes()
    if not max_memory_gib > 0:
        raise FasttuneError(f"max_memory_gib must be positive (max_memory_gib={max_memory_gib}). Pass the GiB this "
                            "process may use, or None to use the whole device.")
    if max_memory_gib * GIB > total:
        raise FasttuneError(f"max_memory_gib is more than the {device} has (max_memory_gib={max_memory_gib}, "
                            f"the {device} has {total / GIB:.1f} GiB). Pass at most {total / GIB:.1f}, or None "
                            "to use the whole device.")
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(max_memory_gib * GIB / total)


def free_memory_bytes(max_memory_gib: float | None = None) -> int:
    """Memory free for training: what the GPU (or, on a CPU, the machine's RAM) has free, and with a cap no more
    than the cap less what this process already holds (CUDA memory reserved by its allocator; on a CPU, its
    resident memory)."""
    if torch.cuda.is_available():
        free, held = torch.cuda.mem_get_info()[0], torch.cuda.memory_reserved()
    else:
        free, held = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), resident_bytes()
    return within_budget(free, held, max_memory_gib)


def within_budget(device_free: int, held: int, max_memory_gib: float | None) -> int:
    """The free bytes a process holding `held` bytes may still take under a cap of `max_memory_gib` GiB."""
    if max_memory_gib is None:
        return device_free
    return max(0, min(device_free, int(max_memory_gib * GIB) - held))


def resident_bytes() -> int:
    """Bytes of memory this process holds now (its resident set)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
