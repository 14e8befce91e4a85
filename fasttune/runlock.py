"""One writer per run folder: `<output_dir>/.fasttune.lock`, held with an OS file lock and naming its owner.

The operating system releases the lock when its process ends, however it ends, so a lock file left by a killed run
is stale by construction and the next run takes it over; a live owner makes a second run fail at once, naming it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from fasttune.errors import FasttuneError

LOCK_NAME = ".fasttune.lock"


class RunLock:
    """Hold the lock on `folder` (created if needed) inside a `with` block."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._descriptor: int | None = None
        self._created_folder = False

    def __enter__(self) -> RunLock:
        self._created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 4096).decode("utf-8", errors="replace").strip() or "owner unknown"
            os.close(descriptor)
            raise FasttuneError(f"Another run is writing to {self.path.parent} (lock={self.path}: {owner}). Wait "
                                "for it to finish, or train into another output_dir.") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info) -> None:
        # The file stays (unlinking it would let a waiting process lock a file nobody else can see); emptied, it
        # names no owner.
        os.ftruncate(self._descriptor, 0)
        os.close(self._descriptor)
        self._descriptor = None
        if self._created_folder and [path.name for path in self.path.parent.iterdir()] == [LOCK_NAME]:
            self.path.unlink()  # a run refused before writing anything leaves no folder behind
            self.path.parent.rmdir()
