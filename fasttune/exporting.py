"""Export a tuned model: LoRA adapter, merged 16-bit weights, GGUF for llama.cpp / Ollama; each checked by running.

    result = fasttune.export(run, "exports/rte", formats=("adapter", "merged_16bit", "gguf"),
                             gguf_quants=("q8_0", "q4_k_m"))
    fasttune export --source runs/rte/adapter --out_dir exports/rte --gguf_quants q8_0 q4_k_m
    fasttune fetch-converter      # once, after installation: llama.cpp's GGUF converter

Everything is written into a hidden sibling folder, loaded back and run on a few prompts, and only then renamed to
`out_dir`: a half-written export never looks complete. Weights are read and written as safetensors only.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from fasttune import atomic, chat_templates, gguf, hooks
from fasttune.card import CARD_NAME, read_card, resolve_base_model, write_card
from fasttune.errors import FasttuneError, unknown_name
from fasttune.progress import console, new_progress

FORMATS = ("adapter", "merged_16bit", "gguf")
CHECK_PROMPTS = ("What is the capital of France?",
                 "Which number is larger, 412 or 97? Answer with the number only.",
                 "Write one sentence about the sea.")
_ADAPTER_FILES = re.compile(r".*\.(safetensors|json|jinja|txt|model)$")


@dataclass
class Check:
    """One written artifact loaded back and run: its greedy outputs, and agreement with the reference artifact."""

    artifact: str
    engine: str
    outputs: list[str]
    tokens: list[list[int]] = field(repr=False)
    reference: str | None = None
    agreement: float | None = None
    """Share of prompts whose greedy tokens equal the reference's."""
    same_prompt_tokens: bool | None = None
    """GGUF only: llama.cpp tokenized every rendered prompt exactly as transformers did."""


@dataclass
class ExportResult:
    """What `export` wrote and what running it gave."""

    out_dir: Path
    adapter_dir: Path | None
    merged_dir: Path | None
    gguf_files: dict[str, Path]
    modelfiles: dict[str, Path]
    checks: list[Check]
    prompts: list[str]
    seconds: float

    def to_dict(self) -> dict:
        summary = asdict(self)
        for check in summary["checks"]:
            check.pop("tokens")
        return json.loads(json.dumps(summary, default=str))

    def __rich__(self):
        from rich.table import Table

        table = Table(title=f"export {self.out_dir} ({self.seconds:.0f}s)")
        for column in ("artifact", "engine", "agrees with", "greedy agreement", "first output"):
            table.add_column(column, overflow="fold")
        for check in self.checks:
            agreement = "" if check.agreement is None else f"{100 * check.agreement:.0f}%"
            table.add_row(check.artifact, check.engine, check.reference or "", agreement, check.outputs[0][:60])
        return table


@dataclass
class ExportConfig:
    """What `export` writes and how it checks it (its keyword arguments, as a config)."""

    formats: list[Literal["adapter", "merged_16bit", "gguf"]] = field(default_factory=lambda: list(FORMATS))
    """Artifacts to write: the LoRA adapter, merged 16-bit weights, GGUF files."""
    gguf_quants: list[str] = field(default_factory=lambda: ["q8_0", "q4_k_m"])
    """GGUF types, one file each (f16, bf16, q8_0 by llama.cpp's converter; q4_k_m and the others by its
    quantizer)."""
    merged_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    """Dtype of the merged weights."""
    prompts: list[str] | None = None
    """Prompts every artifact is run on greedily as a check (default: three built-in ones)."""
    max_new_tokens: int = 16
    """Tokens generated per check prompt."""
    llama_cpp_dir: str | None = None
    """A llama.cpp checkout holding convert_hf_to_gguf.py (default: the converter fetched into fasttune's cache)."""
    overwrite: bool = False
    """Replace an existing export folder."""

    def __post_init__(self):
        self.formats, self.gguf_quants = list(self.formats), list(self.gguf_quants)
        for name in self.formats:
            if name not in FORMATS:
                raise unknown_name("export format", name, list(FORMATS))
        if self.merged_dtype not in ("bfloat16", "float16"):
            raise FasttuneError(f"merged_dtype must be bfloat16 or float16 (merged_dtype={self.merged_dtype!r}).")
        gguf.check_quant_types(self.gguf_quants if "gguf" in self.formats else ())


