"""Data-parallel runs: one process per device, started by torchrun, each training and scoring its own share.

torchrun (torch.distributed.run) sets WORLD_SIZE, RANK and LOCAL_RANK in every process it starts; fasttune reads
them here and nowhere else. Training needs little more: the TRL/transformers Trainer takes the process group from
accelerate (gloo on CPUs, NCCL on CUDA GPUs), wraps the model in DistributedDataParallel and gives each rank its
share of every batch. Evaluation splits its examples between the ranks with accelerate and gathers the outputs
back in order. `launch` starts a command under torchrun. In a plain process nothing here touches torch.distributed;
under torchrun the process group accelerate starts stays up for the rest of the process (what torchrun starts it for).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from fasttune.errors import FasttuneError


def world_size() -> int:
    """Processes in this job: torchrun's WORLD_SIZE, 1 in a plain process."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's index in the job (0 in a plain process)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on this machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes the job's files (rank 0)."""
    return rank() == 0


def _state():
    """accelerate's process state, which starts the process group on first use (the Trainer's own set-up)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def split(items: list) -> list:
    """This rank's contiguous share of `items` (the first ranks take one more when they do not divide evenly); all
    of them in a plain process. `gather` puts the shares back together in the original order."""
    if world_size() == 1:
        return items
    with _state().split_between_processes(items) as share:
        return list(share)


def gather(share: list) -> list:
    """Every rank's `share` concatenated in rank order, on every rank; `share` itself in a plain process."""
    if world_size() == 1:
        return share
    from accelerate.utils import gather_object

    return gather_object(share)


def from_main_process(value):
    """Rank 0's `value` (any picklable object) on every rank; `value` itself in a plain process."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    _state()  # the process group, before the first collective
    return broadcast_object_list([value])[0]


def largest(value: int) -> int:
    """The largest `value` any rank passes (e.g. a signal number, 0 for none): every rank must call it at the same
    point. `value` itself in a plain process."""
    return _all_reduce(value, "MAX")


def total(value: int) -> int:
    """The sum of the `value` each rank passes (e.g. the tokens it trained on): every rank must call it at the same
    point. `value` itself in a plain process."""
    return _all_reduce(value, "SUM")


def _all_reduce(value: int, operation: str) -> int:
    if world_size() == 1:
        return value
    import torch

    tensor = torch.tensor([value], device=_state().device)
    torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, operation))
    return int(tensor.item())


def barrier() -> None:
    """Wait until every rank gets here (no-op in a plain process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def device_map() -> dict:
    """from_pretrained's placement under torchrun on CUDA GPUs: the whole model on this rank's GPU (each rank trains
    a full copy), which becomes the process's current device so that memory caps and checks apply to it; {} and no
    change elsewhere."""
    import torch

    if world_size() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        return {"device_map": {"": f"cuda:{local_rank()}"}}
    return {}


def launch(devices: int, argv: list[str]) -> int:
    """Run `argv` (a script and its arguments, or `-m module ...`) in `devices` processes on this machine under
    torchrun, and return torchrun's exit status (non-zero when any rank failed; torchrun then stops the others).

    torchrun runs in a session of its own and this process passes each SIGINT/SIGTERM on to it once: torchrun
    forwards it to every rank, which finishes its step, checkpoints and stops. (A terminal's Ctrl-C would otherwise
    reach every rank twice, from the terminal and from torchrun, and a second signal stops at once.)
    """
    import torch

    if devices < 1:
        raise FasttuneError(f"devices must be at least 1 (devices={devices}).")
    if world_size() > 1:
        raise FasttuneError(f"Already one of {world_size()} torchrun processes (devices={devices}); launch from a "
                            "plain process.")
    if torch.cuda.is_available() and devices > torch.cuda.device_count():
        raise FasttuneError(f"devices={devices} but this machine has {torch.cuda.device_count()} CUDA GPUs. Pass "
                            f"at most {torch.cuda.device_count()}.")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", *argv]
    child = subprocess.Popen(command, start_new_session=True)
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {number: signal.signal(number, lambda number, frame: child.send_signal(number))
                    for number in signals}
    try:
        return child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
