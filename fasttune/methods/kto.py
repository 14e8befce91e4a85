"""KTO: single answers labelled desirable or undesirable, no pairing needed. Built from the task, the gold
completion is desirable and each wrong sampled answer undesirable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import trl

from fasttune.errors import not_positive
from fasttune.methods.preference import Pair, PreferenceConfig, PreferenceMethod, assistant


@dataclass
class KtoConfig(PreferenceConfig):
    """KTO: single answers labelled desirable or undesirable, no pairing needed."""

    method: ClassVar[str] = "kto"
    desirable_weight: float = 1.0
    """Loss weight of desirable answers."""
    undesirable_weight: float = 1.0
    """Loss weight of undesirable answers (raise it when they outnumber the desirable ones)."""

    def problems(self) -> list[str]:
        return super().problems() + not_positive(self, ("desirable_weight", "undesirable_weight"))


def kto_rows(pairs: list[Pair]) -> list[dict]:
    """KTO rows from pairs: each distinct chosen answer desirable, each rejected one undesirable."""
    rows, seen = [], set()
    for pair in pairs:
        for text, label in ((pair.chosen, True), (pair.rejected, False)):
            key = (str(pair.prompt), text)
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": pair.prompt, "completion": assistant(text), "label": label})
    return rows


class Kto(PreferenceMethod):
    config = KtoConfig

    def rows(self, pairs: list[Pair]) -> list[dict]:
        return kto_rows(pairs)

    def row_summary(self, rows: list[dict]) -> dict:
        desirable = sum(row["label"] for row in rows)
        return {"desirable": desirable, "undesirable": len(rows) - desirable}

    def arguments(self, shared: dict, config: KtoConfig) -> trl.KTOConfig:
        return trl.KTOConfig(**shared, desirable_weight=config.desirable_weight,
                             undesirable_weight=config.undesirable_weight)
