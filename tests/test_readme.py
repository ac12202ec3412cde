"""What the README shows runs as written.

Each ```python block of README.md runs alone, in a fresh interpreter, in an empty folder, as a reader would
paste it. The test changes two things only: the large step counts (``steps=``, ``total_steps=``, ``every=``)
are divided by 1,000, and a ``<run id>`` placeholder becomes a run logged here. ``make serve``, the serving
command the README prints, is run as printed, without the venv activated (on the venv running the tests, which
it does not reinstall).
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from servers import post, serving

from keras_rl_gym import DQNAgent
from keras_rl_gym.callbacks import MLflowLogger

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# A fenced block, maybe indented under a list item: its indent, its code, and the line it starts on.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
# Step counts the test lowers: the keyword, then an integer literal (``n_steps=128`` is left alone).
STEPS = re.compile(r"\b(steps|total_steps|every)=(\d[\d_]*)\b")
SCALE = 1_000
# A placeholder such as <run id>, which a reader fills in.
PLACEHOLDER = re.compile(r"<[a-z][a-z ]*>")
# make serve with the venv running these tests, never reinstalled from here (make test has just installed it).
MAKE_OPTIONS = ("-o", "install", f"VENV={sys.prefix}")


def python_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of each ```python block of the README, dedented."""
    text = README.read_text()
    return [
        (text.count("\n", 0, found.start()) + 1, textwrap.dedent(found.group("code"))) for found in FENCE.finditer(text)
    ]


def shortened(code: str) -> str:
    """``code`` with its large step counts divided by ``SCALE`` (at least 1), nothing else changed."""

    def lower(found):
        value = int(found.group(2).replace("_", ""))
        return f"{found.group(1)}={max(1, value // SCALE) if value >= SCALE else value}"

    return STEPS.sub(lower, code)


BLOCKS = python_blocks()
# The tests that load the logged run share one pytest-xdist worker (make test's --dist loadgroup), so it is made once.
ONE_RUN = pytest.mark.xdist_group("readme-logged-run")


def test_the_readme_has_its_python_blocks_and_the_test_shortens_them():
    # The extraction finds the blocks, those indented under list items too, and shortens what it should.
    assert len(BLOCKS) >= 7, [line for line, _ in BLOCKS]
    assert any(code.startswith("import gymnasium") and "network=q" in code for _, code in BLOCKS)
    assert shortened("fit(env, steps=50_000, total_steps=100000, n_steps=128, every=10_000, steps=64)") == (
        "fit(env, steps=50, total_steps=100, n_steps=128, every=10, steps=64)"
    )


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A tiny DQN on CartPole logged by ``MLflowLogger`` to ``sqlite:///mlflow.db`` in its own folder.

    ``(folder, run id, agent)``: the README's serving block and ``make serve`` load its model.
    """
    folder = tmp_path_factory.mktemp("readme-run")
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(16,), learning_starts=32, seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the run's artifacts go here, beside the store
        logger = MLflowLogger(experiment_name="readme", tracking_uri=f"sqlite:///{folder}/mlflow.db")
        agent.fit(env, steps=64, log_every=32, verbose=0, callbacks=[logger])
    return folder, logger.run_id, agent


def block_env() -> dict:
    """This process's environment, less the test's MLflow store: a block uses the default, ``mlflow.db`` here."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # Ray clusters a block starts keep to the loopback address and send no usage report (as in conftest.py).
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true")
    return env


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "line, code",
    [pytest.param(line, code, id=f"line{line}", marks=ONE_RUN if "<run id>" in code else ()) for line, code in BLOCKS],
)
def test_the_readme_python_block_runs_alone_as_written(line, code, tmp_path, request):
    code = shortened(code)
    folder = tmp_path
    if "<run id>" in code:
        folder, run_id, _ = request.getfixturevalue("logged_run")
        code = code.replace("<run id>", run_id)
    assert not PLACEHOLDER.search(code), f"README line {line}: a placeholder the test cannot fill: {code}"
    script = tmp_path / f"readme_line{line}.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=block_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"README line {line} failed:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.mark.backend_independent
@ONE_RUN
def test_make_serve_serves_a_run_without_the_venv_activated(logged_run):
    """``make serve RUN=<run id>`` as the README prints it, with neither the venv's bin on PATH nor VIRTUAL_ENV."""
    folder, run_id, agent = logged_run
    bin_dir = os.path.realpath(os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if os.path.realpath(p) != bin_dir)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"

    def make_serve(port):
        return ["make", "-C", str(REPO), *MAKE_OPTIONS, "serve", f"RUN={run_id}", f"PORT={port}"]

    obs = np.array([[0.01, 0.2, -0.03, -0.3], [0.0, -0.5, 0.1, 0.8]], np.float32)
    with serving(["serve"], "/ping", env=env, log="make-serve.log", command=make_serve) as base:
        actions = post(base + "/invocations", {"inputs": obs.tolist()})
    np.testing.assert_array_equal(actions, agent.act(obs))


@pytest.mark.backend_independent
def test_make_serve_without_a_run_says_how_to_call_it():
    done = subprocess.run(["make", "-C", str(REPO), *MAKE_OPTIONS, "serve"], capture_output=True, text=True)
    assert done.returncode != 0 and "usage: make serve RUN=<run id>" in done.stderr
