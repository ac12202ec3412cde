"""Runtimes report every update's metrics, once, in order, on every backend.

Inside ``hold()`` a fused runtime (JAX, TensorFlow) runs each update with the
next act, so it reports the update's metrics later than ``update()`` returns.
These tests play the same script of calls through a held runtime, as ``fit``
makes them, and one call at a time outside ``hold()``, where every update runs
at once: the metrics reported, their order, what each act returns, and the weights must be the same.
"""

import math

import keras
import numpy as np
import pytest
from probe_envs import CounterEnv
from test_dqn import OptimizerRates

from keras_rl_gym import DQNAgent, PPOAgent
from keras_rl_gym.spaces import env_spaces

LENGTH = 4  # CounterEnv episode length: obs [episode, t] with t in 0..LENGTH


def counter_batch(seed, n=8, nan=False):
    """Transitions as CounterEnv makes them: ``next_obs = obs + [0, 1]``, terminated at the last step."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, LENGTH, n)
    obs = np.stack([rng.integers(0, 20, n), t], axis=1).astype("float32")
    reward = np.ones(n, "float32")
    if nan:
        reward[0] = np.nan
    return {
        "obs": obs,
        "action": rng.integers(0, 2, n).astype("int32"),
        "reward": reward,
        "next_obs": obs + np.array([0.0, 1.0], "float32"),
        "terminated": (t + 1 == LENGTH).astype("float32"),
    }


OBS = counter_batch(99, n=3)["obs"]


class ActsWithQ(DQNAgent):
    """A DQN whose compiled act also returns the Q-values behind its greedy actions: a test can see
    which weights an act read, where the greedy actions alone rarely change in one small update."""

    def act_graph(self, obs):
        q = self.q_network(obs)
        return keras.ops.argmax(q, axis=-1), q

    def _greedy(self, obs):
        return np.asarray(self.runtime.act(obs)[0])


def numpy_q(agent, obs):
    """The Q-network's forward pass in NumPy, from the Keras variables' current values."""
    (k0, b0), (k1, b1) = (agent.q_network.get_layer(f"q_network_{n}").get_weights() for n in ("dense0", "q"))
    return np.maximum(obs @ k0 + b0, 0.0) @ k1 + b1


def make_agents():
    spaces = env_spaces(CounterEnv(length=LENGTH))
    plain = ActsWithQ(*spaces, hidden_sizes=(8,), max_grad_norm=1.0, seed=0)
    held = ActsWithQ(*spaces, hidden_sizes=(8,), max_grad_norm=1.0, seed=0)
    held.set_weights(plain.get_weights())
    return plain, held


def check_act(out):
    """The act's greedy actions and Q-values, checked for shape, dtype and range; returns the Q-values."""
    actions, q = out
    assert actions.shape == (len(OBS),) and np.issubdtype(actions.dtype, np.integer)
    assert q.shape == (len(OBS), 2) and q.dtype == np.float32
    np.testing.assert_array_equal(actions, q.argmax(axis=1))  # in {0, 1}: the greedy ones
    return q


def play_plain(agent, script):
    """Each call at once, outside ``hold()``: every ``update`` returns its own metrics and every
    act reads the weights of all the updates before it (checked against NumPy on those weights).

    Returns the metrics reported and the Q-values of each act.
    """
    reported, acts = [], []
    for op, *args in script:
        if op == "update":
            reported.append(agent.runtime.update(*args))
        elif op == "act":
            acts.append(check_act(agent.runtime.act(OBS)))
            np.testing.assert_allclose(acts[-1], numpy_q(agent, OBS), rtol=1e-5, atol=1e-5)
        elif op == "targets":
            agent.runtime.update_targets(*args)
    return reported, acts


def play_held(agent, script, stop_on_nan=False):
    """The script inside ``hold()``, read as ``fit`` reads it: ``update``'s non-empty dicts and,
    after each act, ``drain()``; then ``drain()`` after ``release()``.

    Returns the metrics reported, after each act how many updates were still unreported,
    and the Q-values of each act.
    """
    runtime = agent.runtime
    reported, unreported_after_act, acts, updates = [], [], [], 0

    def take(metrics_list):
        reported.extend(m for m in metrics_list if m)
        return any(not math.isfinite(m["loss"]) for m in metrics_list if m)

    runtime.hold(100)
    for op, *args in script:
        if op == "update":
            updates += 1
            failed = take([runtime.update(*args)])
        elif op == "act":
            acts.append(check_act(runtime.act(OBS)))
            failed = take(runtime.drain())
            unreported_after_act.append(updates - len(reported))
        elif op == "targets":
            runtime.update_targets(*args)
            failed = False
        elif op == "sync":
            runtime.sync()
            failed = False
        if stop_on_nan and failed:
            break  # fit raises NonFiniteLossError here
    runtime.release()
    take(runtime.drain())
    return reported, unreported_after_act, acts


def assert_same_metrics(reported, expected):
    assert len(reported) == len(expected)
    for got, want in zip(reported, expected):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)


def assert_same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def update(seed, nan=False):
    return ("update", counter_batch(seed, nan=nan))


