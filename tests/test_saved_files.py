"""A saved agent is data: a crafted ``.keras`` file runs no code, sets only its training state, reaches no server.

Each attack below carries a harmless payload (a marker file) that must not appear; where an
explicit opt-in exists (``--trust-env``, ``--unsafe``), the same file is shown to run its payload
with it, so that the test would fail if the refusal were not there.
"""

import json
import sys
import zipfile

import gymnasium as gym
import keras
import numpy as np
import pytest

from keras_rl_gym import DQNAgent, PPOAgent
from keras_rl_gym.cli import evaluation_env, main
from keras_rl_gym.saved_env import UnsafeEnvError, rebuild_env

pytestmark = pytest.mark.backend_independent

# A module that makes the marker when it is imported, and an env and a wrapper that make it when called.
EVIL = """
import pathlib, gymnasium as gym
MARKER = pathlib.Path({marker!r})
if {on_import}:
    MARKER.write_text("imported")

def wrapper(env, **kwargs):
    MARKER.write_text("wrapper called")
    return env

class Env(gym.Env):
    def __init__(self, **kwargs):
        MARKER.write_text("env made")
        self.observation_space = gym.spaces.Box(-1, 1, (4,))
        self.action_space = gym.spaces.Discrete(2)
"""


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A DQN trained a few steps on CartPole-v1 and saved: its file, and its training state."""
    folder = tmp_path_factory.mktemp("honest")
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), learning_starts=10, seed=0)
    agent.fit(env, steps=40, verbose=0)
    path = folder / "honest.keras"
    agent.save(path)
    with zipfile.ZipFile(path) as archive:
        state = json.loads(archive.read("assets/training_state.json"))
    return path, state


def rewrite(source, target, state):
    """A copy of the ``.keras`` file ``source`` whose training state is ``state``."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename == "assets/training_state.json":
                data = json.dumps(state).encode()
            out.writestr(item, data)
    return target


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """An importable module ``evil_<n>`` whose payload writes ``marker``; returns (module name, marker)."""

    def make(on_import=False):
        name = f"evil_{len(list(tmp_path.glob('evil_*.py')))}"
        marker = tmp_path / f"{name}.marker"
        (tmp_path / f"{name}.py").write_text(EVIL.format(marker=str(marker), on_import=on_import))
        return name, marker

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.startswith("evil_")]:
        del sys.modules[name]


def spec_json(**changes):
    spec = json.loads(gym.spec("CartPole-v1").to_json())
    spec.update(changes)
    return json.dumps(spec)


def test_an_honest_file_loads_with_its_counters_and_evaluates_on_its_rebuilt_env(honest):
    path, state = honest
    agent = keras.saving.load_model(path)
    assert (agent.env_steps, agent.updates, agent.episodes) == (state["env_steps"], state["updates"], state["episodes"])
    env = evaluation_env(agent)
    assert env.spec.id == "CartPole-v1"
    assert main(["evaluate", str(path), "--episodes", "1"]) == 0


