"""Bring your own network: every agent takes a keras.Model (or a function of the spaces) for each network."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from probe_envs import CounterEnv

from keras_rl_gym import ActorCriticAgent, DDPGAgent, DQNAgent, DRQNAgent, PPOAgent, ReinforceAgent


def tiny_mlp(outputs, activation=None, name="mine"):
    """A function of the spaces, as a user writes one: (observation_space, action_space) -> keras.Model."""

    def build(observation_space, action_space):
        obs = keras.Input(observation_space.shape)
        hidden = keras.layers.Dense(8, activation="tanh")(obs)
        return keras.Model(obs, keras.layers.Dense(outputs, activation=activation)(hidden), name=name)

    return build


def tiny_critic(observation_space, action_space):
    obs, action = keras.Input(observation_space.shape), keras.Input(action_space.shape)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([obs, action]))
    return keras.Model([obs, action], keras.layers.Dense(1)(hidden), name="my_critic")


def assert_trained_saved_and_loaded(agent, env, networks, tmp_path, steps=200):
    """The user's networks are the agent's: fit moves their weights, save/load keeps them."""
    before = {name: [w.copy() for w in net.get_weights()] for name, net in networks.items()}
    agent.fit(env, steps=steps, verbose=0)
    for name, net in networks.items():
        assert any(not np.allclose(a, b) for a, b in zip(before[name], net.get_weights())), f"{name} did not train"
    agent.save(tmp_path / "agent.keras")
    loaded = keras.saving.load_model(tmp_path / "agent.keras")
    for a, b in zip(agent.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    np.testing.assert_allclose(agent.act(obs), loaded.act(obs), rtol=1e-6, atol=1e-6)
    return loaded


@pytest.mark.parametrize("agent_class", [PPOAgent, ActorCriticAgent, ReinforceAgent])
def test_policy_agents_train_save_and_load_a_users_policy_and_value_networks(agent_class, tmp_path):
    env = CounterEnv(length=5)
    value = tiny_mlp(1, name="my_value")(env.observation_space, env.action_space)
    extra = {"n_steps": 16, "batch_size": 16, "n_epochs": 1} if agent_class is PPOAgent else {}
    extra = {"n_steps": 8} if agent_class is ActorCriticAgent else extra
    critic = {"baseline": True} if agent_class is ReinforceAgent else {}
    agent = agent_class(
        env.observation_space, env.action_space, network=tiny_mlp(2), value_network=value, seed=0, **extra, **critic
    )
    assert agent.policy_network.name == "mine" and agent.value_network is value
    loaded = assert_trained_saved_and_loaded(
        agent, env, {"policy": agent.policy_network, "value": agent.value_network}, tmp_path
    )
    # The saved config holds the models themselves: loading needs neither the function nor this file.
    assert loaded.policy_network.name == "mine" and loaded.value_network.name == "my_value"
    assert loaded.get_config()["network"]["class_name"] == "Functional"


def test_ddpg_trains_saves_and_loads_a_users_actor_and_critic(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = DDPGAgent(
        env.observation_space,
        env.action_space,
        actor_network=tiny_mlp(1, activation="tanh", name="my_actor"),
        critic_network=tiny_critic,
        learning_starts=50,
        batch_size=16,
        seed=0,
    )
    assert agent.actor.name == "my_actor" and agent.critic.name == "my_critic"
    # Its target copies are clones with the same weights, not the same variables.
    assert all(t is not o for t, o in zip(agent.target_critic.weights, agent.critic.weights))
    loaded = assert_trained_saved_and_loaded(agent, env, {"actor": agent.actor, "critic": agent.critic}, tmp_path)
    assert loaded.critic.name == "my_critic"


def test_a_network_that_does_not_fit_the_spaces_is_refused_with_a_clear_error():
    env = CounterEnv(length=5)
    spaces = (env.observation_space, env.action_space)
    with pytest.raises(ValueError, match=r"PPOAgent: network 'mine' outputs shape \(3,\) .* needs \(2,\)"):
        PPOAgent(*spaces, network=tiny_mlp(3))
    with pytest.raises(ValueError, match=r"value_network 'mine' outputs shape \(2,\) .* needs \(1,\)"):
        PPOAgent(*spaces, value_network=tiny_mlp(2)(*spaces))
    wrong_input = keras.Sequential([keras.Input((7,)), keras.layers.Dense(2)], name="seven")
    with pytest.raises(ValueError, match=r"network 'seven' cannot take this agent's input\(s\) \[\(2,\) float32\]"):
        ActorCriticAgent(*spaces, network=wrong_input)
    with pytest.raises(ValueError, match="PPOAgent: network must be a string or a keras.Model or a function"):
        PPOAgent(*spaces, network=42)
    with pytest.raises(ValueError, match="no critic"):
        ReinforceAgent(*spaces, value_network=tiny_mlp(1))
    pendulum = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match=r"DDPGAgent: critic_network 'mine' cannot take"):
        DDPGAgent(pendulum.observation_space, pendulum.action_space, critic_network=tiny_mlp(1))


def test_dqn_trains_saves_and_loads_a_users_q_network(tmp_path):
    env = CounterEnv(length=5)
    q = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)], name="q")
    agent = DQNAgent(env.observation_space, env.action_space, network=q, learning_starts=20, double=True, seed=0)
    assert agent.q_network is q and agent.target_network is not q
    loaded = assert_trained_saved_and_loaded(agent, env, {"q": q}, tmp_path)
    assert loaded.q_network.name == "q"
    with pytest.raises(ValueError, match=r"DQNAgent: network 'mine' outputs shape \(3,\) .* needs \(2,\)"):
        DQNAgent(env.observation_space, env.action_space, network=tiny_mlp(3))


def users_lstm(observation_space, action_space, units=8):
    """A DRQN Q-network: [obs sequence, h, c] -> [Q-values per step, h, c]."""
    obs = keras.Input((None, *observation_space.shape))
    h, c = keras.Input((units,)), keras.Input((units,))
    seq, h_out, c_out = keras.layers.LSTM(units, return_sequences=True, return_state=True)(obs, initial_state=[h, c])
    q = keras.layers.Dense(int(action_space.n))(seq)
    return keras.Model([obs, h, c], [q, h_out, c_out], name="my_lstm")


def test_drqn_trains_saves_and_loads_a_users_recurrent_q_network(tmp_path):
    env = CounterEnv(length=5)
    agent = DRQNAgent(
        env.observation_space,
        env.action_space,
        network=users_lstm,
        lstm_size=8,
        sequence_length=4,
        learning_starts=20,
        seed=0,
    )
    assert agent.q_network.name == "my_lstm"
    loaded = assert_trained_saved_and_loaded(agent, env, {"q": agent.q_network}, tmp_path)
    assert loaded.q_network.name == "my_lstm"
    # The state size must be the agent's lstm_size: the check feeds states of that size.
    with pytest.raises(ValueError, match=r"DRQNAgent: network 'my_lstm' cannot take .*\[\(3, 2\) float32, \(16,\)"):
        DRQNAgent(env.observation_space, env.action_space, network=users_lstm, lstm_size=16)
