"""Built-in tasks and the task registry: `get(name)`, `list()`, `register(cls)`."""

from __future__ import annotations

import builtins
import importlib

from fasttune.errors import unknown_name
from fasttune.task import Task

_BUILTIN = {
    "larger_number": "fasttune.tasks.larger_number:LargerNumber",
    "rte": "fasttune.tasks.rte:RTE",
    "recipe_mpr": "fasttune.tasks.recipe_mpr:RecipeMPR",
    "mnli": "fasttune.tasks.mnli:MNLI",
    "nq_open": "fasttune.tasks.nq_open:NQOpen",
    "nq_open_oracle": "fasttune.tasks.nq_open:NQOpenOracle",
    "arxiv_title": "fasttune.tasks.arxiv_title:ArxivTitle",
    "scitldr": "fasttune.tasks.scitldr:SciTLDR",
    "shopbench": "fasttune.tasks.shopbench:ShopBench",
}
_OWN_DATA = {
    "chat": "fasttune.tasks.chat:Chat",
    "instruction": "fasttune.tasks.instruction:Instruction",
}
"""Generic tasks over the user's own files (options: fasttune.own_data.OwnDataConfig)."""
_REGISTERED: dict[str, type[Task]] = {}


def register(task_class: type[Task]) -> type[Task]:
    """Register a user-defined Task subclass under its `name` (usable as a class decorator)."""
    _REGISTERED[task_class.name] = task_class
    return task_class


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public name
    """Names of all known tasks, built-in and registered."""
    return sorted({*_BUILTIN, *_OWN_DATA, *_REGISTERED})


def builtin() -> builtins.list[str]:
    """Names of the tasks that ship with fasttune and read known datasets (the suite's tasks); `chat` and
    `instruction` read the user's own files instead."""
    return sorted(_BUILTIN)


def task_class(name: str) -> type[Task]:
    """The Task class of a registered or built-in task name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    known = {**_BUILTIN, **_OWN_DATA}
    if name not in known:
        raise unknown_name("task", name, list())
    module_name, class_name = known[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get(name: str, **kwargs) -> Task:
    """A task instance by name; keyword arguments (e.g. data_dir=) go to its constructor."""
    return task_class(name)(**kwargs)


__all__ = ["Task", "builtin", "get", "list", "register", "task_class"]
