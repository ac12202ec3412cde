"""MLflow logging (checked through a real ``mlflow server``) and the ``keras-rl-gym`` command."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import gymnasium as gym
import mlflow
import numpy as np
import pytest
from probe_envs import CounterEnv
from servers import serving

from keras_rl_gym import DQNAgent, NonFiniteLossError
from keras_rl_gym.callbacks import MLflowLogger
from keras_rl_gym.cli import main


def rest(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def trained_run(tmp_path):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=50, hidden_sizes=(16,), seed=0)
    logger = MLflowLogger(experiment_name="test", run_name="short")
    agent.fit(env, steps=400, verbose=0, log_every=100, callbacks=[logger])
    return agent, logger.run_id


def test_mlflow_server_serves_the_run_its_metrics_and_model(trained_run, tmp_path):
    agent, run_id = trained_run
    store = os.environ["MLFLOW_TRACKING_URI"]
    with serving(["server", "--backend-store-uri", store, "--workers", "1"], "/health") as base:
        experiment = rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=test")["experiment"]
        runs = rest(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert [r["info"]["run_id"] for r in runs] == [run_id]
        run = runs[0]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")
        assert params["agent.class"] == "DQNAgent" and params["agent.hidden_sizes"] == "[16]"
        assert params["fit.env_id"] == "CartPole-v1" and "version.keras" in params
        latest = {m["key"] for m in run["data"]["metrics"]}
        # In the sections MLflow's UI shows: rollout/, train/, time/.
        expected = {"rollout/episode_return", "rollout/episode_length", "train/loss", "rollout/epsilon"}
        assert expected | {"train/learning_rate", "time/steps_per_second"} <= latest
        key = "rollout/episode_return"
        history = rest(base, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}")
        assert len(history["metrics"]) >= 5 and all(m["value"] >= 1 for m in history["metrics"])
        artifacts = rest(base, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert "learning_curve.png" in [f["path"] for f in artifacts["files"]]
        models = rest(base, "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})
        (model,) = models["models"]
        assert model["info"]["source_run_id"] == run_id and model["info"]["status"] == "LOGGED_MODEL_READY"

    # The logged agent loads as a pyfunc model and predicts Q-values.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model['info']['model_id']}")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    q = np.asarray(pyfunc.predict(obs, params={"output": "values"}))
    assert q.shape == (5, 2)
    np.testing.assert_allclose(q, np.asarray(agent.predict_on_batch(obs)), rtol=1e-5, atol=1e-6)


def test_failed_run_keeps_its_logs_and_checkpoint():
    env = CounterEnv(length=5, reward=lambda t: np.nan if t == 3 else 1.0)
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=30, batch_size=8, seed=0)
    logger = MLflowLogger(experiment_name="test")
    with pytest.raises(NonFiniteLossError):
        agent.fit(env, steps=500, verbose=0, log_every=10, callbacks=[logger])
    run = mlflow.MlflowClient().get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert "Non-finite loss" in run.data.tags["error"]
    # What was logged before the failure is kept (the returns themselves are NaN here, so not logged).
    assert run.data.metrics["rollout/episode_length"] == 5.0 and "rollout/episode_return" not in run.data.metrics
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(logger.run_id, "checkpoint")]
    assert artifacts == [f"checkpoint/{agent.name}-last-finite.keras"]


def test_cli_trains_logs_and_saves(capsys, tmp_path):
    code = main(
        [
            "train",
            "--algo",
            "dqn",
            "--env",
            "CartPole-v1",
            "--steps",
            "300",
            "--seed",
            "1",
            "-q",
            "--experiment",
            "cli",
            "--save",
            str(tmp_path / "cli.keras"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Evaluation over 10 episodes" in out and "mlflow ui --backend-store-uri" in out
    assert (tmp_path / "cli.keras").exists()
    runs = mlflow.search_runs(experiment_names=["cli"], output_format="list")
    assert len(runs) == 1 and "eval/mean_return" in runs[0].data.metrics


def test_cli_runs_config_file_and_rejects_unknown_keys(tmp_path, capsys):
    config = {
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"hidden_sizes": [8]},
        "train": {"steps": 200, "mlflow": False},
    }
    (tmp_path / "ok.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "ok.json"), "-q"]) == 0
    config["agent"]["learning_rat"] = 0.1
    (tmp_path / "bad.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "bad.json"), "-q"]) == 2
    assert "learning_rat" in capsys.readouterr().err


# -- the tracking store, checked before training ------------------------------------------------------------


def _tiny_config(tmp_path, experiment="store"):
    config = {
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"hidden_sizes": [8], "learning_starts": 1000},
        "train": {"steps": 50, "seed": 0, "eval_episodes": 1, "experiment": experiment},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "config.json")


@pytest.mark.backend_independent
@pytest.mark.parametrize("store", ["server", "sqlite-under-a-file", "sqlite-missing-directory"])
def test_an_unusable_tracking_store_fails_in_seconds_before_training(tmp_path, capsys, monkeypatch, store):
    """MLflow's client retried for minutes (290 s for a closed port, 141 s for a sqlite file it cannot create).

    The sqlite file's directory is a regular file: nobody, root included (the tests may run as root,
    which writes to read-only directories), can create a file under it; or it does not exist.
    """
    if store == "server":
        uri = "http://127.0.0.1:9"  # the discard port: nothing listens there
        cause = "Connection refused"
    elif store == "sqlite-under-a-file":
        (tmp_path / "plain-file").write_text("")
        uri = f"sqlite:///{tmp_path}/plain-file/mlflow.db"
        cause = f"{tmp_path}/plain-file is not a directory"
    else:
        uri = f"sqlite:///{tmp_path}/missing/mlflow.db"
        cause = f"the directory {tmp_path}/missing does not exist"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.perf_counter()
    assert main(["train", _tiny_config(tmp_path), "-q", "--save", str(tmp_path / "agent.keras")]) == 2
    err = capsys.readouterr().err.strip()
    assert time.perf_counter() - started < 15
    assert len(err.splitlines()) == 1 and err.startswith("keras-rl-gym: config error:")
    assert uri in err and cause in err
    assert not (tmp_path / "agent.keras").exists() and not list(tmp_path.glob("*interrupted.keras"))


# Each process loads everything first, says so, and waits for the word to start: both then open the
# new store within milliseconds of each other, as two `keras-rl-gym train` started together would.
_AT_ONCE = """
import os, sys, time
import keras, mlflow
from mlflow.store.tracking import sqlalchemy_store
import keras_rl_gym.agents
from keras_rl_gym.cli import main
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.01)
sys.exit(main(["train", "config.json", "-q", "--run-name", sys.argv[1]]))
"""


@pytest.mark.backend_independent
def test_two_trains_creating_the_default_store_at_once_both_succeed(tmp_path):
    """Both used to run MLflow's schema migration on the new mlflow.db at once, and one (or both) died in it."""
    _tiny_config(tmp_path)
    env = dict(os.environ, MLFLOW_TRACKING_URI="sqlite:///mlflow.db")  # the default store, in this directory
    names = ["first", "second"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_ONCE, name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        deadline = time.time() + 300
        while not all((tmp_path / f"{name}.ready").exists() for name in names):
            assert all(p.poll() is None for p in procs) and time.time() < deadline, "a train did not get ready"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "Evaluation over 1 episodes" in out
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("store").experiment_id])
    assert sorted(r.info.run_name for r in runs) == names
    assert all(r.info.status == "FINISHED" for r in runs)
