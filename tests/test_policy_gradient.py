"""Policy-gradient agents: returns and GAE against hand-computed values, the PPO losses, vector envs in both autoreset
modes, the clip-range schedule, truncation, bad input."""

import json
import math
import pathlib

import gymnasium as gym
import keras
import numpy as np
import pytest
from probe_envs import CounterEnv

from keras_rl_gym import ActorCriticAgent, PPOAgent, ReinforceAgent
from keras_rl_gym.rollouts import bootstrap_truncated, discounted_returns, gae

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


# -- returns and advantages ------------------------------------------------------------
def test_discounted_returns_restart_after_each_episode_end():
    # One env: an episode of 3 steps that terminates, then 2 steps cut by the rollout's end.
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    dones = np.array([0, 0, 1, 0, 0], bool)
    g = 0.9
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 4 + g * 5 + g * g * 10, 5 + g * 10]
    np.testing.assert_allclose(discounted_returns(rewards, dones, 10.0, g), expected, rtol=1e-6)


def test_gae_by_hand_with_a_terminated_and_a_truncated_episode():
    g, lam = 0.9, 0.8
    # Steps 0-1: an episode that terminates; steps 2-3: one truncated by a time
    # limit, whose last state s_final has V(s_final) = 7; step 4: the autoreset
    # step (not a transition); steps 5-6: a new episode cut by the rollout's end.
    reward = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 5.0, 6.0])
    value = np.array([0.5, 1.0, 1.5, 2.0, 9.0, 2.5, 3.0])
    terminated = np.array([0, 1, 0, 0, 0, 0, 0], bool)
    truncated = np.array([0, 0, 0, 1, 0, 0, 0], bool)
    valid = np.array([1, 1, 1, 1, 0, 1, 1], bool)
    final_value = np.array([0, 0, 0, 7.0, 0, 0, 0])
    last_value = 4.0

    r = bootstrap_truncated(reward, terminated, truncated, final_value, g)
    np.testing.assert_allclose(r, [1, 2, 3, 4 + g * 7, 0, 5, 6], rtol=1e-6)
    adv, ret = gae(r, value, terminated | truncated, last_value, g, lam, valid)

    d = {
        0: 1 + g * 1.0 - 0.5,
        1: 2 - 1.0,  # terminated: no bootstrap
        2: 3 + g * 2.0 - 1.5,
        3: 4 + g * 7 - 2.0,  # truncated: bootstrap from V(s_final), not V(next reset obs)
        5: 5 + g * 3.0 - 2.5,
        6: 6 + g * last_value - 3.0,
    }
    expected = np.zeros(7)
    expected[6] = d[6]
    expected[5] = d[5] + g * lam * expected[6]
    expected[3] = d[3]
    expected[2] = d[2] + g * lam * expected[3]
    expected[1] = d[1]
    expected[0] = d[0] + g * lam * expected[1]
    np.testing.assert_allclose(adv, expected, rtol=1e-5)
    np.testing.assert_allclose(ret[valid], (expected + value)[valid], rtol=1e-5)
    assert adv[4] == 0 and ret[4] == 0
    # lambda = 1 gives Monte-Carlo returns minus values; lambda = 0 the TD errors.
    adv1, _ = gae(r, value, terminated | truncated, last_value, g, 1.0, valid)
    mc = discounted_returns(r, terminated | truncated, last_value, g, valid)
    np.testing.assert_allclose(adv1[valid], (mc - value)[valid], rtol=1e-5)
    adv0, _ = gae(r, value, terminated | truncated, last_value, g, 0.0, valid)
    np.testing.assert_allclose(adv0[valid], [d[i] for i in (0, 1, 2, 3, 5, 6)], rtol=1e-5)


class _CaptureLearn:
    """Replaces an on-policy agent's ``_learn`` to keep the batches it would learn from."""

    def __init__(self, agent):
        self.batches = []
        agent._learn = self

    def __call__(self, batch):
        self.batches.append(batch)
        return iter(())