@pytest.mark.parametrize(
    "key, value",
    [
        ("_mlflow_run", ["http://127.0.0.1:9", "0123"]),  # evaluate would log to the server the file names
        ("trainable", False),  # a Keras attribute
        ("q_network", None),  # a network
        ("env_steps", "many"),  # a known name with a value of the wrong type
        ("episodes", -3),
        ("epsilon", 7.0),
        ("rng", {"bit_generator": "MT19937", "state": {}}),
    ],
)
def test_a_training_state_key_outside_the_schema_or_a_bad_value_is_refused_naming_the_file_and_key(
    honest, tmp_path, capsys, key, value
):
    path, state = honest
    crafted = rewrite(path, tmp_path / "crafted.keras", {**state, key: value})
    with pytest.raises(ValueError, match=rf"training_state\.json in the saved DQNAgent.*{key}"):
        keras.saving.load_model(crafted)
    assert main(["evaluate", str(crafted), "--episodes", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(crafted) in error and key in error and "training_state.json" in error


def test_a_garbage_training_state_is_reported_with_its_cause(honest, tmp_path, capsys):
    path, _ = honest
    crafted = tmp_path / "garbage.keras"
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(crafted, "w") as out:
        for item in archive.infolist():
            data = archive.read(item.filename)
            out.writestr(item, b"\x00not json{" if item.filename.endswith("training_state.json") else data)
    assert main(["evaluate", str(crafted)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "is not valid JSON" in error and str(crafted) in error


def test_a_truncated_file_and_a_plain_keras_model_are_named_for_what_they_are(honest, tmp_path, capsys):
    path, _ = honest
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[:300])
    for command in (["evaluate", str(truncated)], ["export", str(truncated), "p.onnx", "--format", "onnx"]):
        assert main(command) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "truncated or corrupted" in error and str(truncated) in error
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain = tmp_path / "plain.keras"
    model.save(plain)
    for command in (["evaluate", str(plain)], ["export", str(plain), "p.onnx", "--format", "onnx"]):
        assert main(command) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "holds a Sequential, not a keras-rl-gym agent" in error


def test_a_spec_naming_another_entry_point_runs_nothing_unless_trusted(honest, tmp_path, evil, capsys):
    path, state = honest
    module, marker = evil()
    saved = {"env": "CartPole-v1", "spec": spec_json(entry_point=f"{module}:Env")}
    crafted = rewrite(path, tmp_path / "spec.keras", {**state, "env_config": saved})
    assert main(["evaluate", str(crafted), "--episodes", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert f"entry point '{module}:Env'" in error and "--env ID" in error and "--trust-env" in error
    assert not marker.exists()
    # os:system, as the issue found it: refused before anything is called.
    command = {"env": "CartPole-v1", "spec": spec_json(entry_point="os:system", kwargs={"command": f"touch {marker}"})}
    with pytest.raises(UnsafeEnvError, match="os:system"):
        rebuild_env(command)
    assert not marker.exists()
    # The opt-in rebuilds exactly what the file says: the payload is real.
    main(["evaluate", str(crafted), "--episodes", "1", "--trust-env"])
    assert marker.read_text() == "env made"


def test_a_spec_naming_a_foreign_wrapper_runs_nothing(evil):
    module, marker = evil()
    wrappers = [{"name": "W", "entry_point": f"{module}:wrapper", "kwargs": {}}]
    saved = {"env": "CartPole-v1", "spec": spec_json(additional_wrappers=wrappers)}
    with pytest.raises(UnsafeEnvError, match=f"wrapper '{module}:wrapper'"):
        rebuild_env(saved)
    assert not marker.exists()
    rebuild_env(saved, trust=True)
    assert marker.read_text() == "wrapper called"
    # Gymnasium's own data wrappers rebuild, with checked parameters.
    ours = [{"name": "ClipReward", "entry_point": "gymnasium.wrappers:ClipReward", "kwargs": {"min_reward": -1.0}}]
    env = rebuild_env({"env": "CartPole-v1", "spec": spec_json(additional_wrappers=ours)})
    assert isinstance(env, gym.wrappers.ClipReward)
    bad = [{"name": "ClipReward", "entry_point": "gymnasium.wrappers:ClipReward", "kwargs": {"func": "os.system"}}]
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['func'\]"):
        rebuild_env({"env": "CartPole-v1", "spec": spec_json(additional_wrappers=bad)})


@pytest.mark.parametrize("where", ["env", "config"])
def test_a_module_env_id_imports_nothing(evil, where):
    module, marker = evil(on_import=True)
    saved = {"env": f"{module}:Env"} if where == "env" else {"config": {"env": f"{module}:Env"}}
    with pytest.raises(UnsafeEnvError, match="would import a module"):
        rebuild_env(saved)
    assert not marker.exists()
    # Trusted, Gymnasium imports the module (which registers nothing here, hence the error).
    with pytest.raises((gym.error.Error, ValueError)):
        rebuild_env(saved, trust=True)
    assert marker.read_text() == "imported"


def test_a_saved_run_config_takes_only_the_packages_factories_and_wrappers():
    with pytest.raises(UnsafeEnvError, match="env_factory 'os:system'"):
        rebuild_env({"config": {"env": "CartPole-v1", "env_factory": "os:system"}})
    with pytest.raises(UnsafeEnvError, match="wrapper 'os:system'"):
        rebuild_env({"config": {"env": "CartPole-v1", "wrappers": ["os:system"]}})
    with pytest.raises(ValueError, match=r"wrapper RemoveVelocity: unknown parameter\(s\) \['command'\]"):
        rebuild_env({"config": {"env": "CartPole-v1", "wrappers": [["RemoveVelocity", {"command": "ls"}]]}})
    with pytest.raises(UnsafeEnvError, match="not in Gymnasium's registry"):
        rebuild_env({"config": {"env": "NoSuchEnv-v0"}})
    env = rebuild_env({"config": {"env": "CartPole-v1", "wrappers": ["RemoveVelocity"]}})
    assert env.observation_space.shape == (2,)


def test_a_saved_lambda_network_loads_only_with_the_unsafe_opt_in(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "lambda.marker"
    monkeypatch.setenv("KRG_TEST_MARKER", str(marker))
    env = gym.make("CartPole-v1")
    inputs = keras.Input((4,))
    # The payload runs whenever the layer is called: at load (build) and at every act.
    # (Keras saves a lambda's bytecode, not its closure or defaults: the path comes from the environment.)
    touch = lambda t: (open(__import__("os").environ["KRG_TEST_MARKER"], "w").close(), t)[1]  # noqa: E731
    logits = keras.layers.Dense(2)(keras.layers.Lambda(touch)(inputs))
    agent = PPOAgent(env.observation_space, env.action_space, network=keras.Model(inputs, logits), n_steps=8, seed=0)
    agent.fit(env, steps=8, verbose=0)
    agent.save(tmp_path / "lambda.keras")
    marker.unlink()
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.saving.load_model(tmp_path / "lambda.keras")
    assert main(["evaluate", str(tmp_path / "lambda.keras"), "--episodes", "1"]) == 2
    assert "safe_mode=False" in capsys.readouterr().err
    assert not marker.exists()
    assert main(["evaluate", str(tmp_path / "lambda.keras"), "--episodes", "1", "--unsafe"]) == 0
    assert marker.exists()
    loaded = keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=False)
    obs = env.reset(seed=0)[0]
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))


def test_the_cli_help_names_the_opt_ins(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "--trust-env" in text and "--unsafe" in text


def test_resuming_from_a_crafted_file_names_the_key(honest, tmp_path, capsys):
    path, state = honest
    crafted = rewrite(path, tmp_path / "crafted.keras", {**state, "_mlflow_run": ["http://127.0.0.1:9", "0"]})
    command = ["train", "--algo", "dqn", "--env", "CartPole-v1", "--steps", "50", "--no-mlflow", "-q"]
    assert main(command + ["--set", "agent.hidden_sizes=[8]", "--resume", str(crafted)]) == 2
    error = capsys.readouterr().err.strip()
    assert "training_state.json" in error and "'_mlflow_run'" in error and str(crafted) in error
