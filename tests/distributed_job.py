"""The job tests/test_distributed.py runs under torchrun (and in one plain process to compare): train the tiny Llama
on larger_number, then evaluate the tuned model by log-likelihood and by generation.

argv: model folder, output folder, JSON of train() settings, seconds to sleep after each step (so that a signal or
a kill lands mid-run), and optionally a rank whose third training forward pass gives NaN logits. Each rank writes its
pid to <output>/pids/<rank> and, after training, its reports to <output>/reports/<rank>/.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

import fasttune
from fasttune import distributed, trainers

EVALUATIONS = {"loglik": fasttune.EvalConfig(engine="loglik", limit=9, batch_size=4),
               "generate": fasttune.EvalConfig(engine="generate", limit=5, batch_size=2, max_new_tokens=4)}


def main(model_dir: str, output_dir: str, settings: str, step_seconds: str, poisoned_rank: str = "") -> None:
    output = Path(output_dir)
    (output / "pids").mkdir(parents=True, exist_ok=True)
    (output / "pids" / str(distributed.rank())).write_text(str(os.getpid()))
    if float(step_seconds):
        step_end = trainers.RichProgress.on_step_end

        def slow_step(callback, *args, **kwargs):
            time.sleep(float(step_seconds))
            return step_end(callback, *args, **kwargs)

        trainers.RichProgress.on_step_end = slow_step  # runs on rank 0; the other ranks wait for it at each step
    model = fasttune.load(model_dir, dtype=torch.float32)
    if poisoned_rank == str(distributed.rank()):
        forwards = []

        def poison_third_forward(module, inputs, output):
            forwards.append(module.training)
            return output * float("nan") if module.training and forwards.count(True) == 3 else output

        model.model.lm_head.register_forward_hook(poison_third_forward)
    task = fasttune.tasks.get("larger_number")
    fasttune.train(model, task, output_dir=str(output / "run"), **json.loads(settings))
    for name, config in EVALUATIONS.items():
        fasttune.evaluate(model, task, config=config).save(output / "reports" / str(distributed.rank()), name)


if __name__ == "__main__":
    main(*sys.argv[1:])
