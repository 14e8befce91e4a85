"""The local ports the app and the server listen on."""

from __future__ import annotations

import socket

from fasttune.errors import FasttuneError


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before loading any weights."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise FasttuneError(f"port {port} on {host} is in use ({error.strerror}) (port={port}). Stop what "
                                f"listens there or pass another port, e.g. --port {port + 1}.") from None
