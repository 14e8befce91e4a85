"""Models and datasets by hub id, read from a Hugging Face cache that each test lays out itself, as a download does:
blobs, a snapshot of links to them, and refs/main naming the snapshot's commit."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fasttune
from conftest import BLOCK_SOCKETS
from fasttune import hub

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "fasttune-test/tiny-llama"
DATASET_ID = "fasttune-test/tiny-rows"


def lay_out_as_hub_cache(folder: Path, hub_cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Put the files of `folder` into `hub_cache` the way huggingface_hub stores a downloaded repository; returns
    the snapshot folder."""
    repo = hub_cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hf_home(tmp_path, tiny_model_dir):
    """A HF_HOME whose hub cache holds the tiny model and a one-file dataset."""
    home = tmp_path / "hf_home"
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "train.jsonl").write_text('{"instruction": "Say hi.", "output": "hi"}\n')
    lay_out_as_hub_cache(tiny_model_dir, home / "hub", MODEL_ID)
    lay_out_as_hub_cache(rows, home / "hub", DATASET_ID, "dataset")
    return home


@pytest.fixture
def offline_hub(monkeypatch, hf_home):
    """huggingface_hub as HF_HOME=hf_home HF_HUB_OFFLINE=1 set it up at its import (it reads both only then)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hf_home


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_a_model_hub_id_loads_from_the_hub_cache_offline_with_the_same_weights(offline_hub, no_network,
                                                                              tiny_model_dir):
    model = fasttune.load(MODEL_ID, dtype=torch.float32)
    folder = fasttune.load(tiny_model_dir, dtype=torch.float32)
    assert model.base_path.parent == offline_hub / "hub" / "models--fasttune-test--tiny-llama" / "snapshots"
    assert model.name == "tiny-llama"
    ids = torch.tensor([folder.tokenizer("Which number is larger?")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model.model(input_ids=ids).logits, folder.model(input_ids=ids).logits)
    assert model.tokenizer.chat_template == folder.tokenizer.chat_template
    assert no_network == []


def test_a_dataset_hub_id_gives_its_cached_snapshot_folder(offline_hub, no_network):
    folder = hub.dataset_folder(DATASET_ID)
    assert folder.parent.parent.name == "datasets--fasttune-test--tiny-rows"
    assert sorted(path.name for path in folder.iterdir()) == ["train.jsonl"]
    assert json.loads((folder / "train.jsonl").read_text()) == {"instruction": "Say hi.", "output": "hi"}
    assert no_network == []


def test_an_instruction_task_reads_its_train_file_from_a_hub_dataset_id(offline_hub, no_network, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = fasttune.tasks.get("instruction", train_file=DATASET_ID, test_percent=0)
    examples = task.load("train")
    assert len(examples) == 1 and task.format(examples[0]).completion == "hi"
    assert no_network == []


def test_an_uncached_hub_id_offline_is_an_error_naming_it_and_the_network_is_never_tried(offline_hub, no_network):
    with pytest.raises(fasttune.FasttuneError, match=r"The model hub id 'fasttune-test/not-cached' is not in the "
                                                     r"local hub cache, and HF_HUB_OFFLINE=1 allows nothing else "
                                                     r".*hf_home/hub.*`hf download fasttune-test/not-cached`"):
        fasttune.load("fasttune-test/not-cached")
    with pytest.raises(fasttune.FasttuneError, match=r"The dataset hub id 'fasttune-test/nothing' is not in the "
                                                     r"local hub cache.*--repo-type dataset"):
        hub.dataset_folder("fasttune-test/nothing")
    assert no_network == []


def test_an_adapter_from_the_hub_loads_with_the_base_it_names_by_hub_id(offline_hub, no_network, tmp_path,
                                                                        tiny_model_dir):
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    adapter = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")  # PEFT's own files only: no fasttune card
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**config,
                                                                          "base_model_name_or_path": MODEL_ID}))
    lay_out_as_hub_cache(tmp_path / "adapter", offline_hub / "hub", "fasttune-test/tiny-lora")
    model = fasttune.load("fasttune-test/tiny-lora", dtype=torch.float32)
    assert model.base_path.parent.parent.name == "models--fasttune-test--tiny-llama"
    assert model.adapter_dir.parent.parent.name == "models--fasttune-test--tiny-lora"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model.model(input_ids=ids).logits, adapter.eval()(input_ids=ids).logits)
    assert no_network == []


def test_a_cached_model_with_pickled_weights_only_is_refused(offline_hub, tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((tiny_model_dir / name).read_bytes())
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    lay_out_as_hub_cache(pickled, offline_hub / "hub", "fasttune-test/pickled")
    with pytest.raises(fasttune.FasttuneError, match=r"No safetensors weights in .*models--fasttune-test--pickled"):
        fasttune.load("fasttune-test/pickled")


REPO_FILES = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
              "model.safetensors.index.json", "pytorch_model.bin", "training_args.bin", "original/consolidated.00.pth",
              "flax_model.msgpack", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "chat_template.jinja", "merges.txt", "vocab.json", "tokenizer.model", "modeling_custom.py",
              "configuration_custom.py"]


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_a_download_fetches_safetensors_and_tokenizer_files_and_code_only_when_trusted(monkeypatch, tmp_path,
                                                                                       trust_remote_code):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    asked = {}

    def snapshot_download(repo_id, **kwargs):
        asked.update(kwargs, repo_id=repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert hub.model_folder("org/model", trust_remote_code=trust_remote_code) == tmp_path
    fetched = set(filter_repo_objects(REPO_FILES, allow_patterns=asked["allow_patterns"]))  # the hub's own filter
    assert asked["repo_id"] == "org/model" and asked["repo_type"] == "model"
    code = {"modeling_custom.py", "configuration_custom.py"}
    pickled = {"pytorch_model.bin", "training_args.bin", "original/consolidated.00.pth", "flax_model.msgpack"}
    assert fetched == set(REPO_FILES) - pickled - (set() if trust_remote_code else code)


def test_what_reads_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert hub.looks_like_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and hub.looks_like_hub_id("meta-llama/Llama-3.2-1B")
    assert not hub.looks_like_hub_id("runs/missing")  # a local folder that does not exist yet
    assert not any(hub.looks_like_hub_id(name) for name in ("./a/b", "/a/b", "~/a", "a/b/c", "gpt2", None))


FIND_BY_ID = BLOCK_SOCKETS + """
import json, sys
import fasttune
from fasttune import hub
folder = hub.model_folder(sys.argv[1])
try:
    hub.model_folder("fasttune-test/not-cached")
    error = None
except fasttune.FasttuneError as raised:
    error = str(raised)
print("RESULT", json.dumps({"folder": str(folder), "error": error, "attempts": attempts}))
"""


def test_hf_home_and_hf_hub_offline_set_before_the_process_starts_are_honoured(hf_home):
    """The real set-up, in a fresh process: huggingface_hub reads the variables at its import. (load() of the folder
    found this way is the test above.)"""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_CACHE", "HF_HOME")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", FIND_BY_ID, MODEL_ID], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert Path(found["folder"]).parent == hf_home / "hub" / "models--fasttune-test--tiny-llama" / "snapshots"
    assert (Path(found["folder"]) / "model.safetensors").is_file() and found["attempts"] == []
    assert "'fasttune-test/not-cached' is not in the local hub cache" in found["error"]
