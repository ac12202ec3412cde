"""The MLflow run as a user sees it: `mlflow ui` over a store a training run wrote, in a real (headless) browser.

`make test` installs Debian's chromium. The link the CLI prints opens the experiment on its training
runs (MLflow 3 opens experiments on its GenAI view unless the URL says otherwise), and the run is
listed there without a click.
"""

import os
import re
import shutil
import subprocess

import keras
import pytest
from servers import serving

from keras_rl_gym.cli import main

# What MLflow's UI shows of a run does not depend on KERAS_BACKEND: `make test` runs it once.
pytestmark = pytest.mark.backend_independent


def test_the_printed_link_shows_the_run_among_the_training_runs(capsys, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "make test installs Debian's chromium (apt-get install chromium)"
    sets = ["train.steps=200", "agent.learning_starts=100", "train.eval_episodes=1"]
    assert main(["train", "dqn-cartpole", "-q"] + [arg for value in sets for arg in ("--set", value)]) == 0
    out = capsys.readouterr().out
    link = re.search(r"open (http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning)", out)
    assert link, out
    run_name = f"dqn-CartPole-v1-{keras.backend.backend()}-s0"

    store = os.environ["MLFLOW_TRACKING_URI"]
    with serving(["ui", "--backend-store-uri", store, "--workers", "1"], "/health") as base:
        url = link.group(1).replace("http://127.0.0.1:5000", base)
        browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        browser += ["--virtual-time-budget=30000", "--dump-dom", url]
        dom = subprocess.run(browser, capture_output=True, text=True, timeout=180).stdout
    # The runs table (its "Run Name" column) with the run in it: the training-runs view, no click needed.
    assert "Run Name" in dom, dom[-2000:]
    assert run_name in dom
