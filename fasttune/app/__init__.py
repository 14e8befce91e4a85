"""Looking at a model: the local web app (`run_app(AppConfig(...))`, `fasttune app`) and the one adapter
between the app/serve front ends and fasttune's model loaders.

Modules: `config` (AppConfig), `launch` (run_app), `pages` (the Gradio pages), `catalog` (the models and reports
offered), `report_view` (the Report page's tables), `models` (load a model spec, stream a chat reply).
"""

from __future__ import annotations

import importlib

_LAZY = {"AppConfig": "fasttune.app.config", "run_app": "fasttune.app.launch"}


def __getattr__(name: str):  # lazy: fasttune.serve imports fasttune.app.models alone, not the app's pages
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fasttune.app' has no attribute {name!r}")


__all__ = list(_LAZY)
