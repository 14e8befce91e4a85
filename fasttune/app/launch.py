"""`run_app(config)`: check the port, build the pages, serve them on config.host:config.port until interrupted."""

from __future__ import annotations

import contextlib
import importlib.util
import os

from fasttune.app.catalog import Catalog
from fasttune.app.config import AppConfig
from fasttune.errors import FasttuneError
from fasttune.serve import check_port_free

# GRADIO_ANALYTICS_ENABLED: read by gradio at every analytics call, not only by Blocks(analytics_enabled=...);
# HF_HUB_DISABLE_TELEMETRY: set by gradio 6 whenever analytics are off. Both are restored when the app stops.
_OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextlib.contextmanager
def offline_gradio():
    """Gradio with its analytics and version check off, for the duration of the scope."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_app(config: AppConfig) -> None:
    """Serve the app for `config` on http://{host}:{port} until interrupted (Ctrl-C)."""
    if importlib.util.find_spec("gradio") is None:
        raise FasttuneError("The app needs Gradio, which is not installed (extra 'app'). Install it with "
                            "pip install 'fasttune[app]'.")
    check_port_free(config.host, config.port)
    catalog = Catalog(config)
    with offline_gradio():
        from fasttune.app.pages import build

        app = build(catalog)
        folders = sorted({str(path.parent.resolve()) for path in catalog.reports.values()})
        app.launch(server_name=config.host, server_port=config.port, share=False, show_error=True,
                   allowed_paths=folders, footer_links=[], quiet=False)
