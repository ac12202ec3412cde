"""DQN: targets against hand-computed NumPy values, target updates, the fit loop's semantics, bad input."""

import math
import os

import gymnasium as gym
import keras
import numpy as np
import pytest
from probe_envs import ContinuousActionEnv, CounterEnv, ImageEnv

from keras_rl_gym import DQNAgent, NonFiniteLossError
from keras_rl_gym.buffers import ReplayBuffer
from keras_rl_gym.config import ConfigError, validate_config
from keras_rl_gym.schedules import current_learning_rate, exponential_schedule, learning_rate, linear_schedule
from keras_rl_gym.spaces import env_spaces

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = gym.spaces.Discrete(3)


def fixed_batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(n, 4)).astype("float32"),
        "action": rng.integers(0, 3, n).astype("int32"),
        "reward": rng.normal(size=n).astype("float32"),
        "next_obs": rng.normal(size=(n, 4)).astype("float32"),
        "terminated": np.array([0, 1, 0, 0, 1, 0][:n], dtype="float32"),
    }


def numpy_q(model, x, dueling):
    """The Q-network's forward pass, written out in NumPy from its weights."""
    h = x
    for i in range(2):
        k, b = model.get_layer(f"q_network_dense{i}").get_weights()
        h = np.maximum(h @ k + b, 0.0)
    if dueling:
        kv, bv = model.get_layer("q_network_value").get_weights()
        ka, ba = model.get_layer("q_network_advantage").get_weights()
        v, a = h @ kv + bv, h @ ka + ba
        return v + a - a.mean(axis=1, keepdims=True)
    k, b = model.get_layer("q_network_q").get_weights()
    return h @ k + b


def randomize_target(agent, seed=1):
    rng = np.random.default_rng(seed)
    agent.target_network.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in agent.target_network.get_weights()]
    )


# -- buffer and schedules --------------------------------------------------------------
def test_replay_buffer_overwrites_oldest_and_samples_stored_rows():
    buf = ReplayBuffer(5, {"x": ((), np.int64)}, seed=0)
    buf.add(x=np.arange(3))
    assert len(buf) == 3
    buf.add(x=np.arange(3, 7))  # 7 items into 5 slots: 0 and 1 are gone
    assert len(buf) == 5
    assert sorted(buf.data["x"].tolist()) == [2, 3, 4, 5, 6]
    sample = buf.sample(1000)["x"]
    assert set(sample.tolist()) == {2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, {"x": ((), np.int64)}).sample(2)


def test_replay_buffer_samples_uniformly_across_random_blocks():
    buf = ReplayBuffer(10, {"x": ((), np.int64)}, seed=1)
    for i in range(13):  # single adds, wrapping once: rows hold 3..12
        buf.add(x=np.array([i]))
    assert sorted(buf.data["x"].tolist()) == list(range(3, 13))
    # 33 does not divide the random block, so draws straddle block refills.
    draws = np.concatenate([buf.sample(33)["x"] for _ in range(3000)])
    counts = np.bincount(draws - 3, minlength=10)
    assert counts.sum() == 99_000 and np.all(np.abs(counts / 99_000 - 0.1) < 0.006), counts
    # The same seed draws the same batches.
    first, second = (ReplayBuffer(10, {"x": ((), np.int64)}, seed=7) for _ in range(2))
    for b in (first, second):
        b.add(x=np.arange(10))
    assert all(np.array_equal(first.sample(64)["x"], second.sample(64)["x"]) for _ in range(200))


def test_schedules():
    lin = linear_schedule(1.0, 0.1, 100)
    assert (
        lin(0) == 1.0
        and math.isclose(lin(50), 0.55)
        and math.isclose(lin(100), 0.1)
        and lin(1000) == pytest.approx(0.1)
    )
    exp = exponential_schedule(1.0, 0.01, 100)
    assert math.isclose(exp(50), 0.1, rel_tol=1e-9) and math.isclose(exp(500), 0.01, rel_tol=1e-9)
    lr = learning_rate(0.1, decay=0.5, decay_steps=10)
    assert math.isclose(current_learning_rate(lr, 20), 0.025, rel_tol=1e-5)
    assert current_learning_rate(learning_rate(0.1), 999) == 0.1


