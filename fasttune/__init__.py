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

from fasttune import tasks  # the top-level tasks/ folder, which the packaging installs as fasttune.tasks
from fasttune.errors import FasttuneError
from fasttune.task import Sample, Task

__version__ = "0.1.0"

_LAZY = {
    "load": "fasttune.backend", "Model": "fasttune.backend",
    "train": "fasttune.training", "TrainConfig": "fasttune.configs", "LoraConfig": "fasttune.configs",
    "Run": "fasttune.training", "CptConfig": "fasttune.methods.cpt", "DpoConfig": "fasttune.methods.dpo",
    "OrpoConfig": "fasttune.methods.orpo", "KtoConfig": "fasttune.methods.kto", "GrpoConfig": "fasttune.methods.grpo",
    "RftConfig": "fasttune.methods.rft", "SamplingConfig": "fasttune.sampling",
    "evaluate": "fasttune.evaluation", "EvalConfig": "fasttune.evaluation", "Report": "fasttune.report",
    "compare": "fasttune.comparison", "Comparison": "fasttune.comparison",
    "export": "fasttune.exporting", "ExportResult": "fasttune.exporting",
    "merge_adapters": "fasttune.merging", "load_run": "fasttune.runs", "SavedRun": "fasttune.runs",
    "OwnDataConfig": "fasttune.own_data",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fasttune' has no attribute {name!r}")


__all__ = ["FasttuneError", "Sample", "Task", "tasks", *_LAZY]