@hooks.library_scope()
def export(source, out_dir: str | Path, formats=FORMATS, gguf_quants=("q8_0", "q4_k_m"), *,
           merged_dtype: Literal["bfloat16", "float16"] = "bfloat16", prompts: list[str] | None = None,
           max_new_tokens: int = 16, reports=(), llama_cpp_dir: str | Path | None = None,
           overwrite: bool = False) -> ExportResult:
    """Write `source` (a fasttune Model or Run, an adapter folder, or a model folder) to `out_dir` in `formats`.

    adapter: PEFT safetensors with the fasttune.json card (base, task, training settings; metrics of `reports`).
    merged_16bit: LoRA merged in float32 into the base weights reloaded from the base folder, saved in
    `merged_dtype` with the tokenizer and chat template. gguf: one file per type of `gguf_quants` (f16, bf16, q8_0
    by llama.cpp's converter, the rest by its quantizer) and an Ollama Modelfile each. Every artifact is then
    loaded and run greedily on `prompts`; the result records the outputs and their agreement. The keyword
    arguments other than `reports` are the fields of ExportConfig.
    """
    started = time.perf_counter()
    settings = ExportConfig(list(formats), list(gguf_quants), merged_dtype, prompts, max_new_tokens,
                            None if llama_cpp_dir is None else str(llama_cpp_dir), overwrite)
    formats = tuple(settings.formats)
    gguf_quants = tuple(settings.gguf_quants) if "gguf" in formats else ()
    if gguf_quants:
        gguf.converter_dir(llama_cpp_dir)  # fail before any work when the converter is missing
    adapter_dir, base_path, card = _resolve(source)
    if adapter_dir is not None:
        _require_safetensors(adapter_dir)  # PEFT would fall back on a pickled adapter_model.bin
    if "adapter" in formats and adapter_dir is None:
        raise FasttuneError(f"There is no adapter to export (source={source}): formats='adapter' needs a tuned "
                            "model, a Run or an adapter folder.")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists():
        _check_replaceable(out_dir, overwrite, adapter_dir, base_path)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    work = staging / ".work"  # intermediate files, deleted before the rename
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", base_path.name).strip(".-") or "model"
    prompts = list(prompts or CHECK_PROMPTS)
    merged = staging / "merged_16bit" if "merged_16bit" in formats else work / "merged_16bit"
    needs_merge = "merged_16bit" in formats or gguf_quants
    gguf_files: dict[str, Path] = {}
    modelfiles: dict[str, Path] = {}
    checks: list[Check] = []
    total = ("adapter" in formats) * 2 + bool(needs_merge) * 2 + len(gguf_quants) * 2 + 1
    with _steps(total) as step:
        if "adapter" in formats:
            with step("write adapter"):
                _write_adapter(adapter_dir, _inside(staging / "adapter", staging), card, reports)
            with step("check adapter (transformers)"):
                checks.append(_check_transformers("adapter", staging / "adapter", base_path, prompts,
                                                  max_new_tokens))
        if needs_merge:
            with step(f"merge LoRA into {merged_dtype} weights"):
                merge_to_16bit(adapter_dir, base_path, _inside(merged, staging), merged_dtype, card)
            with step("check merged_16bit (transformers)"):
                checks.append(_check_transformers("merged_16bit", merged, None, prompts, max_new_tokens,
                                                  reference=checks[0] if checks else None))
        merged_check = checks[-1] if needs_merge else None
        for quant in gguf_quants:
            target = _inside(staging / "gguf" / f"{stem}-{quant}.gguf", staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            with step(f"write GGUF {quant}"):
                _write_gguf(merged, target, quant, work, llama_cpp_dir)
                modelfiles[quant] = _write_modelfile(target, merged)
                gguf_files[quant] = target
            with step(f"check GGUF {quant} (llama.cpp)"):
                checks.append(_check_gguf(target, merged, prompts, max_new_tokens, merged_check))
        with step("finish"):
            shutil.rmtree(work, ignore_errors=True)
            result = ExportResult(out_dir, out_dir / "adapter" if "adapter" in formats else None,
                                  out_dir / "merged_16bit" if "merged_16bit" in formats else None,
                                  {q: out_dir / "gguf" / p.name for q, p in gguf_files.items()},
                                  {q: out_dir / "gguf" / p.name for q, p in modelfiles.items()},
                                  checks, prompts, 0.0)
            result.seconds = time.perf_counter() - started
            (staging / "export.json").write_text(json.dumps(result.to_dict(), indent=2))
            atomic.replace_folder(staging, out_dir)
    console.print(result)
    return result


@dataclass
class Parity:
    """Two evaluations of one task split (e.g. merged vs GGUF): metric delta and how often the answers agree."""

    labels: tuple[str, str]
    metric: str
    a: float
    b: float
    delta: float
    agreement: float
    """Share of paired examples with the same parsed answer."""
    n: int
    comparison: object = field(repr=False)

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "comparison"} | {
            "p_value": self.comparison.rows[0].p_value, "test": self.comparison.rows[0].test}


