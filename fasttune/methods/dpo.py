"""DPO: raise the chosen answer's likelihood over the rejected one's, relative to the model without adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import trl

from fasttune.methods.preference import PreferenceConfig, PreferenceMethod


@dataclass
class DpoConfig(PreferenceConfig):
    """DPO: raise the chosen answer's likelihood over the rejected one's, relative to the model without adapter."""

    method: ClassVar[str] = "dpo"


class Dpo(PreferenceMethod):
    config = DpoConfig

    def arguments(self, shared: dict, config: DpoConfig) -> trl.DPOConfig:
        return trl.DPOConfig(**shared)
