"""The adapter card (fasttune.json): written and read in one place, base model found relative to the adapter."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import fasttune
from fasttune.card import CARD_NAME, read_card, resolve_base_model, write_card


@pytest.fixture(scope="module")
def adapter_beside_its_base(tiny_model_dir, tmp_path_factory) -> Path:
    """<root>/base (the tiny Llama) and <root>/adapter (an untrained LoRA on it) whose card says "../base"."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("moved")
    shutil.copytree(tiny_model_dir, root / "base")
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    AutoTokenizer.from_pretrained(root / "base").save_pretrained(root / "adapter")  # as train() saves it
    write_card(root / "adapter", {"base_model": "../base", "task": {"name": "larger_number", "version": 1}})
    return root / "adapter"


def _adapter_folder(tmp_path: Path, card_text: str | None, base_in_config=None) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_in_config}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    if card_text is not None:
        (folder / CARD_NAME).write_text(card_text)
    return folder


def test_a_card_is_written_as_json_and_read_back(tmp_path):
    path = write_card(tmp_path, {"base_model": "/models/x", "output": Path("/runs/a"), "losses": [(1, 2.5)]})
    assert path == tmp_path / "fasttune.json"
    assert read_card(tmp_path) == {"base_model": "/models/x", "output": "/runs/a", "losses": [[1, 2.5]]}
    assert read_card(tmp_path / "nowhere") == {}


def test_a_relative_base_model_is_found_from_the_adapter_folder_not_the_working_directory(
        adapter_beside_its_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_base_model(adapter_beside_its_base) == (adapter_beside_its_base.parent / "base").resolve()
    model = fasttune.load(adapter_beside_its_base, dtype=torch.float32)
    assert model.base_path == (adapter_beside_its_base.parent / "base").resolve()
    assert model.card["base_model"] == "../base" and model.adapter_dir == adapter_beside_its_base
    assert os.getcwd() == str(tmp_path)


def test_an_adapter_and_its_base_moved_together_still_export_and_the_exported_card_holds_anywhere(
        adapter_beside_its_base, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(adapter_beside_its_base.parent, moved)
    monkeypatch.chdir(tmp_path)
    result = fasttune.export(moved / "adapter", tmp_path / "export", formats=("adapter",), max_new_tokens=2)
    card = read_card(result.adapter_dir)
    assert card["base_model"] == str((moved / "base").resolve()) and card["task"]["name"] == "larger_number"
    assert resolve_base_model(result.adapter_dir) == (moved / "base").resolve()


def test_without_a_card_the_base_model_comes_from_the_peft_config(tmp_path, tiny_model_dir):
    folder = _adapter_folder(tmp_path, None, base_in_config=str(tiny_model_dir))
    assert read_card(folder) == {} and resolve_base_model(folder) == tiny_model_dir


def test_a_cut_off_card_is_an_error_naming_the_card_file(tmp_path, tiny_model_dir):
    folder = _adapter_folder(tmp_path, json.dumps({"base_model": str(tiny_model_dir), "task": "x"})[:30])
    message = rf"fasttune.json is not valid JSON, perhaps cut off while it was written \(file={folder}/fasttune.json"
    with pytest.raises(fasttune.FasttuneError, match=message):
        read_card(folder)
    with pytest.raises(fasttune.FasttuneError, match=message):
        fasttune.load(folder)


def test_a_base_model_that_is_not_a_string_is_an_error_naming_the_card_file(tmp_path):
    folder = _adapter_folder(tmp_path, json.dumps({"base_model": ["models", "x"]}))
    with pytest.raises(fasttune.FasttuneError, match=rf"base_model is not a folder path \(base_model=\['models', "
                                                     rf"'x'\], file={folder}/fasttune.json\)"):
        fasttune.load(folder)


def test_a_card_that_is_not_an_object_is_refused(tmp_path):
    folder = _adapter_folder(tmp_path, "[1, 2]")
    with pytest.raises(fasttune.FasttuneError, match=r"not a JSON object \(file=.*fasttune.json, type=list\)"):
        read_card(folder)


def test_a_missing_base_model_folder_says_which_card_to_edit(tmp_path):
    folder = _adapter_folder(tmp_path, json.dumps({"base_model": "../no-such-base"}))
    with pytest.raises(fasttune.FasttuneError, match=rf"not a local folder \(base_model=\.\./no-such-base\). Edit "
                                                     rf"'base_model' in {folder}/fasttune.json"):
        fasttune.export(folder, tmp_path / "out", formats=("adapter",))