def parity(a, b, labels: tuple[str, str] = ("merged", "gguf")) -> Parity:
    """Parity of reports `a` and `b` of the same task split: primary-metric delta (b - a) and answer agreement."""
    from fasttune.comparison import compare

    comparison = compare(a, b, labels=labels)
    answers = {record["id"]: record["parsed"] for record in b.records}
    paired = [(record["parsed"], answers[record["id"]]) for record in a.records if record["id"] in answers]
    row = next(row for row in comparison.rows if row.metric == a.primary)
    return Parity(labels, a.primary, row.a, row.b, row.b - row.a,
                  sum(x == y for x, y in paired) / len(paired), len(paired), comparison)


def merge_to_16bit(adapter_dir: Path | None, base_path: Path, folder: Path, dtype: str, card: dict) -> Path:
    """Merge the adapter into the float32 base weights (never 4-bit ones), cast to `dtype`, save as safetensors."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fasttune import backend, embedded

    config = json.loads((base_path / "config.json").read_text())
    if config.get("quantization_config"):
        raise FasttuneError(f"The base model is a quantized checkpoint (base_model={base_path}, "
                            f"quantization_config={config['quantization_config'].get('quant_method')}); merging into "
                            "quantized weights loses accuracy. Point the adapter card's base_model at 16-bit weights.")
    _require_safetensors(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, local_files_only=True,
                                                 use_safetensors=True)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir or base_path, local_files_only=True)
    trained_with = chat_templates.from_card(card)
    if trained_with is not None:  # the card's template wins over the folder's (e.g. a base given chat_template=)
        tokenizer.chat_template = trained_with
    if embedded.has_byte_fallback_mismatch(tokenizer):
        embedded.fix_byte_level_decoding(tokenizer)
    end = backend.end_of_turn_token(tokenizer)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(end)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_card(folder, {**card, "merged_from": str(adapter_dir) if adapter_dir else None, "dtype": dtype})
    return folder


def _resolve(source) -> tuple[Path | None, Path, dict]:
    """(adapter folder or None, base model folder, card) of a Model, a Run, an adapter folder or a model folder.

    The card's base_model is the base folder's absolute path, so that the card holds wherever it is written."""
    adapter_dir, base = _find_base(source)
    card = read_card(adapter_dir) if adapter_dir is not None else _loaded_card(source)
    return adapter_dir, base, {**card, "base_model": str(base.absolute())}


def _loaded_card(source) -> dict:
    """A model loaded without an adapter carries a card only for a chat template given to load()."""
    from fasttune.backend import Model

    return source.card if isinstance(source, Model) else {}


def _find_base(source) -> tuple[Path | None, Path]:
    from fasttune.backend import Model
    from fasttune.training import Run

    if isinstance(source, Run):
        source = source.model
    if isinstance(source, Model):
        if source.adapter_dir is None and hasattr(source.model, "peft_config"):
            raise FasttuneError("The model carries LoRA weights that were never saved (adapter_dir=None). Export "
                                "the Run returned by fasttune.train, or a saved adapter folder.")
        return source.adapter_dir, source.base_path
    path = Path(source).expanduser()
    if (path / "adapter_config.json").is_file():
        return path, resolve_base_model(path)
    if (path / "config.json").is_file():
        return None, path
    raise FasttuneError(f"Nothing to export at {path} (source={source}): expected a fasttune Model or Run, an "
                        "adapter folder (adapter_config.json) or a model folder (config.json).")


def _check_replaceable(out_dir: Path, overwrite: bool, adapter_dir: Path | None, base_path: Path) -> None:
    """Refuse to replace `out_dir` unless asked to and it is an earlier fasttune export (it holds export.json) that
    holds neither the source adapter nor the base model."""
    if not overwrite:
        raise FasttuneError(f"The export folder exists (out_dir={out_dir}). Choose another or pass overwrite=True.")
    for name, folder in (("source adapter", adapter_dir), ("base model", base_path)):
        folder = folder.resolve() if folder is not None else None
        if folder is not None and (folder.is_relative_to(out_dir) or out_dir.is_relative_to(folder)):
            raise FasttuneError(f"The export folder holds the {name} (out_dir={out_dir}, {name}={folder}); "
                                "overwrite=True replaces only an earlier fasttune export. Export to another folder.")
    if any(out_dir.iterdir()) and not (out_dir / "export.json").is_file():
        raise FasttuneError(f"The export folder is not a fasttune export (out_dir={out_dir} has no export.json), so "
                            "overwrite=True does not replace it. Export to another folder, or empty it yourself.")


def _require_safetensors(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        raise FasttuneError(f"No safetensors weights in {folder} (found: {', '.join(pickled) or 'none'}). fasttune "
                            "reads weights as safetensors only; convert them with safetensors first.")


def _write_adapter(adapter_dir: Path, folder: Path, card: dict, reports) -> None:
    _require_safetensors(adapter_dir)
    folder.mkdir(parents=True)
    for path in sorted(adapter_dir.iterdir()):
        if path.is_file() and _ADAPTER_FILES.match(path.name) and path.name != CARD_NAME:
            shutil.copy2(path, folder / path.name)
    evaluations = [{"task": r.task, "split": r.split, "n": r.n, "engine": r.engine, "metrics": r.metrics,
                    "intervals": r.intervals, "parse_failures": r.parse_failures} for r in reports]
    write_card(folder, {**card, "evaluations": [*card.get("evaluations", []), *evaluations]})


def _write_gguf(merged: Path, target: Path, quant: str, work: Path, llama_cpp_dir) -> None:
    if quant in gguf.CONVERTER_TYPES:
        gguf.convert(merged, target, quant, llama_cpp_dir)
        return
    source = target.with_name(target.name.replace(f"-{quant}.gguf", "-f16.gguf"))
    if not source.is_file():
        work.mkdir(parents=True, exist_ok=True)
        source = work / "f16.gguf"
        if not source.is_file():
            gguf.convert(merged, source, "f16", llama_cpp_dir)
    gguf.quantize(source, target, quant)


def _write_modelfile(target: Path, merged: Path) -> Path:
    from transformers import AutoTokenizer

    from fasttune.backend import end_of_turn_token

    tokenizer = AutoTokenizer.from_pretrained(merged, local_files_only=True)
    path = target.with_name(f"Modelfile.{target.stem.rsplit('-', 1)[-1]}")
    path.write_text(gguf.modelfile(target.name, tokenizer, end_of_turn_token(tokenizer)))
    return path


def _greedy_replies(engine, prompts: list[list[int]], max_new_tokens: int) -> tuple[list, list]:
    """(token ids, text) of each prompt's greedy reply, one prompt at a time (no padding to differ by)."""
    replies = [samples[0] for samples in engine.generate(prompts, max_new_tokens, batch_size=1,
                                                           description="checking")]
    return [reply.tokens for reply in replies], [reply.text for reply in replies]


