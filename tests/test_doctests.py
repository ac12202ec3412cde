"""Every docstring example of the package runs and prints what it shows.

One test per module that has examples, found by reading the package's files, so a module that gains an
example is tested without editing this file. The examples run through :mod:`doctest` (as ``pytest
--doctest-modules`` would, with ``ELLIPSIS``) in the test's own folder and MLflow store. The package's
quickstart and serving's examples run on every backend, the rest once (see ``EVERY_BACKEND``). The examples
of ``keras_rl_gym.distributed`` start a Ray cluster: they run in a fresh interpreter, so that no cluster
outlives their test in this process.
"""

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_rl_gym"
# The examples that run on every backend: the package's quickstart and serving's export. The other modules'
# examples build and train agents too, but what they check is that each example runs as written; each algorithm's
# math, saving and training are tested on every backend by its own test file, and CI's budget (35 minutes for three
# backends on two cores) does not hold ~25 modules of examples three times.
EVERY_BACKEND = {"keras_rl_gym", "keras_rl_gym.serving"}
# Examples that start a Ray cluster, run in a subprocess.
IN_SUBPROCESS = ("keras_rl_gym.distributed",)


def modules_with_examples() -> list[str]:
    """The name of each module of the package with a ``>>>`` in it."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def run_doctests(name: str) -> dict:
    """Runs the examples of module ``name`` here; ``{"attempted", "failed", "report"}``."""
    module = importlib.import_module(name)
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    attempted = failed = 0
    for test in doctest.DocTestFinder().find(module, name):
        if test.examples:
            result = runner.run(test, out=report.append)
            attempted += result.attempted
            failed += result.failed
    return {"attempted": attempted, "failed": failed, "report": "".join(report)}


SUBPROCESS = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_doctests import run_doctests
print(json.dumps(run_doctests(sys.argv[1])))
"""

MODULES = modules_with_examples()


def test_the_package_has_examples_and_the_every_backend_list_names_modules_with_examples():
    assert {"keras_rl_gym", "keras_rl_gym.agents.dqn", "keras_rl_gym.serving"} <= set(MODULES)
    assert EVERY_BACKEND <= set(MODULES)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=() if name in EVERY_BACKEND else pytest.mark.backend_independent,
            id=name,
        )
        for name in MODULES
    ],
)
def test_the_module_examples_run_as_written(name, tmp_path):
    if name.startswith(IN_SUBPROCESS):
        done = subprocess.run(
            [sys.executable, "-c", SUBPROCESS, name], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result = run_doctests(name)
    assert result["attempted"] > 0, f"{name}: no example found"
    failed = f"{result['failed']} of {result['attempted']} examples of {name} failed:\n{result['report']}"
    assert result["failed"] == 0, failed