@pytest.mark.parametrize("truncate", [False, True])
def test_rollout_bootstraps_truncated_episodes_from_the_critic(truncate):
    env = CounterEnv(length=3, truncate=truncate, reward=1.0)
    agent = ActorCriticAgent(env.observation_space, env.action_space, n_steps=7, gae_lambda=1.0, gamma=0.5, seed=0)
    capture = _CaptureLearn(agent)
    agent.fit(env, steps=6, verbose=0)
    batch = capture.batches[0]
    obs, returns = batch["obs"], batch["returns"]
    # No autoreset step is learned from: every observation is a real state.
    assert len(obs) == 6 and np.all(obs[:, 1] < 3)
    v = lambda o: float(keras.ops.convert_to_numpy(agent.value(np.asarray(o, np.float32)[None]))[0])  # noqa: E731
    # The first episode (id 0), steps t = 0, 1, 2: its tail beyond the time limit is gamma * V([0, 3]).
    tail = v([0, 3]) if truncate else 0.0
    expected = [1 + 0.5 * (1 + 0.5 * (1 + 0.5 * tail))]
    expected += [1 + 0.5 * (1 + 0.5 * tail), 1 + 0.5 * tail]
    np.testing.assert_allclose(returns[:3], expected, rtol=1e-4)


def test_reinforce_completes_truncated_episodes_with_the_baseline():
    env = CounterEnv(length=2, truncate=True, reward=1.0)
    agent = ReinforceAgent(env.observation_space, env.action_space, baseline=True, gamma=0.5, seed=0)
    seen = []
    agent._train = lambda step, n: seen.extend(agent._finished) or iter(())
    agent.fit(env, steps=2, verbose=0)
    v_final = float(keras.ops.convert_to_numpy(agent.value(np.array([[0, 2]], np.float32)))[0])
    np.testing.assert_allclose(seen[0]["returns"], [1 + 0.5 * (1 + 0.5 * v_final), 1 + 0.5 * v_final], rtol=1e-4)


# -- losses ------------------------------------------------------------------------------
def _numpy_mlp(model, prefix, x, n_hidden=2):
    h = x
    for i in range(n_hidden):
        k, b = model.get_layer(f"{prefix}_dense{i}").get_weights()
        h = np.maximum(h @ k + b, 0.0)
    k, b = model.get_layer(f"{prefix}_out").get_weights()
    return h @ k + b


def test_ppo_clipped_loss_on_a_fixed_batch():
    agent = PPOAgent(OBS, DISCRETE, value_coef=0.5, entropy_coef=0.01, seed=0)
    rng = np.random.default_rng(0)
    n = 16
    batch = {
        "obs": rng.normal(size=(n, 4)).astype("float32"),
        "action": rng.integers(0, 3, n).astype("int32"),
        "advantage": rng.normal(size=n).astype("float32"),
        "returns": rng.normal(size=n).astype("float32"),
        "clip_range": np.float32(0.1),
    }
    logits = _numpy_mlp(agent.policy_network, "policy", batch["obs"])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    log_p = log_softmax[np.arange(n), batch["action"]]
    # Old log-probs spread around the current ones, so some ratios leave [0.9, 1.1].
    batch["log_prob"] = (log_p + rng.normal(scale=0.3, size=n)).astype("float32")
    ratio = np.exp(log_p - batch["log_prob"])
    adv = batch["advantage"]
    policy_loss = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.9, 1.1) * adv))
    value = _numpy_mlp(agent.value_network, "value", batch["obs"])[:, 0]
    value_loss = np.mean((value - batch["returns"]) ** 2)
    entropy = np.mean(-np.sum(np.exp(log_softmax) * log_softmax, -1))
    expected = policy_loss + 0.5 * value_loss - 0.01 * entropy

    loss, metrics = agent.compute_rl_loss({k: keras.ops.convert_to_tensor(v) for k, v in batch.items()})
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-4)
    clipped = np.mean(np.abs(ratio - 1) > 0.1)
    assert 0 < clipped < 1
    assert float(keras.ops.convert_to_numpy(metrics["clip_fraction"])) == pytest.approx(clipped)
    # Through the runtime too: the update reports the same loss.
    assert agent.runtime.update(batch)["loss"] == pytest.approx(expected, rel=1e-4)