def _check_transformers(artifact: str, folder: Path, base_path: Path | None, prompts: list[str],
                        max_new_tokens: int, reference: Check | None = None) -> Check:
    """Load a written adapter (on its float32 base) or merged folder with transformers and run the prompts."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fasttune.engines import TransformersEngine

    model = AutoModelForCausalLM.from_pretrained(base_path or folder, dtype=torch.float32, local_files_only=True,
                                                 use_safetensors=True)
    if base_path is not None:
        model = PeftModel.from_pretrained(model, folder)
    engine = TransformersEngine(model.eval(), AutoTokenizer.from_pretrained(folder, local_files_only=True), artifact)
    tokens, texts = _greedy_replies(engine, [engine.prompt_ids(_user_turn(prompt)) for prompt in prompts],
                                    max_new_tokens)
    return _with_agreement(Check(artifact, "transformers", texts, tokens), reference)


def _check_gguf(path: Path, merged: Path, prompts: list[str], max_new_tokens: int, reference: Check | None) -> Check:
    """Load a written GGUF with llama.cpp, run the prompts from transformers' token ids, compare tokenization."""
    from transformers import AutoTokenizer

    from fasttune import data
    from fasttune.engines import GgufEngine

    engine = GgufEngine.open(path, n_ctx=512)
    tokenizer = AutoTokenizer.from_pretrained(merged, local_files_only=True)
    ids = [data.prompt_ids(tokenizer, _user_turn(prompt)) for prompt in prompts]
    same = all(engine.prompt_ids(_user_turn(prompt)) == prompt_ids
               for prompt, prompt_ids in zip(prompts, ids, strict=True))
    tokens, texts = _greedy_replies(engine, ids, max_new_tokens)
    check = Check(f"gguf {path.stem.rsplit('-', 1)[-1]}", "llama.cpp", texts, tokens, same_prompt_tokens=same)
    return _with_agreement(check, reference)


