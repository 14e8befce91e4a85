"""fasttune: fine-tune and honestly evaluate LLMs fast on one GPU (or a CPU).

    import fasttune
    task = fasttune.tasks.get("rte", data_dir="../shared/data/rte")
    model = fasttune.load()                      # embedded SmolLM2-135M-Instruct
    base = fasttune.evaluate(model, task)
    run = fasttune.train(model, task)
    print(fasttune.compare(base, fasttune.evaluate(run.model, task)))

`import fasttune` is cheap: torch, transformers and (on a GPU) Unsloth load on first use of load/train/evaluate.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# In a source checkout the built-in tasks sit in ../tasks; an installed wheel has them at fasttune/tasks.
if not (Path(__file__).parent / "tasks").is_dir() and (Path(__file__).parent.parent / "tasks").is_dir():
    __path__.append(str(Path(__file__).parent.parent))

from fasttune import tasks  # noqa: E402
from fasttune.errors import FasttuneError  # noqa: E402
from fasttune.task import Sample, Task  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "load": "fasttune.backend", "Model": "fasttune.backend",
    "train": "fasttune.training", "TrainConfig": "fasttune.training", "LoraConfig": "fasttune.training",
    "Run": "fasttune.training", "CptConfig": "fasttune.pretraining", "DpoConfig": "fasttune.preference",
    "OrpoConfig": "fasttune.preference", "KtoConfig": "fasttune.preference", "GrpoConfig": "fasttune.rewards",
    "RftConfig": "fasttune.rejection", "SamplingConfig": "fasttune.rewards",
    "evaluate": "fasttune.evaluation", "EvalConfig": "fasttune.evaluation", "Report": "fasttune.report",
    "compare": "fasttune.comparison", "Comparison": "fasttune.comparison",
    "export": "fasttune.exporting", "ExportResult": "fasttune.exporting",
    "merge_adapters": "fasttune.merging",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fasttune' has no attribute {name!r}")


__all__ = ["FasttuneError", "Sample", "Task", "tasks", *_LAZY]
