"""The packaging maps the top-level tasks/ folder to fasttune.tasks and makes nothing else a subpackage."""

import json
import subprocess
import sys
from pathlib import Path

import fasttune

# The folder fasttune is imported from: the checkout root for an editable install (where the source folders tests/
# and benchmarks/ sit beside fasttune/), site-packages for a normal one.
ROOT = Path(fasttune.__file__).resolve().parent.parent

CHECK = '''
import importlib, json
import fasttune, fasttune.tasks
missing = []
for name in ("fasttune.tests", "fasttune.benchmarks"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        missing.append(name)
print(json.dumps({"tasks": fasttune.tasks.__file__, "larger_number": "larger_number" in fasttune.tasks.list(),
                  "missing": missing}))
'''


def test_fasttune_tasks_imports_and_tests_or_benchmarks_are_no_subpackages_where_fasttune_is_installed():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert Path(found["tasks"]).parent.name == "tasks" and found["larger_number"]
    assert found["missing"] == ["fasttune.tests", "fasttune.benchmarks"]

