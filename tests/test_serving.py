"""Export and MLflow serving of the greedy policy: observations in, the env's actions as ``agent.act`` gives them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import keras
import mlflow
import numpy as np
import pytest
from servers import post, serving

from keras_rl_gym import DQNAgent, DRQNAgent, SACAgent
from keras_rl_gym.callbacks import MLflowLogger
from keras_rl_gym.serving import FORMATS, log_model

BACKEND = keras.backend.backend()
# What each backend exports (the table in export_policy's docstring); the others raise.
EXPORTS = {"tensorflow": FORMATS, "jax": FORMATS, "torch": ("onnx",)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny DQN on CartPole and SAC on Pendulum, each trained and logged by ``MLflowLogger`` into one store.

    Module-scoped (training is the slow part), so it keeps its own store rather than each test's:
    ``{"uri": the store, "dqn"/"sac": (agent, run_id, 64 fixed observations)}``.
    """
    folder = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{folder}/mlflow.db"
    cartpole, pendulum = gym.make("CartPole-v1"), gym.make("Pendulum-v1")
    agents = {
        "dqn": (
            cartpole,
            DQNAgent(cartpole.observation_space, cartpole.action_space, hidden_sizes=(16,), learning_starts=64, seed=0),
        ),
        "sac": (
            pendulum,
            SACAgent(
                pendulum.observation_space,
                pendulum.action_space,
                actor_hidden_sizes=(16,),
                critic_hidden_sizes=(16,),
                learning_starts=64,
                batch_size=32,
                seed=0,
            ),
        ),
    }
    made = {"uri": uri}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the store's artifacts go here
        for name, (env, agent) in agents.items():
            logger = MLflowLogger(experiment_name="serving", tracking_uri=uri)
            agent.fit(env, steps=256, verbose=0, log_every=128, callbacks=[logger])
            env.observation_space.seed(1)
            obs = np.stack([env.observation_space.sample() for _ in range(64)])
            made[name] = (agent, logger.run_id, obs)
    return made


# Runs in a fresh interpreter that imports only mlflow and numpy: the model brings keras-rl-gym as its
# code and picks its Keras backend itself (KERAS_BACKEND is not set there).
LOAD_AND_PREDICT = """
import json, sys
import mlflow, numpy as np
found = {}
for name, run_id in json.loads(sys.argv[1]).items():
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    obs = np.load(f"{name}-obs.npy")
    np.save(f"{name}-actions.npy", model.predict(obs))
    np.save(f"{name}-values.npy", model.predict(obs, params={"output": "values"}))
found["code"] = sys.modules["keras_rl_gym"].__file__
found["backend"] = sys.modules["keras"].backend.backend()
print(json.dumps(found))
"""


def test_logged_model_acts_as_the_agent_in_a_process_without_keras_rl_gym(runs):
    for name in ("dqn", "sac"):
        np.save(f"{name}-obs.npy", runs[name][2])
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["MLFLOW_TRACKING_URI"] = runs["uri"]
    run_ids = json.dumps({name: runs[name][1] for name in ("dqn", "sac")})
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, run_ids], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # keras-rl-gym came from the model's code_paths, on the backend the model was logged with.
    assert f"{os.sep}code{os.sep}keras_rl_gym{os.sep}" in found["code"] and found["backend"] == BACKEND

    agent, _, obs = runs["dqn"]
    actions = np.load("dqn-actions.npy")
    assert actions.dtype == np.int64 and actions.shape == (64,)
    np.testing.assert_array_equal(actions, agent.act(obs))
    np.testing.assert_allclose(np.load("dqn-values.npy"), agent.predict(obs, verbose=0), rtol=1e-5, atol=1e-5)

    agent, _, obs = runs["sac"]
    actions = np.load("sac-actions.npy")
    assert actions.dtype == np.float32 and actions.shape == (64, 1)
    np.testing.assert_allclose(actions, agent.act(obs), atol=1e-5)
    np.testing.assert_allclose(np.load("sac-values.npy"), agent.predict(obs, verbose=0), rtol=1e-5, atol=1e-5)

    # The requirements name real packages at their installed versions, and no keras-rl-gym pin.
    requirements = mlflow.artifacts.download_artifacts(
        run_id=runs["dqn"][1], artifact_path="model/requirements.txt", tracking_uri=runs["uri"]
    )
    pins = Path(requirements).read_text().split()
    assert f"keras=={keras.__version__}" in pins and f"numpy=={np.__version__}" in pins
    assert any(p.startswith("mlflow==") for p in pins) and not any("keras-rl-gym" in p for p in pins)


