"""describe_machine: what every benchmark and suite summary records about where it ran."""

import importlib.metadata

import torch

from fasttune import machine


def test_the_machine_names_device_versions_and_an_uninstalled_fasttune_without_failing(monkeypatch):
    described = machine.describe_machine()
    assert described["device"] and described["torch"] == torch.__version__
    assert described["fasttune"] == importlib.metadata.version("fasttune")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert machine.describe_machine()["fasttune"] == "not installed (source folder)"
