"""Every docstring example of the package runs and prints what it shows.

One test per module that has examples, found by reading the package's files, so a module that gains an
example is tested without editing this file. The examples run through :mod:`doctest` (as ``pytest
--doctest-modules`` would, with ``ELLIPSIS``) in the test's own folder and MLflow store. Modules whose examples
neither build an agent nor call Keras (listed below) are backend-independent; the others, and any module not
listed, run on every backend. The examples
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
# Modules whose examples build no agent, train nothing and call no Keras: their results cannot depend on it.
KERAS_FREE = {
    "keras_rl_gym.buffers",
    "keras_rl_gym.cli",
    "keras_rl_gym.config",
    "keras_rl_gym.loop",
    "keras_rl_gym.normalization",
    "keras_rl_gym.saved_env",
    "keras_rl_gym.wrappers.atari",
    "keras_rl_gym.wrappers.discretize",
    "keras_rl_gym.wrappers.envpool_env",
    "keras_rl_gym.wrappers.partial",
}
# Examples that start a Ray cluster, run in a subprocess. They run once too: test_ray.py trains through Ray
# runners and sweeps on every backend, and what these add is that the examples run as written.
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


def test_the_package_has_examples_and_the_keras_free_list_names_modules_with_examples():
    assert {"keras_rl_gym", "keras_rl_gym.agents.dqn", "keras_rl_gym.serving"} <= set(MODULES)
    assert sorted(KERAS_FREE - set(MODULES)) == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.backend_independent if name in KERAS_FREE or name.startswith(IN_SUBPROCESS) else (),
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
