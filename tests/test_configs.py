"""Every shipped config is valid: its algorithm, wrappers, env factory and every agent and train key exist,
and it builds the agent class its algo names, with each of its agent values set, for its env's spaces.

A bad config (a value of the wrong type, broken JSON or YAML, an env that does not exist or does not fit)
makes ``keras-rl-gym train`` print one ``config error`` line and exit 2.
"""

import json
import re
from pathlib import Path

import gymnasium as gym
import pytest

from keras_rl_gym.cli import main
from keras_rl_gym.config import (
    ALGORITHMS,
    ConfigError,
    agent_class,
    check_type,
    load_config,
    make_agent,
    make_env,
    validate_config,
)
from keras_rl_gym.spaces import env_spaces

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.json"))


def test_configs_are_shipped():
    names = {path.stem for path in CONFIGS}
    assert {
        "dqn-cartpole",
        "dqn-dense-cartpole",
        "dqn-conv-pong",
        "drqn-mspacman-ram",
        "qlearning-cartpole",
        "reinforce-cartpole",
        "actor-critic-cartpole",
        "ppo-cartpole",
        "ppo-lunarlander",
        "ddpg-pendulum",
        "ddpg-bipedalwalker",
    } <= names


# The agent class each algo must build: written out here, not read back from config.ALGORITHMS.
EXPECTED_CLASS = {
    "qlearning": "QLearningAgent",
    "dqn": "DQNAgent",
    "drqn": "DRQNAgent",  # the recurrent DQN, once registered under a name of its own
    "reinforce": "ReinforceAgent",
    "actor_critic": "ActorCriticAgent",
    "a2c": "ActorCriticAgent",
    "ppo": "PPOAgent",
    "ddpg": "DDPGAgent",
    "td3": "TD3Agent",
    "sac": "SACAgent",
}


def test_every_registered_algo_has_its_expected_class():
    """The table above and the registry agree, so a new algo cannot skip the build test below."""
    for algo in ALGORITHMS:
        assert algo in EXPECTED_CLASS, f"add {algo!r} to EXPECTED_CLASS"
        assert agent_class(algo).__name__ == EXPECTED_CLASS[algo]