# -- targets and loss against NumPy ---------------------------------------------------------
@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("dueling", [False, True])
def test_td_target_matches_numpy(double, dueling):
    agent = DQNAgent(OBS, ACT, double=double, dueling=dueling, hidden_sizes=(8, 8), gamma=0.9, seed=0)
    randomize_target(agent)  # online and target differ, so double vs vanilla differ too
    b = fixed_batch()
    y = keras.ops.convert_to_numpy(agent.td_target(b["reward"], b["next_obs"], b["terminated"]))

    q_next_target = numpy_q(agent.target_network, b["next_obs"], dueling)
    if double:
        best = numpy_q(agent.q_network, b["next_obs"], dueling).argmax(axis=1)
    else:
        best = q_next_target.argmax(axis=1)
    expected = b["reward"] + 0.9 * (1.0 - b["terminated"]) * q_next_target[np.arange(6), best]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # Terminal transitions do not bootstrap.
    np.testing.assert_allclose(y[b["terminated"] == 1], b["reward"][b["terminated"] == 1], rtol=1e-6)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_loss_matches_numpy(loss):
    agent = DQNAgent(OBS, ACT, double=True, hidden_sizes=(8, 8), loss=loss, seed=0)
    randomize_target(agent)
    b = fixed_batch()
    value, metrics = agent.compute_rl_loss(b)
    y = keras.ops.convert_to_numpy(agent.td_target(b["reward"], b["next_obs"], b["terminated"]))
    q = numpy_q(agent.q_network, b["obs"], False)[np.arange(6), b["action"]]
    err = q - y
    expected = np.mean(err**2) if loss == "mse" else np.mean(np.where(abs(err) < 1, 0.5 * err**2, abs(err) - 0.5))
    assert float(keras.ops.convert_to_numpy(value)) == pytest.approx(expected, rel=1e-5)
    assert float(keras.ops.convert_to_numpy(metrics["q_mean"])) == pytest.approx(q.mean(), rel=1e-5)


def test_update_step_moves_weights_but_not_target():
    agent = DQNAgent(OBS, ACT, hidden_sizes=(8, 8), seed=0)
    before = [w.copy() for w in agent.q_network.get_weights()]
    target_before = [w.copy() for w in agent.target_network.get_weights()]
    metrics = agent.runtime.update(fixed_batch())
    assert math.isfinite(metrics["loss"])
    after = agent.q_network.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    for a, b in zip(agent.target_network.get_weights(), target_before):
        np.testing.assert_array_equal(a, b)


def test_hard_and_soft_target_updates():
    agent = DQNAgent(OBS, ACT, hidden_sizes=(8, 8), seed=0)
    randomize_target(agent)
    online = [w.copy() for w in agent.q_network.get_weights()]
    target = [w.copy() for w in agent.target_network.get_weights()]
    agent.runtime.update_targets(0.1)
    for t_new, t_old, o in zip(agent.target_network.get_weights(), target, online):
        np.testing.assert_allclose(t_new, t_old + 0.1 * (o - t_old), rtol=1e-5, atol=1e-6)
    agent.runtime.update_targets(1.0)
    for t_new, o in zip(agent.target_network.get_weights(), online):
        np.testing.assert_array_equal(t_new, o)


