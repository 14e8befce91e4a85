"""Calling fasttune leaves the host process as it found it: environment, matplotlib backend, progress bars, hub
constants and TRL's symbols. Checked in a fresh interpreter, so other tests' imports and settings cannot interfere."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import matplotlib
    matplotlib.use("pdf")  # a host backend that is not fasttune's Agg
    import datasets, huggingface_hub.constants as hub, transformers
    import trl.trainer.utils as trl_utils

    def state():
        return {"env": dict(os.environ), "backend": matplotlib.get_backend(),
                "transformers_bars": transformers.utils.logging.is_progress_bar_enabled(),
                "datasets_bars_off": datasets.utils.are_progress_bars_disabled(),
                "chunked_log_probs": repr(trl_utils._ChunkedLogProbFunction),
                "hub_offline": hub.HF_HUB_OFFLINE, "hub_offline_mode": hub.is_offline_mode(),
                "hub_telemetry_off": hub.HF_HUB_DISABLE_TELEMETRY}

    before = state()
    import torch
    import fasttune
    from fasttune.plots import plot_comparison
    model_dir, out = sys.argv[1], sys.argv[2]
    after_import = state()
    model = fasttune.load(model_dir, dtype=torch.float32)
    after_load = state()
    task = fasttune.tasks.get("larger_number")
    small = {"max_steps": 2, "batch_size": 4, "limit": 8, "logging_steps": 1, "warmup_ratio": 0.0}
    run = fasttune.train(model, task, output_dir=out + "/sft", **small)
    after_sft = state()
    fasttune.train(fasttune.load(model_dir, dtype=torch.float32), task, "dpo", output_dir=out + "/dpo",
                   sampling={"samples": 2, "max_new_tokens": 4, "batch_size": 8}, **small)
    after_dpo = state()
    report = fasttune.evaluate(run.model, task, limit=4)
    after_evaluate = state()
    plot_comparison(["base", "tuned"], [0.5, 0.6], [(0.4, 0.6), (0.5, 0.7)], out + "/bars.png", "t", "acc")
    print(json.dumps({"before": before, "after_import": after_import, "after_load": after_load,
                      "after_sft": after_sft, "after_dpo": after_dpo, "after_evaluate": after_evaluate,
                      "after_plot": state(), "losses": len(run.losses), "n": report.n,
                      "plots": sorted(os.listdir(out + "/sft")) + os.listdir(out)}))
''')


def test_load_train_evaluate_and_plot_leave_the_host_process_unchanged(tiny_model_dir, tmp_path):
    # No offline variables: loading a local model must not need them, nor set them for the rest of the process.
    env = {name: value for name, value in os.environ.items()
           if name not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "MPLBACKEND",
                           "UNSLOTH_RETURN_LOGITS", "UNSLOTH_DISABLE_STATISTICS", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_dir), str(tmp_path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = json.loads(result.stdout.strip().splitlines()[-1])
    before = states.pop("before")
    assert before["backend"] == "pdf" and before["transformers_bars"] and not before["datasets_bars_off"]
    assert before["chunked_log_probs"] == "None"  # no Triton here: fasttune's CPU stand-in must not outlive train
    assert not before["hub_offline"] and not before["hub_telemetry_off"]
    assert states.pop("losses") == 2 and states.pop("n") == 4
    assert "loss.png" in states["plots"] and "bars.png" in states.pop("plots")
    for moment, state in states.items():
        assert state == before, moment