SCRIPTS = {
    # Each update runs with the next act; the last one waits until release.
    "fused": [update(0), ("act",), update(1), ("act",), update(2), ("act",), update(3)],
    # Two updates per env step (gradient_steps=2): the second flushes the first.
    "two_per_act": [update(0), update(1), ("act",), update(2), update(3), ("act",), update(4), update(5)],
    # Target updates and syncs run a waiting update on its own first.
    "targets_and_sync": [
        update(0),
        ("targets", 1.0),
        ("act",),
        update(1),
        ("act",),
        update(2),
        ("sync",),
        ("act",),
        update(3),
        ("targets", 0.5),
        update(4),
    ],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_update_reported_once_in_order(name):
    script = SCRIPTS[name]
    plain, held = make_agents()
    initial = numpy_q(plain, OBS)
    expected, plain_acts = play_plain(plain, script)
    reported, unreported_after_act, held_acts = play_held(held, script)
    # One dict per update, the same as one by one: none late by one, none dropped at release.
    assert_same_metrics(reported, expected)
    # Each act reads the weights after the updates before it, the waiting one included (FusedRuntime:
    # update, then act with the new weights), never the weights from before the waiting update.
    assert len(held_acts) == len(plain_acts) == script.count(("act",))
    for got, want in zip(held_acts, plain_acts):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for before, after in zip([initial, *plain_acts], plain_acts):
        assert np.abs(after - before).max() > 1e-4  # an update comes before each act: stale weights would show
    # An act returns only when the updates before it are done: fit can take their
    # metrics then, at the env step they belong to, before the next update is made.
    assert unreported_after_act == [0] * len(unreported_after_act)


def test_nan_in_the_last_update_before_release_is_reported():
    script = [update(0), ("act",), update(1), ("act",), update(2, nan=True)]
    plain, held = make_agents()
    expected, _ = play_plain(plain, script)
    assert math.isnan(expected[-1]["loss"])
    reported, _, _ = play_held(held, script)
    assert_same_metrics(reported, expected)
    assert math.isnan(reported[-1]["loss"])
    # The non-finite update was not applied: the weights are those after the last finite one.
    finite, _ = make_agents()
    play_plain(finite, script[:-1])
    assert_same_weights(held, finite)
    assert all(np.isfinite(w).all() for w in held.get_weights())


def test_update_queued_after_an_unseen_nan_is_dropped():
    """A fused runtime learns of a NaN one update late; the update queued meanwhile must not
    run, so a caller that stops at the NaN keeps the weights from before it, as on torch."""
    script = [update(0), ("act",), update(1, nan=True), update(2), ("act",), update(3)]
    plain, held = make_agents()
    reported, _, _ = play_held(held, script, stop_on_nan=True)
    assert math.isnan(reported[-1]["loss"])
    assert len(reported) == 2  # update(2) never ran, so it has no metrics
    play_plain(plain, script[:2])
    assert_same_weights(held, plain)


def test_weights_after_fused_updates_match_one_by_one():
    script = [step for seed in range(6) for step in (update(seed), ("act",))]
    script += [("targets", 1.0), update(6), update(7), ("targets", 0.3), ("act",), update(8)]
    plain, held = make_agents()
    play_plain(plain, script)
    play_held(held, script)
    assert_same_weights(held, plain)  # the online and the target network
    opt_plain, opt_held = (int(keras.ops.convert_to_numpy(a.optimizer.iterations)) for a in (plain, held))
    assert opt_plain == opt_held == 9
    np.testing.assert_array_equal(held.act(OBS), plain.act(OBS))


# -- the learning-rate schedule as the held optimizer applies it -----------------------------------
@pytest.mark.parametrize("form", ["decay", "schedule", "decay-two-rates"])
def test_policy_agent_learning_rate_as_seen_by_the_optimizer(form):
    """PPO's optimizer (or each Adam of its MultiOptimizer) counts every update of fit and applies its
    schedule at that count, held state synced; fit logs the policy's rate."""
    kwargs = {
        "decay": dict(learning_rate=1e-3, learning_rate_decay=0.5),
        "schedule": dict(learning_rate=keras.optimizers.schedules.ExponentialDecay(1e-3, 8, 0.5, staircase=True)),
        "decay-two-rates": dict(learning_rate=1e-3, value_learning_rate=3e-3, learning_rate_decay=0.5),
    }[form]
    decay = (lambda n: 0.5 ** (n // 8)) if form == "schedule" else (lambda n: 0.5 ** (n / 1000))
    starts = [1e-3, 3e-3] if form == "decay-two-rates" else [1e-3]  # policy, critic
    env = CounterEnv(length=5)
    agent = PPOAgent(*env_spaces(env), hidden_sizes=(8,), n_steps=16, batch_size=8, n_epochs=2, seed=0, **kwargs)
    probe = OptimizerRates("optimizer")
    agent.fit(env, steps=128, verbose=0, log_every=32, callbacks=[probe])
    assert len(probe.seen) == 4
    for row in probe.seen:
        # (iterations, rate) of each Adam, the policy's (the lower rate) first.
        seen = sorted((value for key, value in row.items() if key.startswith("optimizer")), key=lambda x: x[1])
        assert [n for n, _ in seen] == [row["updates"]] * len(starts) and row["updates"] > 0
        np.testing.assert_allclose([rate for _, rate in seen], [s * decay(row["updates"]) for s in starts], rtol=1e-5)
        assert row["logged"] == pytest.approx(seen[0][1], rel=1e-5)
    updates = [row["updates"] for row in probe.seen]
    assert all(a < b for a, b in zip(updates, updates[1:]))


# -- TensorFlow's flat calls ------------------------------------------------------------------
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's concrete-function call path")
@pytest.mark.parametrize("algo", ["dqn", "drqn"])
def test_tensorflow_flat_calls_train_as_public_calls(monkeypatch, algo):
    """The runtime calls a traced function without binding its arguments again: same weights, same actions."""
    import gymnasium as gym

    import keras_rl_gym.backend.tensorflow_runtime as runtime
    from keras_rl_gym import DRQNAgent

    def trained(fast):
        monkeypatch.setattr(runtime, "_FAST_CALLS", fast)
        calls = []  # calls through the public path, which binds the arguments to the signature
        monkeypatch.setattr(runtime._Concrete, "_call_impl", _counting(runtime._Concrete._call_impl, calls))
        env = gym.make("CartPole-v1")
        cls, extra = (DQNAgent, {"hidden_sizes": (16,)}) if algo == "dqn" else (DRQNAgent, {"lstm_size": 8})
        agent = cls(env.observation_space, env.action_space, learning_starts=60, seed=3, **extra)
        agent.fit(env, steps=200, verbose=0)
        return agent, len(calls)

    public, public_calls = trained(False)
    fast, fast_calls = trained(True)
    assert fast.updates == public.updates > 100
    assert public_calls > fast.updates
    assert fast_calls < 10  # the first call of each trace only
    for a, b in zip(public.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)


def _counting(function, calls):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


class ReportsTDErrors(DQNAgent):
    """A DQN that also returns each transition's |TD error|, as prioritized replay needs, and
    records every update's metrics as fit hands them back (in update order)."""

    def compute_rl_loss(self, batch):
        loss, metrics = super().compute_rl_loss(batch)
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"])
        q = self._pick(self.q_network(batch["obs"]), keras.ops.cast(batch["action"], "int32"))
        return loss, {**metrics, "td_error": keras.ops.abs(q - y)}

    def _on_update_reported(self, metrics):
        self.seen = [*getattr(self, "seen", []), metrics]
        return super()._on_update_reported(metrics)


def numpy_td_errors(agent, batch):
    """|Q(s, a) - (r + gamma (1 - terminated) max Q_target(s'))| in NumPy, from the current weights."""
    k0, b0, k1, b1 = agent.target_network.get_weights()
    q_next = np.maximum(batch["next_obs"] @ k0 + b0, 0.0) @ k1 + b1
    y = batch["reward"] + agent.gamma * (1.0 - batch["terminated"]) * q_next.max(axis=1)
    q = numpy_q(agent, batch["obs"])[np.arange(len(y)), batch["action"]]
    return np.abs(q - y)


def test_per_item_metrics_come_back_as_arrays_in_order():
    spaces = env_spaces(CounterEnv(length=LENGTH))
    plain = ReportsTDErrors(*spaces, hidden_sizes=(8,), seed=0)
    held = ReportsTDErrors(*spaces, hidden_sizes=(8,), seed=0)
    held.set_weights(plain.get_weights())
    batches = [counter_batch(seed) for seed in range(3)]
    expected = []
    for batch in batches:
        want = numpy_td_errors(plain, batch)  # the weights before this update
        got = plain.runtime.update(batch)
        assert isinstance(got["td_error"], np.ndarray) and got["td_error"].shape == (8,)
        np.testing.assert_allclose(got["td_error"], want, rtol=1e-5, atol=1e-5)
        assert isinstance(got["loss"], float)
        expected.append(got)
    # Held (fused on JAX and TensorFlow): the same arrays, reported later, in update order.
    held.runtime.hold(100)
    reported = []
    for batch in batches:
        reported.append(held.runtime.update(batch))
        held.runtime.act(OBS)
        reported.extend(held.runtime.drain())
    held.runtime.release()
    reported = [m for m in [*reported, *held.runtime.drain()] if m]
    assert len(reported) == len(expected)
    for got, want in zip(reported, expected):
        np.testing.assert_allclose(got["td_error"], want["td_error"], rtol=1e-5, atol=1e-6)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_fit_gives_per_item_metrics_to_the_agent_and_logs_only_scalars():
    env = CounterEnv(length=LENGTH)
    agent = ReportsTDErrors(*env_spaces(env), hidden_sizes=(8,), learning_starts=8, batch_size=4, seed=0)
    history = agent.fit(env, steps=40, log_every=20, verbose=0)
    assert len(agent.seen) == agent.updates > 20  # every update, from env step 8 on
    assert all(m["td_error"].shape == (4,) and np.isfinite(m["td_error"]).all() for m in agent.seen)
    assert "td_error" not in history.history and "loss" in history.history
