"""Corners a review found: learning-rate schedules, seeding side effects, space starts and bounds, predict, compile."""

import random

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium import spaces
from probe_envs import CounterEnv

from keras_rl_gym import DDPGAgent, DQNAgent, PPOAgent


def optimizer_lr(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_a_keras_learning_rate_schedule_is_accepted_seen_by_the_optimizer_and_saved(tmp_path):
    env = CounterEnv(length=5)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=50, decay_rate=0.5)
    agent = DQNAgent(env.observation_space, env.action_space, learning_rate=schedule, learning_starts=20, seed=0)
    history = agent.fit(env, steps=220, verbose=0, log_every=220)
    assert agent.updates == 201
    expected = 1e-3 * 0.5 ** (201 / 50)
    assert optimizer_lr(agent.optimizer) == pytest.approx(expected, rel=1e-5)
    assert history.history["learning_rate"][-1] == pytest.approx(expected, rel=1e-5)
    agent.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    assert isinstance(loaded.learning_rate, keras.optimizers.schedules.ExponentialDecay)
    assert optimizer_lr(loaded.optimizer) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="learning_rate_decay"):
        DQNAgent(env.observation_space, env.action_space, learning_rate=schedule, learning_rate_decay=0.9)
    ppo = PPOAgent(env.observation_space, env.action_space, learning_rate=schedule, n_steps=8, batch_size=8, n_epochs=1)
    ppo.fit(env, steps=32, verbose=0)
    assert ppo.updates == 4


def test_a_seeded_agent_leaves_the_global_random_state_alone(tmp_path):
    env = gym.make("CartPole-v1")
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    a = DQNAgent(env.observation_space, env.action_space, seed=7)
    b = DQNAgent(env.observation_space, env.action_space, seed=7)
    c = DQNAgent(env.observation_space, env.action_space, seed=8)
    a.save(tmp_path / "a.keras")
    keras.saving.load_model(tmp_path / "a.keras")
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    # Unseeded agents still differ from each other.
    d, e = (DQNAgent(env.observation_space, env.action_space) for _ in range(2))
    assert not np.array_equal(d.get_weights()[0], e.get_weights()[0])


class ShiftedActionsEnv(CounterEnv):
    """A CounterEnv whose actions are ``Discrete(3, start=5)``; any other action is an error."""

    def __init__(self):
        super().__init__(length=4)
        self.action_space = spaces.Discrete(3, start=5)
        self.seen = set()

    def step(self, action):
        assert self.action_space.contains(int(action)), f"action {action} outside {self.action_space}"
        self.seen.add(int(action))
        return super().step(action)


@pytest.mark.parametrize("agent_class", [DQNAgent, PPOAgent])
def test_discrete_start_is_honoured(agent_class):
    env = ShiftedActionsEnv()
    kwargs = dict(n_steps=8, batch_size=8) if agent_class is PPOAgent else dict(learning_starts=10, batch_size=8)
    agent = agent_class(env.observation_space, env.action_space, seed=0, **kwargs)
    agent.fit(env, steps=64, verbose=0)
    assert env.seen == {5, 6, 7}
    assert agent.evaluate(env, episodes=2)["mean_return"] == 4.0
    assert 5 <= int(agent.act(np.zeros(2, np.float32))) <= 7
    with pytest.raises(ValueError, match=r"start=5"):
        agent.fit(CounterEnv(length=4), steps=10, verbose=0)  # Discrete(2): another space


def test_box_action_bounds_are_compared():
    pendulum = gym.make("Pendulum-v1")
    unit = spaces.Box(-1.0, 1.0, (1,), np.float32)
    agent = DDPGAgent(pendulum.observation_space, unit, learning_starts=10)
    with pytest.raises(ValueError, match=r"action space Box\(-2\.0, 2\.0.*does not match the agent's Box\(-1\.0, 1\.0"):
        agent.fit(pendulum, steps=20, verbose=0)


def test_predict_takes_one_observation_and_a_bad_shape_leaves_the_agent_usable(tmp_path):
    env = CounterEnv(length=5)
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), seed=0)
    obs = np.array([0.0, 1.0], np.float32)
    q = agent.predict(obs, verbose=0)
    assert q.shape == (2,)
    np.testing.assert_allclose(q, agent.predict(obs[None], verbose=0)[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(2,\) or a batch \(n, 2\), got shape \(3,\)"):
        agent.predict(np.zeros(3, np.float32), verbose=0)
    # Still usable afterwards (on JAX a failed Keras predict used to purge the variables).
    assert agent.act(obs) in (0, 1)
    np.testing.assert_allclose(agent.predict(obs, verbose=0), q, rtol=1e-6)
    agent.save(tmp_path / "ok.keras")


def test_compile_is_refused_with_a_clear_error_and_fit_still_works():
    env = CounterEnv(length=5)
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), learning_starts=10, seed=0)
    with pytest.raises(TypeError, match="builds its own optimizer"):
        agent.compile(optimizer="adam", loss="mse")
    agent.fit(env, steps=40, verbose=0)
    assert agent.updates == 31