def test_nonfinite_loss_leaves_weights_untouched():
    agent = DQNAgent(OBS, ACT, hidden_sizes=(8, 8), seed=0)
    before = [w.copy() for w in agent.get_weights()]
    batch = fixed_batch()
    batch["reward"][0] = np.nan
    metrics = agent.runtime.update(batch)
    assert math.isnan(metrics["loss"])
    for a, b in zip(agent.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_updates_inside_fit_match_plain_updates(monkeypatch):
    """Inside ``fit`` a runtime may fuse an update with the next act (JAX, TF) or run compiled graphs
    (torch): each act returns the greedy actions of the weights after the update made before it
    (``FusedRuntime``: update, then act with the new weights), and weights and losses do not change."""
    monkeypatch.setenv("KERAS_RL_GYM_TORCH_COMPILE", "1")
    batch = fixed_batch()
    obs = np.random.default_rng(1).normal(size=(256, 4)).astype("float32")
    # A rate at which one update changes some greedy actions, so acting on stale weights shows.
    kwargs = dict(hidden_sizes=(8, 8), double=True, max_grad_norm=1.0, learning_rate=0.01, seed=0)
    plain, held = DQNAgent(OBS, ACT, **kwargs), DQNAgent(OBS, ACT, **kwargs)
    runtime = held.runtime
    runtime.hold(100)
    losses, held_losses, changed = [], [], 0
    for _ in range(3):
        before = numpy_q(plain.q_network, obs, False).argmax(axis=1)
        losses.append(plain.runtime.update(batch)["loss"])
        after = numpy_q(plain.q_network, obs, False).argmax(axis=1)
        held_losses.append(runtime.update(batch).get("loss"))
        actions = runtime.act(obs)  # what fit does next: runs the waiting update first
        assert actions.shape == (256,) and np.issubdtype(actions.dtype, np.integer)
        assert actions.min() >= 0 and actions.max() < ACT.n
        np.testing.assert_array_equal(actions, after)
        changed += int((before != after).sum())
    assert changed > 0  # the weights before each update would have given other actions
    plain.runtime.update_targets(1.0)
    losses.append(plain.runtime.update(batch)["loss"])
    runtime.update_targets(1.0)
    held_losses.append(runtime.update(batch).get("loss"))
    runtime.release()

    for a, b in zip(plain.get_weights(), held.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(plain.act(obs), held.act(obs))
    # A fused runtime reports each update's metrics one call late.
    reported = [x for x in held_losses if x is not None]
    np.testing.assert_allclose(reported, losses[: len(reported)], rtol=1e-5)
    assert len(reported) >= 3


# -- the fit loop -----------------------------------------------------------------------
def small_agent(env, **kwargs):
    defaults = dict(hidden_sizes=(16,), learning_starts=10, batch_size=8, buffer_size=1000, seed=0)
    defaults.update(kwargs)
    return DQNAgent(*env_spaces(env), **defaults)


@pytest.mark.parametrize("truncate", [False, True])
def test_truncation_bootstraps_and_termination_does_not(truncate):
    env = CounterEnv(length=3, truncate=truncate)
    agent = small_agent(env)
    agent.fit(env, steps=30, verbose=0)
    data = agent.buffer.data
    last = data["next_obs"][: len(agent.buffer), 1] == 3  # transitions into the final obs
    assert last.any()
    expected = 0.0 if truncate else 1.0
    assert (data["terminated"][: len(agent.buffer)][last] == expected).all()
    assert (data["terminated"][: len(agent.buffer)][~last] == 0.0).all()


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_vector_env_never_stores_a_transition_across_a_reset(mode):
    autoreset = gym.vector.AutoresetMode(mode)
    venv = gym.vector.SyncVectorEnv([lambda: CounterEnv(length=4) for _ in range(3)], autoreset_mode=autoreset)
    agent = small_agent(venv)
    history = agent.fit(venv, steps=120, verbose=0, log_every=40)
    n = len(agent.buffer)
    assert n == 120  # exactly the requested number of real transitions
    obs, next_obs = agent.buffer.data["obs"][:n], agent.buffer.data["next_obs"][:n]
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0])  # same episode
    np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)  # consecutive steps
    assert history.history["episode_length"] == [4.0, 4.0, 4.0]
    assert history.history["episode_return"][-1] == 4.0


def test_fit_returns_history_and_logs_schedules():
    env = gym.make("CartPole-v1")
    agent = small_agent(env, exploration_fraction=0.5)
    history = agent.fit(env, steps=400, verbose=0, log_every=100)
    assert isinstance(history, keras.callbacks.History)
    h = history.history
    assert len(h["env_steps"]) == 4 and h["env_steps"][-1] == 400
    assert h["epsilon"][0] > h["epsilon"][-1] == pytest.approx(0.02)
    assert len(h["loss"]) == 4 and all(math.isfinite(v) for v in h["loss"])
    assert len(h["learning_rate"]) == 4 and h["steps_per_second"][-1] > 0


def optimizers(agent, *names) -> dict:
    """The agent's Keras optimizers by attribute name; a MultiOptimizer's inner ones as ``name[i]``."""
    found = {}
    for name in names:
        opt = getattr(agent, name)
        inner = getattr(opt, "optimizers", None)  # a MultiOptimizer's own Adams: each counts and schedules
        found.update({f"{name}[{i}]": o for i, o in enumerate(inner)} if inner else {name: opt})
    return found