def test_ppo_gaussian_loss_on_a_fixed_batch():
    agent = PPOAgent(OBS, BOX, value_coef=0.5, entropy_coef=0.01, seed=0)
    agent.log_std.assign(np.array([-0.5, 0.3], np.float32))  # unequal per dimension, and not the initial 0
    rng = np.random.default_rng(1)
    n = 16
    batch = {
        "obs": rng.normal(size=(n, 4)).astype("float32"),
        # Stored actions are the unclipped samples, which may lie outside the Box's [-2, 2].
        "action": (1.5 * rng.normal(size=(n, 2))).astype("float32"),
        "advantage": rng.normal(size=n).astype("float32"),
        "returns": rng.normal(size=n).astype("float32"),
        "clip_range": np.float32(0.2),
    }
    mean = _numpy_mlp(agent.policy_network, "policy", batch["obs"])
    std = np.exp(np.array([-0.5, 0.3]))
    # log N(a; mu, sigma^2) summed over the two independent dimensions.
    log_p = np.sum(-0.5 * ((batch["action"] - mean) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi)), -1)
    batch["log_prob"] = (log_p + rng.normal(scale=0.4, size=n)).astype("float32")
    ratio = np.exp(log_p - batch["log_prob"])
    adv = batch["advantage"]
    policy_loss = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
    value = _numpy_mlp(agent.value_network, "value", batch["obs"])[:, 0]
    value_loss = np.mean((value - batch["returns"]) ** 2)
    # H = sum_i 0.5 * log(2 pi e sigma_i^2), the same for every state.
    entropy = np.sum(0.5 * np.log(2 * math.pi * math.e * std**2))
    expected = policy_loss + 0.5 * value_loss - 0.01 * entropy

    loss, metrics = agent.compute_rl_loss({k: keras.ops.convert_to_tensor(v) for k, v in batch.items()})
    got = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metrics.items()}
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-4)
    assert got["policy_loss"] == pytest.approx(policy_loss, rel=1e-4)
    assert got["value_loss"] == pytest.approx(value_loss, rel=1e-4)
    assert got["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert got["approx_kl"] == pytest.approx(np.mean((ratio - 1) - np.log(ratio)), rel=1e-3)
    clipped = np.mean(np.abs(ratio - 1) > 0.2)
    assert 0 < clipped < 1
    assert got["clip_fraction"] == pytest.approx(clipped)
    # Through the compiled update too.
    assert agent.runtime.update(batch)["loss"] == pytest.approx(expected, rel=1e-4)


# -- vector envs and schedules -------------------------------------------------------------
class _TaggedCounter(CounterEnv):
    """A ``CounterEnv`` observing ``[100 * index + episode, t]``, rewarding ``t``, counting its own steps and ends.

    Step and end counts are the env's: a ``NEXT_STEP`` autoreset step calls ``reset``, not ``step``.
    """

    def __init__(self, index, length, truncate):
        super().__init__(length=length, truncate=truncate, reward=float)
        self.index, self.steps, self.ended = index, 0, 0

    def _obs(self):
        return np.array([100 * self.index + self.episode, self.t], np.float32)

    def step(self, action):
        out = super().step(action)
        self.steps += 1
        self.ended += bool(out[2] or out[3])
        return out


def _tagged_envs(mode):
    # Episodes of 3, 4 (truncated) and 5 steps: the envs end and reset at different steps.
    fns = [lambda i=i, n=n, cut=cut: _TaggedCounter(i, n, cut) for i, (n, cut) in enumerate([(3, 0), (4, 1), (5, 0)])]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def _states_in_order(lengths, counts):
    """The states ``[100 * i + episode, t]`` env ``i`` goes through, the first ``counts[i]`` of them."""
    return {i: [[100 * i + k // n, k % n] for k in range(count)] for i, (n, count) in enumerate(zip(lengths, counts))}


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("cls", [ReinforceAgent, ActorCriticAgent, PPOAgent])
def test_on_policy_agents_fit_a_vector_env_in_both_autoreset_modes(cls, mode):
    envs = _tagged_envs(mode)
    kwargs = {"hidden_sizes": (8,), "gamma": 0.5, "seed": 0}
    if cls is PPOAgent:
        kwargs.update(n_steps=6, batch_size=8, n_epochs=2)
    elif cls is ActorCriticAgent:
        kwargs.update(n_steps=6)
    agent = cls(envs.single_observation_space, envs.single_action_space, **kwargs)
    learned = []  # what the agent learns from: rollouts (A2C, PPO) or whole episodes (REINFORCE)
    if cls is ReinforceAgent:
        train = agent._train
        agent._train = lambda step, n: learned.extend(agent._finished) or train(step, n)
    else:
        learn = agent._learn
        agent._learn = lambda batch: learned.append(batch) or learn(batch)
    finals = []  # the observations a truncated episode is bootstrapped from
    final_values = agent._final_values
    agent._final_values = lambda next_obs, truncated, terminated: (
        finals.extend(next_obs[truncated & ~terminated]) or final_values(next_obs, truncated, terminated)
    )
    agent.fit(envs, steps=90, verbose=0)

    subenvs = envs.envs
    # Env 1's truncated episodes end in [episode, 4]: that state, not the next episode's first, is bootstrapped.
    assert len(finals) == subenvs[1].ended > 0
    np.testing.assert_array_equal(np.asarray(finals)[:, 1], 4)
    # The counters are the envs' own: every real step once, every episode end once.
    assert agent.env_steps == sum(env.steps for env in subenvs) >= 90
    assert agent.episodes == sum(env.ended for env in subenvs) > 0
    assert agent.updates > 0
    obs = np.concatenate([batch["obs"] for batch in learned])
    env_of = obs[:, 0].astype(int) // 100
    if cls is ReinforceAgent:
        # Every episode is learned whole, its returns G_t = sum_k gamma^k r_{t+k} with r = 1, 2, ...
        # and nothing after its end (the truncated one too: REINFORCE has no baseline here).
        assert len(learned) == agent.episodes
        for episode in learned:
            n = [3, 4, 5][int(episode["obs"][0, 0]) // 100]
            np.testing.assert_array_equal(episode["obs"][:, 1], np.arange(n))
            assert len(np.unique(episode["obs"][:, 0])) == 1
            expected = [sum(0.5**k * (t + k + 1) for k in range(n - t)) for t in range(n)]
            np.testing.assert_allclose(episode["returns"], expected, rtol=1e-6)
    else:
        # A2C and PPO learn from rollouts of n_steps x 3 vector steps, real transitions only.
        per_rollout = [len(batch["obs"]) for batch in learned]
        if mode == gym.vector.AutoresetMode.SAME_STEP:
            assert per_rollout == [18] * len(learned)
        else:
            assert all(0 < n < 18 for n in per_rollout)  # each rollout spans an autoreset step, which is dropped
    # Env by env, the learned states are the states the env went through, in order: no
    # autoreset step ([episode, length]: its action is ignored), none missed, none twice.
    counts = [int(np.sum(env_of == i)) for i in range(3)]
    expected = _states_in_order([3, 4, 5], counts)
    for i in range(3):
        np.testing.assert_array_equal(obs[env_of == i], expected[i])


def test_ppo_clip_range_anneals_to_its_final_value_in_the_loss():
    # Episodes longer than the run: no resets, so env_steps after rollout k is exactly 8 k.
    envs = gym.vector.SyncVectorEnv([lambda: CounterEnv(length=1000)] * 2)
    agent = PPOAgent(
        envs.single_observation_space,
        envs.single_action_space,
        n_steps=4,
        batch_size=4,
        n_epochs=2,
        clip_range=0.3,
        clip_range_final=0.1,
        hidden_sizes=(8,),
        seed=0,
    )
    # The clip range as the compiled loss reads it, reported as one more metric of each update.
    loss = agent.compute_rl_loss

    def compute_rl_loss(batch):
        value, metrics = loss(batch)
        return value, {**metrics, "seen_clip_range": batch["clip_range"]}

    agent.compute_rl_loss = compute_rl_loss
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(logs["seen_clip_range"])

    agent.fit(envs, steps=32, verbose=0, callbacks=[Record()])
    # eps = clip_range + (env_steps / total_steps) * (clip_range_final - clip_range), taken at each
    # rollout's end (env steps 8, 16, 24, 32 of 32) for its 2 epochs x 2 minibatches.
    expected = np.repeat([0.3 - 0.2 * k / 4 for k in (1, 2, 3, 4)], 4)
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert seen[-1] == pytest.approx(0.1)
    assert agent.current_clip_range == pytest.approx(0.1)


# -- acting ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ReinforceAgent, ActorCriticAgent, PPOAgent])
def test_actions_are_valid_and_greedy_is_deterministic(cls):
    for action_space in (DISCRETE, BOX):
        agent = cls(OBS, action_space, seed=0)
        obs = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        sampled = agent.act(obs, training=True)
        greedy = agent.act(obs)
        assert all(action_space.contains(np.asarray(a, action_space.dtype)) for a in sampled)
        np.testing.assert_array_equal(greedy, agent.act(obs))
        assert agent.act(obs[0]).shape == action_space.shape


def test_categorical_sampling_follows_the_policy():
    agent = PPOAgent(OBS, DISCRETE, seed=0)
    obs = np.zeros((20_000, 4), np.float32)
    counts = np.bincount(agent.act(obs, training=True), minlength=3) / len(obs)
    logits = _numpy_mlp(agent.policy_network, "policy", obs[:1])[0]
    probs = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(counts, probs, atol=0.02)


def test_save_load_round_trip_keeps_the_policy(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = PPOAgent(env.observation_space, env.action_space, n_steps=64, batch_size=32, n_epochs=2, seed=0)
    agent.fit(env, steps=128, verbose=0)
    path = str(tmp_path / "ppo.keras")
    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PPOAgent) and loaded.continuous
    obs = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.act(obs), agent.act(obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.log_std.numpy(), agent.log_std.numpy())
    # The one optimizer's state comes back too, so a resumed run goes on with Adam's moments.
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == agent.updates > 0
    for old, new in zip(agent.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new))


# -- bad input ----------------------------------------------------------------------------
def test_bad_input_fails_with_a_clear_error():
    with pytest.raises(TypeError, match="Discrete or a 1-D Box action space"):
        PPOAgent(OBS, gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(TypeError, match="Box observation space"):
        ReinforceAgent(gym.spaces.Discrete(4), DISCRETE)
    with pytest.raises(ValueError, match="network='conv'"):
        ActorCriticAgent(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), DISCRETE)
    with pytest.raises(ValueError, match="n_steps"):
        PPOAgent(OBS, DISCRETE, n_steps=0)
    with pytest.raises(ValueError, match="gae_lambda"):
        PPOAgent(OBS, DISCRETE, gae_lambda=1.5)
    agent = PPOAgent(OBS, DISCRETE)
    with pytest.raises(ValueError, match="does not match"):
        agent.fit(gym.make("Pendulum-v1"), steps=10)


# -- updates -------------------------------------------------------------------------------
def _iterations(agent):
    return sum(int(keras.ops.convert_to_numpy(opt.iterations)) for opt, _ in agent.optimizer_groups()[:1])


def test_a2c_skips_rollouts_without_a_transition():
    # With n_steps=1 the rollout after each episode end holds only the autoreset
    # step (not a transition): it must not reach the optimizer.
    env = CounterEnv(length=3)
    agent = ActorCriticAgent(env.observation_space, env.action_space, n_steps=1, seed=0)
    observe, transitions = agent._observe, []
    agent._observe = lambda *args: transitions.append(int(np.sum(args[-1]))) or observe(*args)
    agent.fit(env, steps=12, verbose=0)
    assert sum(transitions) == 12 and len(transitions) > 12  # autoreset steps were seen
    assert agent.updates == 12
    assert _iterations(agent) == 12

    # An all-masked rollout after real updates (Adam's momentum is non-zero) leaves the weights alone.
    before = [np.array(w) for w in agent.get_weights()]
    obs = np.zeros((1, 2), np.float32)
    agent._explore(obs, 0)
    agent._observe(obs, np.zeros(1, np.int32), np.ones(1), obs, np.zeros(1, bool), np.zeros(1, bool), np.zeros(1, bool))
    assert list(agent._train(agent.env_steps, 1)) == []
    assert agent.updates == 12 and _iterations(agent) == 12
    for old, new in zip(before, agent.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (ActorCriticAgent, {}),
        (ActorCriticAgent, {"value_learning_rate": 3e-3}),  # actor and critic rates differ: MultiOptimizer
        (PPOAgent, {}),
        (ReinforceAgent, {"baseline": True}),
    ],
)
def test_value_coef_weighs_the_critic_in_the_joint_update(cls, kwargs):
    # One loss, one optimizer, one global-norm clip over actor and critic: a larger
    # value_coef takes a larger share of the clipped gradient norm, so it moves the
    # policy too. (Adam's first step is lr * sign(g) whatever the scale, so the
    # difference shows from the second update on.)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(5):
        n = 16
        batch = {
            "obs": rng.normal(size=(n, 4)).astype("float32"),
            "action": rng.integers(0, 3, n).astype("int32"),
            "advantage": rng.normal(size=n).astype("float32"),
            "returns": (10 * rng.normal(size=n)).astype("float32"),
        }
        if cls is PPOAgent:
            batch["log_prob"] = np.full(n, -math.log(3), np.float32)
            batch["clip_range"] = np.float32(0.2)
        else:
            batch["mask"] = np.ones(n, np.float32)
        batches.append(batch)
    weights = {}
    for value_coef in (0.5, 50.0):
        agent = cls(OBS, DISCRETE, value_coef=value_coef, max_grad_norm=0.5, seed=0, **kwargs)
        for batch in batches:
            agent.runtime.update(batch)
        weights[value_coef] = [np.array(w) for w in agent.policy_network.get_weights()]
    gap = max(np.max(np.abs(a - b)) for a, b in zip(weights[0.5], weights[50.0]))
    assert gap > 1e-4


def test_separate_critic_rate_is_one_optimizer_and_survives_save_and_load(tmp_path):
    env = CounterEnv(length=3)
    agent = ActorCriticAgent(
        env.observation_space, env.action_space, n_steps=1, learning_rate=1e-3, value_learning_rate=1e-2, seed=0
    )
    groups = agent.optimizer_groups()
    assert len(groups) == 1 and groups[0][0] is agent.optimizer
    assert {id(v) for v in groups[0][1]} == {id(v) for v in agent.trainable_variables}
    rates = sorted(float(keras.ops.convert_to_numpy(opt.learning_rate)) for opt in agent.optimizer.optimizers)
    assert rates == pytest.approx([1e-3, 1e-2])
    agent.fit(env, steps=12, verbose=0)
    path = str(tmp_path / "a2c.keras")
    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 12
    for old, new in zip(agent.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new))


def test_actor_critic_config_decays_the_learning_rate_as_the_tutorial_over_its_run():
    # The tutorial multiplies lr by 0.999 per episode over 800 episodes (0.45 in all);
    # here the decay counts updates, one per transition with n_steps=1.
    config = json.loads((pathlib.Path(__file__).parents[1] / "configs" / "actor-critic-cartpole.json").read_text())
    assert config["agent"]["n_steps"] == 1
    updates = config["train"]["steps"]
    overall = config["agent"]["learning_rate_decay"] ** (updates / 1000)
    assert overall == pytest.approx(0.999**800, rel=0.05)
