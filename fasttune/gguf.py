"""GGUF files for llama.cpp and Ollama: llama.cpp's own converter, its quantizer, and an Ollama Modelfile.

The converter (`convert_hf_to_gguf.py` with its `conversion/` and `gguf-py/` folders) is not in the
llama-cpp-python wheel. `fetch_converter()` (CLI: `fasttune fetch-converter`) takes it once from
the llama-cpp-python source package of the installed version, through pip, into fasttune's cache; after that
export runs offline. A llama.cpp checkout can be used instead (`llama_cpp_dir=`).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from fasttune.embedded import cache_dir
from fasttune.errors import FasttuneError

CONVERTER_TYPES = ("f16", "bf16", "q8_0")  # written by the converter itself; the rest go through the quantizer
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
FETCH_COMMAND = "fasttune fetch-converter"


def quant_types() -> list[str]:
    """Every GGUF type fasttune can write: the converter's, plus each file type of llama.cpp's quantizer."""
    import llama_cpp

    quantizer = [name.removeprefix("LLAMA_FTYPE_MOSTLY_").lower() for name in dir(llama_cpp)
                 if name.startswith("LLAMA_FTYPE_MOSTLY_")]
    return sorted(set(CONVERTER_TYPES) | set(quantizer))


def check_quant_types(quants) -> None:
    known = quant_types()
    unknown = [quant for quant in quants if quant not in known]
    if unknown:
        raise FasttuneError(f"Unknown GGUF type (gguf_quants={unknown}). Available: {', '.join(known)}.")


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def converter_dir(llama_cpp_dir: str | Path | None = None) -> Path:
    """The folder holding convert_hf_to_gguf.py: a user's llama.cpp checkout, or the cached copy."""
    folder = Path(llama_cpp_dir).expanduser() if llama_cpp_dir else cache_dir() / "llama.cpp" / llama_cpp_version()
    if not (folder / "convert_hf_to_gguf.py").is_file():
        hint = ("point llama_cpp_dir at a llama.cpp checkout" if llama_cpp_dir else
                f"run `{FETCH_COMMAND}` once (needs the package registry), or pass llama_cpp_dir= a llama.cpp checkout")
        raise FasttuneError(f"llama.cpp's GGUF converter is missing (converter={folder / 'convert_hf_to_gguf.py'}). "
                            f"To get it, {hint}.")
    return folder


def fetch_converter(sdist: str | Path | None = None) -> Path:
    """Put llama.cpp's converter into fasttune's cache, from the llama-cpp-python source package.

    `sdist` is a downloaded `llama_cpp_python-<version>.tar.gz`; without it pip downloads the installed version's.
    """
    version = llama_cpp_version()
    target = cache_dir() / "llama.cpp" / version
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        if sdist is None:
            command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                       f"llama-cpp-python=={version}", "-d", download]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise FasttuneError(f"pip could not download the llama-cpp-python {version} source package "
                                    f"(command={' '.join(command)}): {result.stderr.strip()[-500:]}")
            sdist = next(Path(download).glob("*.tar.gz"))
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _extract_converter(Path(sdist), partial)
        partial.replace(target)
    return target


def _extract_converter(sdist: Path, folder: Path) -> None:
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        prefix = f"{root}/vendor/llama.cpp/"
        members = [member for member in archive.getmembers() if member.name.startswith(prefix)
                   and member.name[len(prefix):].split("/")[0] in CONVERTER_MEMBERS
                   and (member.isfile() or member.isdir())]
        if not any(member.name.endswith("convert_hf_to_gguf.py") for member in members):
            raise FasttuneError(f"No llama.cpp converter inside {sdist} (expected {prefix}convert_hf_to_gguf.py).")
        for member in members:
            member.name = member.name[len(prefix):]
        archive.extractall(folder, members=members, filter="data")


def convert(hf_folder: Path, out_file: Path, outtype: str, llama_cpp_dir: str | Path | None = None) -> Path:
    """Convert a Hugging Face folder to one GGUF file with llama.cpp's converter (f16, bf16 or q8_0)."""
    script = converter_dir(llama_cpp_dir) / "convert_hf_to_gguf.py"
    command = [sys.executable, str(script), str(hf_folder), "--outfile", str(out_file), "--outtype", outtype]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out_file.is_file():
        raise FasttuneError(f"llama.cpp's converter failed on {hf_folder} (outtype={outtype}, exit code "
                            f"{result.returncode}): {result.stderr.strip()[-800:]}")
    return out_file


def quantize(source: Path, out_file: Path, quant: str) -> Path:
    """Quantize a GGUF file with llama.cpp's quantizer (e.g. q4_k_m)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), ctypes.byref(params))
    if status != 0 or not out_file.is_file():
        raise FasttuneError(f"llama.cpp's quantizer failed (gguf_quants={quant}, status {status}) on {source}.")
    return out_file


def modelfile(gguf_name: str, tokenizer, end_of_turn: str) -> str:
    """An Ollama Modelfile for `gguf_name` (beside it): the chat template as an Ollama template, and stop tokens.

    The template is derived by rendering the tokenizer's own chat template around placeholders, so a single turn
    renders exactly as in transformers.
    """
    pieces = ollama_template_pieces(tokenizer)
    stops = dict.fromkeys(token for token in (end_of_turn, tokenizer.eos_token) if token)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{pieces["template"]}"""']
    if pieces["system"]:
        lines.append(f'SYSTEM """{pieces["system"]}"""')
    lines += [f'PARAMETER stop "{token}"' for token in stops]
    return "\n".join(lines) + "\n"


def ollama_template_pieces(tokenizer) -> dict[str, str]:
    """{"template": Ollama's Go template, "system": the chat template's default system prompt or ""}."""
    marks = {name: f"\u2063{name}\u2063" for name in ("system", "prompt", "response")}
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": marks["system"]}, {"role": "user", "content": marks["prompt"]},
         {"role": "assistant", "content": marks["response"]}], tokenize=False)
    default = tokenizer.apply_chat_template([{"role": "user", "content": marks["prompt"]}], tokenize=False,
                                            add_generation_prompt=True)
    before, rest = with_system.split(marks["system"])
    between, rest = rest.split(marks["prompt"])
    after_prompt, after_response = rest.split(marks["response"])
    shown_default = default.split(marks["prompt"])[0]
    system = ""
    if (shown_default.startswith(before) and shown_default.endswith(between)
            and len(shown_default) > len(before + between)):
        system = shown_default[len(before):len(shown_default) - len(between)]
    if system:  # the chat template always writes a system turn
        head = f"{before}{{{{ .System }}}}{between}"
    else:
        head = f"{{{{ if .System }}}}{before}{{{{ .System }}}}{between}{{{{ else }}}}{shown_default}{{{{ end }}}}"
    template = f"{head}{{{{ .Prompt }}}}{after_prompt}{{{{ .Response }}}}{after_response}"
    return {"template": template, "system": system}