def test_mlflow_models_serve_answers_with_the_agents_actions(runs):
    agent, run_id, obs = runs["dqn"]
    args = ["models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager", "local"]
    with serving(args, "/ping", env={**os.environ, "MLFLOW_TRACKING_URI": runs["uri"]}, log="serve.log") as base:
        # As curl would send them: a tensor of observations, then a DataFrame of them asking for Q-values.
        actions = post(base + "/invocations", {"inputs": obs.tolist()})
        assert all(agent.action_space.contains(np.int64(a)) for a in actions)
        np.testing.assert_array_equal(actions, agent.act(obs))
        columns = [f"obs_{i}" for i in range(obs.shape[1])]
        split = {"dataframe_split": {"columns": columns, "data": obs.tolist()}, "params": {"output": "values"}}
        np.testing.assert_allclose(post(base + "/invocations", split), agent.predict(obs, verbose=0), atol=1e-5)


@pytest.mark.parametrize("format", FORMATS)
def test_export_gives_the_agents_actions_or_a_clear_error(runs, format, tmp_path):
    for name in ("dqn", "sac"):
        agent, _, obs = runs[name]
        path = str(tmp_path / (f"{name}.onnx" if format == "onnx" else name))
        if format not in EXPORTS[BACKEND]:
            with pytest.raises(NotImplementedError, match=f"format='{format}' is not exported on the {BACKEND}") as e:
                agent.export(path, format=format)
            assert "format='onnx'" in str(e.value) and "\n" not in str(e.value)
            continue
        agent.export(path, format=format, verbose=False)
        if format == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(path)
            actions = session.run(None, {"observations": obs})[0]
        else:
            import tensorflow as tf

            loaded = tf.saved_model.load(path)  # held: a temporary's variables are gone before serve runs
            actions = loaded.serve(obs).numpy()
        if name == "dqn":
            np.testing.assert_array_equal(actions, agent.act(obs))
        else:
            np.testing.assert_allclose(actions, agent.act(obs), atol=1e-5)
    with pytest.raises(ValueError, match="Unknown export format 'saved_model'"):
        agent.export(str(tmp_path / "x"), format="saved_model")


def test_drqn_is_refused_by_export_and_log_model_and_logged_as_a_keras_file():
    env = gym.make("CartPole-v1")
    agent = DRQNAgent(
        env.observation_space,
        env.action_space,
        hidden_sizes=(8,),
        lstm_size=8,
        sequence_length=4,
        batch_size=8,
        learning_starts=20,
        seed=0,
    )
    for format in FORMATS:
        with pytest.raises(NotImplementedError, match="DRQN is not exported or served") as e:
            agent.export("drqn-policy", format=format)
        assert "\n" not in str(e.value)
    with pytest.raises(NotImplementedError, match="DRQN is not exported or served"):
        log_model(agent)
    # MLflowLogger keeps the agent as a plain .keras artifact instead, with a warning, and ends the run well.
    logger = MLflowLogger(experiment_name="drqn")
    with pytest.warns(UserWarning, match="plain .keras artifact"):
        agent.fit(env, steps=40, verbose=0, callbacks=[logger])
    client = mlflow.MlflowClient()
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(logger.run_id, "model")] == [f"model/{agent.name}.keras"]