def plain(value):
    """Tuples as lists, so a config's JSON list compares equal to an agent's tuple."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_the_agent_it_names_with_its_hyperparameters(path):
    """Each shipped config builds its algo's class, for its env's spaces, with every value of its agent section."""
    config = load_config(path)
    assert config.get("description"), "every config says where its values come from"
    if str(config.get("env_factory")).startswith("atari"):
        pytest.importorskip("ale_py")
    try:
        env = make_env(config, num_envs=1)  # the agent sees one env's spaces: no worker processes needed
    except ConfigError as error:
        if isinstance(error.__cause__, gym.error.DependencyNotInstalled):
            pytest.skip(str(error))  # Box2D envs without gymnasium[box2d]
        raise
    try:
        agent = make_agent(config, env)
        obs_space, act_space = env_spaces(env)
    finally:
        env.close()
    assert type(agent).__name__ == EXPECTED_CLASS[config["algo"]]
    assert type(agent) is agent_class(config["algo"])
    assert agent.observation_space == obs_space and agent.action_space == act_space
    built = agent.get_config()
    for key, value in config["agent"].items():
        assert key in built, f"{path.name}: agent.{key} is not in {type(agent).__name__}.get_config()"
        assert plain(built[key]) == plain(value), f"{path.name}: agent.{key} is {built[key]!r}, the file says {value!r}"
    assert built["seed"] == config.get("train", {}).get("seed")


# -- bad configs: one `config error` line and exit 2, never a traceback --------------------------------


def write(tmp_path, config, name="config.json") -> str:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return str(path)


def probe_config(**overrides) -> dict:
    """A DQN on CartPole that trains in a second; ``overrides`` update its top level and its ``agent``."""
    config = {
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"hidden_sizes": [16], "learning_starts": 50, "batch_size": 16},
        "train": {"steps": 200, "seed": 0, "eval_episodes": 1, "mlflow": False},
    }
    config["agent"].update(overrides.pop("agent", {}))
    config.update(overrides)
    return config


def config_error(capsys, path: str) -> str:
    """The one stderr line of ``keras-rl-gym train path``, which must exit 2."""
    assert main(["train", path, "-q"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-rl-gym: config error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "agent, names",
    [
        ({"double": "false"}, ["agent.double", "true or false (bool)", "'false'"]),
        ({"gamma": "0.9"}, ["agent.gamma", "a number (float)", "'0.9'"]),
        ({"hidden_sizes": 64}, ["agent.hidden_sizes", "a list of integers (Sequence[int])", "got 64"]),
        ({"hidden_sizes": "64"}, ["agent.hidden_sizes", "Sequence[int]", "'64'"]),
        ({"hidden_sizes": [64, 64.5]}, ["agent.hidden_sizes", "Sequence[int]", "[64, 64.5]"]),
        ({"batch_size": 32.0}, ["agent.batch_size", "an integer (int)", "32.0"]),
        ({"batch_size": True}, ["agent.batch_size", "an integer (int)", "True"]),
        ({"learning_rate": True}, ["agent.learning_rate", "a number or a keras.optimizers.schedules", "True"]),
        ({"dueling": 1}, ["agent.dueling", "true or false (bool)", "got 1"]),
        ({"network": 3}, ["agent.network", "a string or a keras.Model or a function", "got 3"]),
        ({"max_grad_norm": "10"}, ["agent.max_grad_norm", "a number or null (float | None)", "'10'"]),
    ],
    ids=lambda v: "-".join(f"{k}={v!r}" for k, v in v.items()) if isinstance(v, dict) else None,
)
def test_agent_value_of_the_wrong_type_is_a_config_error(tmp_path, capsys, agent, names):
    line = config_error(capsys, write(tmp_path, probe_config(agent=agent)))
    for name in names:
        assert name in line


@pytest.mark.parametrize(
    "agent",
    [
        {"learning_rate": 1, "gamma": 1},  # a float takes an int
        {"hidden_sizes": [32, 32], "double": True, "max_grad_norm": None, "learning_rate_decay": 0.5},
        {"hidden_sizes": (32,), "seed": None},
        {"name": "any"},  # not annotated: unchecked
    ],
)
def test_agent_values_of_the_right_type_pass(agent):
    validate_config(probe_config(agent=agent))


def test_check_type_checks_the_simple_forms_and_passes_the_others():
    check_type("a", 3, "int | None")
    check_type("a", None, "Optional[int]")
    check_type("a", [1.5, 2], "list[float]")
    check_type("a", ("x",), "tuple[str, ...]")
    # Not a simple form, or no annotation: anything goes.
    check_type("a", "anything", "dict[str, int]")
    check_type("a", "anything", "Callable[[int], float]")
    check_type("a", "anything", None)
    for value, annotation in [(1.0, "int"), (False, "int | None"), ("1", "float"), (0, "bool"), (3, "list[int]")]:
        with pytest.raises(ConfigError, match=f"^a must be .*got {re.escape(repr(value))}"):
            check_type("a", value, annotation)


def test_num_envs_zero_is_a_config_error(tmp_path, capsys):
    assert "num_envs must be a positive integer, got 0" in config_error(
        capsys, write(tmp_path, probe_config(num_envs=0))
    )


def test_broken_json_names_the_file_and_line(tmp_path, capsys):
    path = write(tmp_path, '{\n  "algo": "dqn",\n  "env": "CartPole-v1"\n  "agent": {}\n}\n')
    line = config_error(capsys, path)
    assert f"{path}, line 4" in line and "invalid JSON" in line


def test_broken_yaml_names_the_file_and_line(tmp_path, capsys):
    path = write(tmp_path, "algo: dqn\nenv: CartPole-v1\nagent:\n  hidden_sizes: [16, 16\n  double: true\n", "c.yaml")
    line = config_error(capsys, path)
    assert f"{path}, line 5" in line and "invalid YAML" in line


def test_yaml_exponent_without_a_point_says_how_to_write_it(tmp_path, capsys):
    path = write(tmp_path, "algo: dqn\nenv: CartPole-v1\nagent:\n  learning_rate: 1e-3\n", "c.yaml")
    assert "write it with a point, as 1.0e-3" in config_error(capsys, path)


def test_unknown_env_id_is_a_config_error(tmp_path, capsys):
    line = config_error(capsys, write(tmp_path, probe_config(env="NoSuchEnv-v0")))
    assert "NoSuchEnv" in line and "doesn't exist" in line


def test_unknown_env_id_in_an_async_vector_env_is_a_config_error(tmp_path, capsys):
    config = probe_config(env="NoSuchEnv-v0", num_envs=2, vectorization_mode="async")
    assert "NoSuchEnv" in config_error(capsys, write(tmp_path, config))


def test_atari_factory_refuses_a_non_atari_env(tmp_path, capsys):
    pytest.importorskip("ale_py")
    config = probe_config(env_factory="atari", agent={"network": "conv", "hidden_sizes": [16]})
    line = config_error(capsys, write(tmp_path, config))
    assert "env_factory 'atari'" in line and "'CartPole-v1' is not an Atari env" in line


def test_agent_that_cannot_handle_the_env_spaces_is_a_config_error(tmp_path, capsys):
    line = config_error(capsys, write(tmp_path, probe_config(env="Pendulum-v1")))
    assert "DQNAgent cannot be built for env 'Pendulum-v1'" in line and "Discrete action space" in line
    # Nothing was saved: there was no agent to keep.
    assert not list(tmp_path.glob("*.keras"))


def test_valid_config_trains(tmp_path, capsys):
    assert main(["train", write(tmp_path, probe_config()), "-q"]) == 0
    captured = capsys.readouterr()
    assert "Evaluation over 1 episodes" in captured.out and "config error" not in captured.err


def test_bug_during_training_is_still_an_error_not_a_config_error(tmp_path, capsys, monkeypatch):
    from keras_rl_gym.agents.dqn import DQNAgent

    def broken_fit(self, *args, **kwargs):
        raise ValueError("a bug in fit")

    monkeypatch.setattr(DQNAgent, "fit", broken_fit)
    assert main(["train", write(tmp_path, probe_config()), "-q"]) == 1
    err = capsys.readouterr().err
    assert "keras-rl-gym: error: ValueError: a bug in fit" in err and "config error" not in err
