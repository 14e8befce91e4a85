"""One interface to every model fasttune scores and generates with: a transformers model or a GGUF file.

`engine_for` picks the engine of a model; evaluation, sampling and export checks call only the `Engine` protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

from fasttune.backend import Model
from fasttune.engines.gguf_file import GgufEngine
from fasttune.engines.protocol import Completion, Engine
from fasttune.engines.transformers_model import TransformersEngine

ENGINES = {"transformers": TransformersEngine.for_model, "gguf": GgufEngine.open}
"""How each kind of model is opened as an engine."""

__all__ = ["ENGINES", "Completion", "Engine", "GgufEngine", "TransformersEngine", "engine_for"]


def engine_for(model: Model | Engine | str | os.PathLike) -> Engine:
    """The engine of a loaded fasttune Model (switched to inference mode) or of a .gguf file; an engine as is."""
    if isinstance(model, Engine):
        return model
    return ENGINES["transformers" if isinstance(model, Model) else "gguf"](model if isinstance(model, Model)
                                                                          else Path(model))
