"""Keras's own callbacks during fit: an epoch is one log interval, a batch one gradient update."""

import csv

import keras
import numpy as np
import pytest
from probe_envs import CounterEnv

from keras_rl_gym import DQNAgent


def small_dqn(env):
    return DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), learning_starts=10, seed=0)


def optimizer_lr(agent):
    return float(keras.ops.convert_to_numpy(agent.optimizer.learning_rate))


def test_early_stopping_on_a_logged_metric_stops_fit():
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    # "episodes" only grows: in "min" mode it never improves, so patience 1 stops after the second interval.
    stop = keras.callbacks.EarlyStopping(monitor="episodes", mode="min", patience=1)
    history = agent.fit(env, steps=1000, verbose=0, log_every=100, callbacks=[stop])
    assert agent.env_steps == 200 and len(history.history["episodes"]) == 2
    assert stop.stopped_epoch == 1


def test_csv_logger_writes_one_row_per_interval(tmp_path):
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    agent.fit(env, steps=300, verbose=0, log_every=100, callbacks=[keras.callbacks.CSVLogger(tmp_path / "log.csv")])
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["env_steps"]) for row in rows] == [100.0, 200.0, 300.0]
    assert all(float(row["loss"]) >= 0 for row in rows)


def test_learning_rate_scheduler_sets_the_rate_the_updates_use():
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-3 * 0.5**epoch)
    history = agent.fit(env, steps=300, verbose=0, log_every=100, callbacks=[scheduler])
    # Epochs 0, 1, 2 ran at 1e-3, 5e-4, 2.5e-4: logged from the optimizer, and held there after fit.
    assert history.history["learning_rate"] == pytest.approx([1e-3, 5e-4, 2.5e-4], rel=1e-6)
    assert optimizer_lr(agent) == pytest.approx(2.5e-4, rel=1e-6)
    # The updates really used the new rate: the same run at a constant 1e-3 ends elsewhere.
    constant = small_dqn(env)
    constant.fit(CounterEnv(length=5), steps=300, verbose=0, log_every=100)
    assert optimizer_lr(constant) == pytest.approx(1e-3, rel=1e-6)
    assert any(float(abs(a - b).max()) > 1e-6 for a, b in zip(agent.get_weights(), constant.get_weights()))


def test_train_step_is_the_update_and_train_on_batch_calls_it(tmp_path):
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    agent.fit(env, steps=60, verbose=0)
    agent.save(tmp_path / "start.keras")
    batches = [agent.buffer.sample(32) for _ in range(6)]

    one_by_one = keras.saving.load_model(tmp_path / "start.keras")
    metrics = [one_by_one.train_on_batch(b, return_dict=True) for b in batches]
    assert all(list(m)[0] == "loss" and m["loss"] >= 0 for m in metrics)
    assert one_by_one.updates == agent.updates + 6

    # The path fit takes: state held by the runtime, each update dispatched with the next action.
    held = keras.saving.load_model(tmp_path / "start.keras")
    held.runtime.hold(len(batches))
    for batch in batches:
        held.train_step(batch)
        held.runtime.act(batch["obs"])
    held.runtime.release()
    for a, b in zip(one_by_one.get_weights(), held.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="one dict of arrays"):
        held.train_on_batch(np.zeros((4, 2)), np.zeros(4))
