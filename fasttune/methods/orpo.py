"""ORPO: SFT on the chosen answer plus an odds-ratio penalty on the rejected one; no reference model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fasttune.methods.preference import PreferenceConfig, PreferenceMethod


@dataclass
class OrpoConfig(PreferenceConfig):
    """ORPO: SFT on the chosen answer plus an odds-ratio penalty on the rejected one; no reference model."""

    method: ClassVar[str] = "orpo"


class Orpo(PreferenceMethod):
    config = OrpoConfig

    def arguments(self, shared: dict, config: OrpoConfig):
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**shared, remove_unused_columns=False)
