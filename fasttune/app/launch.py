"""`run_app(config)`: check the port, build the pages, serve them on config.host:config.port until interrupted."""

from __future__ import annotations

import importlib.util

from fasttune import hooks, ports
from fasttune.app.catalog import Catalog
from fasttune.app.config import AppConfig
from fasttune.errors import FasttuneError

def run_app(config: AppConfig) -> None:
    """Serve the app for `config` on http://{host}:{port} until interrupted (Ctrl-C)."""
    if importlib.util.find_spec("gradio") is None:
        raise FasttuneError("The app needs Gradio, which is not installed (extra 'app'). Install it with "
                            "pip install 'fasttune[app]'.")
    ports.check_port_free(config.host, config.port)
    catalog = Catalog(config)
    with hooks.gradio_offline():
        from fasttune.app.pages import build

        app = build(catalog)
        folders = sorted({str(path.parent.resolve()) for path in catalog.reports.values()})
        app.launch(server_name=config.host, server_port=config.port, share=False, show_error=True,
                   allowed_paths=folders, footer_links=[], quiet=False)
