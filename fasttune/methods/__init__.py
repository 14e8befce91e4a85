"""Training methods, one module each, registered in METHODS (method name -> the method).

A method implements `fasttune.methods.base.Method`: `config` (its config class, a TrainConfig subclass whose class
attribute `method` is the name it is registered under), `prepare(model, task, config) -> TrainingData` and
`make_trainer(model, task, prepared, config, device_plan, output_dir, callbacks)`. Adding a method: one module
here and one line in METHODS. Method modules import configs, plan, sampling and trainers, never training.
"""

from __future__ import annotations

from fasttune.methods import cpt, dpo, grpo, kto, orpo, rft, sft
from fasttune.methods.base import Method

METHODS: dict[str, Method] = {
    "sft": sft.Sft(),
    "cpt": cpt.Cpt(),
    "dpo": dpo.Dpo(),
    "orpo": orpo.Orpo(),
    "kto": kto.Kto(),
    "grpo": grpo.Grpo(),
    "rft": rft.Rft(),
}
