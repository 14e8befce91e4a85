"""The machine a result was measured on, as saved beside every benchmark and suite summary."""

from __future__ import annotations

import importlib.metadata
import platform

import torch


def describe_machine() -> dict:
    """Device (the GPU's name, or the CPU and its torch threads), platform, and Python, torch, fasttune versions."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()}"
    return {"device": device, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "fasttune": _fasttune_version()}


def _fasttune_version() -> str:
    try:
        return importlib.metadata.version("fasttune")
    except importlib.metadata.PackageNotFoundError:  # imported from a source folder on the path, not installed
        return "not installed (source folder)"
