"""A round of updates in one compiled call (PPO's epochs, DQN's gradient_steps) equals the updates one by one."""

import gymnasium as gym
import numpy as np

from keras_rl_gym import DQNAgent, PPOAgent


def _agent():
    env = gym.make("CartPole-v1")
    return DQNAgent(env.observation_space, env.action_space, hidden_sizes=(16,), learning_starts=0, seed=0)


def _batches(k, rng, reward_scale=1.0):
    return {
        "obs": rng.normal(size=(k, 8, 4)).astype(np.float32),
        "action": rng.integers(0, 2, (k, 8)).astype(np.int32),
        "reward": (reward_scale * rng.normal(size=(k, 8))).astype(np.float32),
        "next_obs": rng.normal(size=(k, 8, 4)).astype(np.float32),
        "terminated": (rng.random((k, 8)) < 0.2).astype(np.float32),
    }


def test_round_equals_one_update_at_a_time():
    batches = _batches(5, np.random.default_rng(0))
    one_by_one, round_ = _agent(), _agent()
    expected = [one_by_one.train_step({k: v[i] for k, v in batches.items()}) for i in range(5)]
    got = list(round_._train_round(batches))
    assert round_.updates == one_by_one.updates == 5
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    for a, b in zip(one_by_one.get_weights(), round_.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_held_round_reports_through_drain_and_fuses_with_the_next_act():
    batches = _batches(4, np.random.default_rng(1))
    reference, agent = _agent(), _agent()
    expected = [reference.train_step({k: v[i] for k, v in batches.items()})["loss"] for i in range(4)]
    runtime = agent.runtime
    runtime.hold(10)
    items = list(agent._train_round(batches))
    assert len(items) == 4  # one item per update, as fit counts them
    runtime.act(np.zeros((1, 4), np.float32))  # runs the waiting round with this act, where the runtime fuses them
    losses = [m["loss"] for m in items if m] + [m["loss"] for m in runtime.drain(wait=True)]
    runtime.release()
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_a_non_finite_loss_skips_its_update_and_the_rest_of_the_round():
    rng = np.random.default_rng(2)
    batches = _batches(4, rng)
    batches["reward"][2, 0] = np.nan
    agent, reference = _agent(), _agent()
    for i in range(2):
        reference.train_step({k: v[i] for k, v in batches.items()})
    reported = list(agent._train_round(batches))
    assert np.isfinite(reported[1]["loss"]) and not np.isfinite(reported[2]["loss"])
    for a, b in zip(reference.get_weights(), agent.get_weights()):  # the weights after the last finite update
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ppo_and_dqn_rounds_train_in_fit():
    env = gym.make("CartPole-v1")
    ppo = PPOAgent(env.observation_space, env.action_space, n_steps=64, batch_size=32, n_epochs=3, seed=0)
    history = ppo.fit(env, steps=640, verbose=0, log_every=320)
    assert ppo.updates == 10 * 2 * 3 and np.isfinite(history.history["loss"]).all()
    dqn = DQNAgent(env.observation_space, env.action_space, learning_starts=100, train_freq=4, gradient_steps=3, seed=0)
    history = dqn.fit(env, steps=500, verbose=0, log_every=250)
    assert dqn.updates == 100 * 3 and np.isfinite(history.history["loss"]).all()
