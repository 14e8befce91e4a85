"""Folders that appear complete or not at all: written under a hidden sibling name, flushed to disk, then renamed.

A kill or a full disk while writing leaves only the hidden `.<name>.partial` folder, which the next write removes;
the folder under its real name is either the old one or the new one, never a mix.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fasttune.errors import FasttuneError

FULL_BELOW = 1 << 20
"""A disk with less free space than this (bytes) after a failed write counts as full."""


def staging_folder(target: Path) -> Path:
    """The hidden sibling a folder is written to before it is renamed to `target`."""
    return target.with_name(f".{target.name}.partial")


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk."""
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    for path in folders:
        _fsync_folder(path)


def replace_folder(staging: Path, target: Path) -> None:
    """Flush `staging` and rename it to `target`; an existing `target` is set aside first and removed last."""
    fsync_tree(staging)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.replace(old)
    staging.replace(target)
    _fsync_folder(target.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without an error it becomes `target` (see module doc).

    On an error the staging folder is removed and `target` is left as it was."""
    staging = staging_folder(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(staging, target)


@contextmanager
def out_of_space_advice(target: Path, fix: str) -> Iterator[None]:
    """Turn a full disk (or quota) while writing under `target` into a FasttuneError naming it and ending in `fix`.

    Not every writer raises an OSError for it (tokenizers raises a plain Exception, torch a RuntimeError), so an
    error after which the disk holding `target` has no space left counts too."""
    try:
        yield
    except Exception as error:
        if not _out_of_space(error, target):
            raise
        raise FasttuneError(f"No space left on the device while writing {target} ({type(error).__name__}: "
                            f"{str(error)[:200]}). {fix}.") from error


def _out_of_space(error: Exception, target: Path) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    existing = next((folder for folder in (target, *target.parents) if folder.exists()), None)
    return existing is not None and shutil.disk_usage(existing).free < FULL_BELOW


def write_file(path: Path, text: str) -> None:
    """Write `path` through a flushed temporary file renamed over it: it holds the old text or the new, whole."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