def _user_turn(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _with_agreement(check: Check, reference: Check | None) -> Check:
    if not any(check.tokens):
        raise FasttuneError(f"The written {check.artifact} produced no tokens for any check prompt.")
    if reference is not None:
        check.reference = reference.artifact
        check.agreement = sum(a == b for a, b in zip(check.tokens, reference.tokens, strict=True)) / len(check.tokens)
    return check


def _inside(path: Path, root: Path) -> Path:
    """`path`, after checking that it stays inside `root` (no name may lead an export elsewhere)."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise FasttuneError(f"Export path leaves the export folder (path={path}, folder={root}).")
    return path


@contextmanager
def _steps(total: int) -> Iterator[Callable]:
    """A progress bar over export steps; a user-fixable error inside a step is re-raised naming the step, any other
    exception keeps its type and gains a note naming the step."""
    with new_progress() as progress:
        bar = progress.add_task("export", total=total, status="")

        @contextmanager
        def step(name: str):
            progress.update(bar, description=f"export: {name}")
            try:
                yield
            except FasttuneError as error:
                raise FasttuneError(f"Export step '{name}' failed: {str(error).removeprefix('fasttune: ')}") from error
            except OSError as error:  # disk full, no permission: the user can fix these
                raise FasttuneError(f"Export step '{name}' failed: {type(error).__name__}: {error}") from error
            except Exception as error:  # a bug: keep its type and traceback, name the step
                error.add_note(f"fasttune: raised during export step '{name}'")
                raise
            progress.advance(bar)

        yield step
