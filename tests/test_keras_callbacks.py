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


class Recorder(keras.callbacks.Callback):
    """Records each standard hook Keras's CallbackList calls, in order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, logs["env_steps"]))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_standard_hooks_fire_in_keras_order_with_rl_units():
    """A batch is one update (indexed from 0 in each epoch), an epoch one log interval."""
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    recorder = Recorder()
    agent.fit(env, steps=300, verbose=0, log_every=100, callbacks=[recorder])
    calls = recorder.calls
    assert calls[0] == ("train_begin",) and calls[1] == ("epoch_begin", 0) and calls[-1] == ("train_end",)
    assert [c[1:] for c in calls if c[0] == "epoch_end"] == [(0, 100.0), (1, 200.0), (2, 300.0)]
    ends = [c for c in calls if c[0] == "batch_end"]
    assert len(ends) == agent.updates == 300 - 10 + 1  # one update per step from learning_starts=10 on
    # Each batch_end follows its batch_begin; indices restart at 0 after each epoch_begin.
    for before, after in zip(calls, calls[1:]):
        if after[0] == "batch_end":
            assert before == ("batch_begin", after[1])
    starts = [i for i, c in enumerate(calls) if c[0] == "epoch_begin"]
    for first, last in zip(starts, starts[1:] + [len(calls)]):
        indices = [c[1] for c in calls[first:last] if c[0] == "batch_end"]
        assert indices == list(range(len(indices)))
    assert all(np.isfinite(c[2]) for c in ends)


def test_terminate_on_nan_ends_fit_normally_on_the_last_finite_weights():
    """With TerminateOnNaN, a NaN loss stops fit as Keras's does (no NonFiniteLossError)."""
    calls = iter(range(10**6))
    env = CounterEnv(length=5, reward=lambda t: np.nan if next(calls) == 40 else 1.0)  # the 41st step's reward
    agent = small_dqn(env)
    recorder = Recorder()
    history = agent.fit(env, steps=500, verbose=0, log_every=10, callbacks=[keras.callbacks.TerminateOnNaN(), recorder])
    assert agent.stop_training and 40 < agent.env_steps < 500
    # The NaN update was the last one reported, and nothing ran after it.
    ends = [c for c in recorder.calls if c[0] == "batch_end"]
    assert np.isnan(ends[-1][2]) and all(np.isfinite(c[2]) for c in ends[:-1])
    assert all(np.isfinite(w).all() for w in agent.get_weights())
    # The stopped interval still ends its epoch, with the finite losses only.
    assert recorder.calls[-2][0] == "epoch_end" and recorder.calls[-1] == ("train_end",)
    assert all(np.isfinite(loss) for loss in history.history["loss"])


def test_terminate_on_nan_raise_error_goes_through_the_failure_path(tmp_path):
    env = CounterEnv(length=5, reward=lambda t: np.nan if t == 3 else 1.0)
    agent = small_dqn(env)
    path = tmp_path / "stopped.keras"
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        agent.fit(
            env,
            steps=500,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN(raise_error=True)],
            checkpoint_path=path,
        )
    assert all(np.isfinite(w).all() for w in keras.saving.load_model(path).get_weights())


def test_tensorboard_writes_epoch_and_batch_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(log_dir, update_freq):
        env = CounterEnv(length=5)
        board = keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=update_freq)
        small_dqn(env).fit(env, steps=300, verbose=0, log_every=100, callbacks=[board])
        events = EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0})
        events.Reload()
        return {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}

    # One point per interval for each logged metric, and the optimizer's learning rate.
    epochs = scalars(tmp_path / "epochs", "epoch")
    for tag in ("epoch_loss", "epoch_episode_return", "epoch_learning_rate", "epoch_env_steps"):
        assert epochs[tag] == [0, 1, 2], tag
    # Batch summaries every 50 updates (291 updates from learning_starts=10).
    batches = scalars(tmp_path / "batches", 50)
    assert batches["batch_loss"] == [50, 100, 150, 200, 250]


def test_early_stopping_restores_the_best_weights_it_saw_mid_fit():
    """EarlyStopping reads weights at an epoch's end: the held (JAX) state is in the variables by then."""

    class Snapshots(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    seen = []
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    # "episodes" only grows: in "max" mode every epoch improves, so the last is best; "min" keeps the first.
    stop = keras.callbacks.EarlyStopping(monitor="episodes", mode="min", patience=2, restore_best_weights=True)
    agent.fit(env, steps=1000, verbose=0, log_every=100, callbacks=[Snapshots(), stop])
    assert len(seen) == 3 and any(float(abs(a - b).max()) > 1e-6 for a, b in zip(seen[0], seen[2]))
    for a, b in zip(agent.get_weights(), seen[0]):
        np.testing.assert_array_equal(a, b)


def test_set_weights_in_a_callback_reaches_the_updates():
    """A callback's set_weights mid-fit is what the next updates start from, on every backend."""

    class Reset(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.set_weights(start)

    env = CounterEnv(length=5)
    agent = small_dqn(env)
    start = agent.get_weights()
    agent.fit(env, steps=200, verbose=0, log_every=100, callbacks=[Reset()])
    # The reset undid the first interval's updates, so the weights moved only by the second's.
    moved = small_dqn(CounterEnv(length=5))
    moved.fit(CounterEnv(length=5), steps=200, verbose=0, log_every=100)
    assert any(float(abs(a - b).max()) > 1e-6 for a, b in zip(agent.get_weights(), moved.get_weights()))
    assert any(float(abs(a - b).max()) > 1e-6 for a, b in zip(agent.get_weights(), start))


def test_reduce_lr_on_plateau_and_lambda_callback_work():
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    epochs = []
    # "episodes" never decreases: in "min" mode the first interval is the best, so the rate halves after each later one.
    reduce = keras.callbacks.ReduceLROnPlateau(monitor="episodes", mode="min", factor=0.5, patience=0, min_lr=1e-6)
    lam = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    history = agent.fit(env, steps=300, verbose=0, log_every=100, callbacks=[reduce, lam])
    assert epochs == [0, 1, 2]
    # Logged before the callback acts on an interval; the optimizer holds the last halving.
    assert history.history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4], rel=1e-6)
    assert optimizer_lr(agent) == pytest.approx(2.5e-4, rel=1e-6)


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda p: keras.callbacks.ProgbarLogger(), "verbose=1"),
        (lambda p: keras.callbacks.BackupAndRestore(str(p)), "Checkpoint"),
        (lambda p: keras.callbacks.SwapEMAWeights(), "EMA"),
    ],
)
def test_standard_callbacks_without_an_rl_meaning_are_refused(tmp_path, make, why):
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    with pytest.raises(ValueError, match=f"is not supported by DQNAgent.fit: .*{why}"):
        agent.fit(env, steps=20, verbose=0, callbacks=[make(tmp_path)])
    with pytest.raises(TypeError, match="keras.callbacks.Callback instances"):
        agent.fit(env, steps=20, verbose=0, callbacks=[print])
    assert agent.env_steps == 0


def test_remote_monitor_posts_each_interval(monkeypatch):
    import requests

    posted = []
    monkeypatch.setattr(requests, "post", lambda url, **kwargs: posted.append((url, kwargs)))
    env = CounterEnv(length=5)
    monitor = keras.callbacks.RemoteMonitor(root="http://monitor", send_as_json=True)
    small_dqn(env).fit(env, steps=200, verbose=0, log_every=100, callbacks=[monitor])
    assert [url for url, _ in posted] == ["http://monitor/publish/epoch/end/"] * 2
    assert [kwargs["json"]["env_steps"] for _, kwargs in posted] == [100.0, 200.0]