class OptimizerRates(keras.callbacks.Callback):
    """At each log: each optimizer's own iteration count and the learning rate it applies at that count,
    read after ``sync_weights()`` (the JAX runtime holds the optimizer state outside its variables in fit)."""

    def __init__(self, *names):
        super().__init__()
        self.names, self.seen = names, []

    def on_epoch_end(self, epoch, logs=None):
        self.model.sync_weights()
        row = {"env_steps": logs["env_steps"], "updates": self.model.updates, "logged": logs.get("learning_rate")}
        for name, opt in optimizers(self.model, *self.names).items():
            # Keras's learning_rate property: the schedule evaluated at the optimizer's own iterations.
            iterations = int(keras.ops.convert_to_numpy(opt.iterations))
            row[name] = (iterations, float(keras.ops.convert_to_numpy(opt.learning_rate)))
        self.seen.append(row)


@pytest.mark.parametrize("form", ["decay", "schedule"])
def test_learning_rate_schedule_as_seen_by_the_optimizer(form):
    """The optimizer counts every update of fit and applies its schedule at that count; fit logs that rate."""
    if form == "decay":  # 1e-3 halved every 1000 updates, smoothly
        kwargs, expected = dict(learning_rate=1e-3, learning_rate_decay=0.5), lambda n: 1e-3 * 0.5 ** (n / 1000)
    else:  # a Keras schedule, as given: halved at every 100th update
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.5, staircase=True)
        kwargs, expected = dict(learning_rate=schedule), lambda n: 1e-3 * 0.5 ** (n // 100)
    env = CounterEnv(length=5)
    agent = small_agent(env, **kwargs)  # learning_starts=10, one update per env step from step 10 on
    probe = OptimizerRates("optimizer")
    agent.fit(env, steps=400, verbose=0, log_every=100, callbacks=[probe])
    assert [row["env_steps"] for row in probe.seen] == [100, 200, 300, 400]
    iterations = [row["optimizer"][0] for row in probe.seen]
    assert iterations == [91, 191, 291, 391] == [row["updates"] for row in probe.seen]
    rates = [row["optimizer"][1] for row in probe.seen]
    np.testing.assert_allclose(rates, [expected(n) for n in iterations], rtol=1e-5)
    np.testing.assert_allclose([row["logged"] for row in probe.seen], rates, rtol=1e-5)
    assert all(a > b for a, b in zip(rates, rates[1:]))  # it moved: a frozen or unsynced rate would not


def test_same_seed_same_run():
    def run():
        env = gym.make("CartPole-v1")
        agent = small_agent(env, seed=3)
        return agent.fit(env, steps=200, verbose=0, log_every=50).history["loss"]

    assert run() == run()


# -- bad input --------------------------------------------------------------------------
def test_wrong_action_space_is_named():
    env = ContinuousActionEnv()
    with pytest.raises(TypeError, match="DQNAgent needs a Discrete action space"):
        DQNAgent(env.observation_space, env.action_space)


def test_image_observation_needs_conv():
    env = ImageEnv()
    with pytest.raises(ValueError, match="network='conv'"):
        DQNAgent(env.observation_space, env.action_space, network="dense")


@pytest.mark.parametrize("steps", [0, -5, 2.5, None])
def test_bad_step_count(steps):
    env = CounterEnv()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        small_agent(env).fit(env, steps=steps, verbose=0)


def test_env_space_mismatch_and_non_env():
    agent = small_agent(CounterEnv())
    with pytest.raises(ValueError, match="observation space"):
        agent.fit(gym.make("CartPole-v1"), steps=10, verbose=0)
    with pytest.raises(TypeError, match="Gymnasium env"):
        agent.fit(np.zeros((3, 2)), steps=10)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="bogus"):
        DQNAgent(OBS, ACT, bogus=1)
    with pytest.raises(ConfigError, match=r"Unknown agent \(DQNAgent\) key\(s\) \['lr'\]"):
        validate_config({"algo": "dqn", "env": "CartPole-v1", "agent": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"Unknown config key\(s\) \['enviroment'\]"):
        validate_config({"algo": "dqn", "env": "CartPole-v1", "enviroment": 1})
    with pytest.raises(ConfigError, match="Unknown algo 'dqm'"):
        validate_config({"algo": "dqm", "env": "CartPole-v1"})


def test_nan_loss_stops_fit_and_saves_last_finite_weights(tmp_path):
    env = CounterEnv(length=5, reward=lambda t: np.nan if t == 3 else 1.0)
    agent = small_agent(env, learning_starts=4)
    path = str(tmp_path / "rescued.keras")
    with pytest.raises(NonFiniteLossError, match="Non-finite loss") as info:
        agent.fit(env, steps=200, verbose=0, checkpoint_path=path)
    assert info.value.checkpoint_path == path and os.path.exists(path)
    restored = keras.saving.load_model(path)
    weights = restored.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    for a, b in zip(weights, agent.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- save / load ------------------------------------------------------------------------
def test_save_and_load_model_gives_same_actions_and_keeps_training(tmp_path):
    env = gym.make("CartPole-v1")
    agent = small_agent(env, dueling=True, double=True)
    agent.fit(env, steps=100, verbose=0)
    path = str(tmp_path / "agent.keras")
    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DQNAgent) and loaded.get_config() == agent.get_config()
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    assert loaded.act(obs[0]) in (0, 1)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == int(
        keras.ops.convert_to_numpy(agent.optimizer.iterations)
    )
    loaded.fit(env, steps=50, verbose=0)


def test_conv_q_network_on_uint8_frames():
    env = ImageEnv()
    agent = small_agent(env, network="conv", hidden_sizes=(32,), dueling=True, buffer_size=64, replay="uniform")
    layers = [layer.name for layer in agent.q_network.layers]
    assert "q_network_scale" in layers and "q_network_conv2" in layers  # Nature torso, frames scaled inside
    assert agent.buffer is None  # allocated by fit
    agent.fit(env, steps=40, verbose=0)
    assert agent.buffer.data["obs"].dtype == np.uint8  # replay keeps bytes, not floats
    assert agent.updates > 0
    assert agent.act(np.zeros((84, 84, 4), np.uint8)) in (0, 1)


def test_frame_replay_fit_stores_nstep_returns():
    # 3-step episodes of reward 1 that terminate: each stored row's return is cut at the termination.
    env, g = ImageEnv(), 0.9
    agent = small_agent(
        env, network="conv", hidden_sizes=(32,), buffer_size=64, replay="frames", n_step=3, gamma=g, prioritized=True
    )
    agent.fit(env, steps=40, verbose=0)
    buf = agent.buffer
    assert type(buf).__name__ == "FrameReplayBuffer" and buf.n_step == 3 and agent._nstep is None
    assert agent.updates > 0
    ready = np.flatnonzero(buf.ready[: len(buf)])
    assert len(buf) - len(ready) == buf._window_len.sum() < 3  # only the last episode's rows wait
    np.testing.assert_allclose(sorted(set(buf.discount[ready].round(6))), [g**3, g**2, g], rtol=1e-5)
    np.testing.assert_allclose(buf.nstep_reward[ready], (1 - buf.discount[ready]) / (1 - g), rtol=1e-5)
    assert buf.nstep_terminated[ready].all()


def test_exponential_epsilon_schedule_reaches_final():
    env = CounterEnv(length=5)
    agent = small_agent(env, epsilon_schedule="exponential", exploration_fraction=0.5, epsilon_final=0.05)
    history = agent.fit(env, steps=100, verbose=0, log_every=25)
    eps = history.history["epsilon"]
    assert eps[0] > eps[1] > eps[-1] and eps[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("prioritized", [False, True])
def test_the_replay_draws_a_stream_independent_of_the_agents_own(prioritized):
    """Both generators were default_rng(seed): the replay's sample indices repeated the epsilon coin flips."""
    env = gym.make("CartPole-v1")
    agent = DQNAgent(
        env.observation_space, env.action_space, hidden_sizes=(8,), learning_starts=10, prioritized=prioritized, seed=3
    )
    agent.fit(env, steps=20, verbose=0)
    ours, replays = agent.rng.bit_generator.seed_seq, agent.buffer.rng.bit_generator.seed_seq
    # Both from the seed 3; the replay's is a spawned child (key (0,)), so the two streams differ from the start.
    assert (ours.entropy, ours.spawn_key) == (3, ())
    assert (replays.entropy, replays.spawn_key) == (3, (0,))
    first = [np.random.default_rng(s).random(64) for s in (ours, replays)]
    assert np.abs(np.corrcoef(*first)[0, 1]) < 0.5 and not np.array_equal(*first)
    replays = agent.buffer.rng.bit_generator.state
    # Still fixed by the seed.
    again = DQNAgent(
        env.observation_space, env.action_space, hidden_sizes=(8,), learning_starts=10, prioritized=prioritized, seed=3
    )
    again.fit(gym.make("CartPole-v1"), steps=20, verbose=0)
    assert again.buffer.rng.bit_generator.state == replays
