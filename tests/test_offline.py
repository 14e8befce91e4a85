"""Offline use and safe loading: no network, no pickled weights, no model code unless asked (hub ids: test_hub.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fasttune
from conftest import BLOCK_SOCKETS

REPO = Path(__file__).resolve().parents[1]
# The main job in a fresh process whose sockets refuse to connect and record who asked. HF_HUB_OFFLINE and CI are
# unset there, so fasttune itself must keep every library (telemetry threads included) off the network.
MAIN_JOB = BLOCK_SOCKETS + """
import sys, threading
import torch, fasttune
model = fasttune.load(sys.argv[1], dtype=torch.float32)
task = fasttune.tasks.get("larger_number")
base = fasttune.evaluate(model, task, limit=8)
run = fasttune.train(model, task, max_steps=2, batch_size=4, limit=8, output_dir=sys.argv[2])
tuned = fasttune.evaluate(run.model, task, limit=8)
for thread in threading.enumerate():  # let background senders (telemetry) run to the end
    if thread is not threading.current_thread() and not thread.daemon:
        thread.join(timeout=30)
print("RESULT", base.n, tuned.n, (run.adapter_dir / "adapter_model.safetensors").exists(), attempts)
"""


def test_main_job_runs_with_the_network_blocked_and_never_tries_it(tiny_model_dir, tmp_path):
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "CI")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    result = subprocess.run([sys.executable, "-c", MAIN_JOB, str(tiny_model_dir), str(tmp_path / "run")],
                            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT 8 8 True []" in result.stdout, result.stdout[-2000:]


CUSTOM_CODE = """
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM
Path({marker!r}).write_text("the model's own code ran")
class CustomConfig(LlamaConfig):
    model_type = "custom_llama"
class CustomLlama(LlamaForCausalLM):
    config_class = CustomConfig
"""


def test_model_code_runs_only_with_trust_remote_code(tiny_model_dir, tmp_path):
    folder, marker = tmp_path / "custom", tmp_path / "code_ran"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "custom_llama.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "custom_llama", "auto_map": {
        "AutoConfig": "custom_llama.CustomConfig", "AutoModelForCausalLM": "custom_llama.CustomLlama"}}))
    with pytest.raises(fasttune.FasttuneError, match=r"ships its own Python code \(trust_remote_code=False\)"):
        fasttune.load(folder, dtype=torch.float32)
    assert not marker.exists()
    model = fasttune.load(folder, dtype=torch.float32, trust_remote_code=True)
    assert type(model.model).__name__ == "CustomLlama" and marker.exists()


def test_pickled_model_weights_are_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = (folder / "model.safetensors")
    from safetensors.torch import load_file

    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(fasttune.FasttuneError, match=r"No safetensors weights in .*pickled .bin"):
        fasttune.load(folder)


def test_pickled_adapter_weights_are_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(fasttune.FasttuneError, match=r"No adapter_model.safetensors in .*safetensors only"):
        fasttune.load(tmp_path)
