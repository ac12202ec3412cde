"""Every shipped config is valid: its algorithm, wrappers, env factory and every agent and train key exist."""

from pathlib import Path

import pytest

from keras_rl_gym.config import agent_class, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.json"))


def test_configs_are_shipped():
    names = {path.stem for path in CONFIGS}
    assert {
        "dqn-cartpole",
        "dqn-dense-cartpole",
        "dqn-conv-pong",
        "dqn-lstm-mspacman-ram",
        "qlearning-cartpole",
        "reinforce-cartpole",
        "actor-critic-cartpole",
        "ppo-cartpole",
        "ppo-lunarlander",
        "ddpg-pendulum",
        "ddpg-bipedalwalker",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    config = load_config(path)
    assert config.get("description"), "every config says where its values come from"
    assert agent_class(config["algo"]).__name__.endswith("Agent")
