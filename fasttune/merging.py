"""Weighted merging of LoRA adapters of one base model into a new adapter, through PEFT's add_weighted_adapter."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from fasttune import chat_templates, hooks
from fasttune.card import read_card, resolve_base_model, write_card
from fasttune.errors import FasttuneError, raise_problems

METHODS = ("linear", "ties", "dare_linear", "svd")


@dataclass
class MergeConfig:
    """Which adapters `merge_adapters` merges and how (its arguments, as a config)."""

    adapters: list[str]
    """Adapter folders trained on the same base model (two or more)."""
    weights: list[float]
    """One weight per adapter."""
    method: Literal["linear", "ties", "dare_linear", "svd"] = "linear"
    """How the adapters combine (PEFT add_weighted_adapter's combination_type)."""
    out_dir: str | None = None
    """The new adapter folder (default runs/merge-<method>-<time>); it must not exist."""
    density: float = 0.5
    """ties / dare_linear: the share of each update's entries kept."""
    svd_rank: int | None = None
    """svd: the rank of the merged update (default: the largest rank of the inputs)."""
    seed: int = 0
    """Seed of dare_linear's random drop."""

    def __post_init__(self):
        problems = []
        if len(self.adapters) < 2:
            problems.append(f"merge needs at least two adapters (adapters={len(self.adapters)})")
        if len(self.weights) != len(self.adapters):
            problems.append(f"give one weight per adapter (weights={list(self.weights)}, "
                            f"adapters={len(self.adapters)})")
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)} (method={self.method!r})")
        if not 0 < self.density <= 1:
            problems.append(f"density must be in (0, 1] (density={self.density})")
        raise_problems(problems)


@hooks.library_scope()
def merge_adapters(adapters: list, weights: list[float],
                   method: Literal["linear", "ties", "dare_linear", "svd"] = "linear", *,
                   out_dir: str | Path | None = None, density: float = 0.5, svd_rank: int | None = None,
                   seed: int = 0) -> Path:
    """Merge adapter folders (or Runs) trained on the same base into a new adapter folder, with a fasttune card.

    linear: PEFT weights the A and B factors by sqrt(weight * scaling) and sums each, so with several adapters
    the update also holds cross terms B_i A_j (PEFT calls it a rough approximation). svd: the weighted sum of the
    full updates, truncated to `svd_rank` (default: the largest rank). ties / dare_linear: the factors pruned to
    `density` (TIES sign election; DARE random drop with rescaling, seeded by `seed`) then summed.
    Writes `out_dir` (default runs/merge-<method>-<time>), which loads with `fasttune.load(out_dir)` and exports
    like any adapter.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folders = [Path(getattr(adapter, "adapter_dir", adapter)) for adapter in adapters]
    MergeConfig([str(folder) for folder in folders], list(weights), method, None if out_dir is None else str(out_dir),
                density, svd_rank, seed)
    cards = [_card(folder) for folder in folders]
    bases = [resolve_base_model(folder, card) for folder, card in zip(folders, cards, strict=True)]
    if len({base.resolve() for base in bases}) > 1:
        raise FasttuneError(f"The adapters have different base models "
                            f"(base_model={sorted(map(str, set(bases)))}). Merge adapters of one base.")
    if len({str(chat_templates.from_card(card)) for card in cards}) > 1:
        raise FasttuneError("The adapters were trained with different chat templates (chat_template="
                            f"{[(card.get(chat_templates.CARD_KEY) or {}).get('name') for card in cards]}). "
                            "Merge adapters trained with one template.")
    base_path = bases[0]
    out_dir = Path(out_dir or f"runs/merge-{method}-{datetime.now():%Y%m%d-%H%M%S}")
    if out_dir.exists():
        raise FasttuneError(f"The merge folder exists (out_dir={out_dir}). Choose another folder.")

    torch.manual_seed(seed)  # dare_linear drops entries at random
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, local_files_only=True,
                                                use_safetensors=True)
    names = [f"adapter_{index}" for index in range(len(folders))]
    model = PeftModel.from_pretrained(base, folders[0], adapter_name=names[0])
    for name, folder in zip(names[1:], folders[1:], strict=True):
        model.load_adapter(folder, adapter_name=name)
    model.add_weighted_adapter(names, [float(w) for w in weights], adapter_name="merged", combination_type=method,
                               density=None if method in ("linear", "svd") else density, svd_rank=svd_rank)
    model.set_adapter("merged")
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, selected_adapters=["merged"])
    nested = partial / "merged"  # PEFT writes adapters other than "default" into a subfolder
    if nested.is_dir():
        for path in nested.iterdir():
            path.replace(partial / path.name)
        nested.rmdir()
    for path in folders[0].iterdir():  # the tokenizer and chat template the adapters were trained with
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(path, partial / path.name)
    card = {"base_model": str(base_path.absolute()), "method": f"merge:{method}",
            "merge": {"method": method, "weights": list(weights), "density": density, "svd_rank": svd_rank,
                      "seed": seed, "adapters": [{"path": str(f), "task": c.get("task")}
                                                 for f, c in zip(folders, cards, strict=True)]},
            "task": cards[0].get("task"), chat_templates.CARD_KEY: cards[0].get(chat_templates.CARD_KEY)}
    write_card(partial, card)
    partial.replace(out_dir)
    return out_dir


def _card(folder: Path) -> dict:
    if not (folder / "adapter_config.json").is_file():
        raise FasttuneError(f"Not an adapter folder (adapter={folder}): adapter_config.json is missing.")
    if not (folder / "adapter_model.safetensors").is_file():
        raise FasttuneError(f"No adapter_model.safetensors in {folder} (adapter={folder}). fasttune reads adapter "
                            "weights from safetensors only (pickled .bin files can run code): convert them with "
                            "PEFT's save_pretrained(safe_serialization=True) on a machine you trust.")
    return read_card(folder)
