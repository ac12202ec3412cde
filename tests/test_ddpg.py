"""DDPG: targets and losses against NumPy, actor/critic gradient separation, bounds, noise, save/load, learning."""

import math
import os
import time

import ddpg_pendulum_setup as pendulum
import gymnasium as gym
import keras
import numpy as np
import offpolicy_pendulum_setup as offpolicy
import pytest
from keras import ops
from probe_envs import ContinuousActionEnv, CounterEnv
from test_dqn import OptimizerRates

from keras_rl_gym import DDPGAgent
from keras_rl_gym.config import agent_class, load_config
from keras_rl_gym.config import make_agent as config_agent
from keras_rl_gym.config import make_env as config_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
# Asymmetric bounds: the tanh output is shifted as well as scaled.
ACT = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32))
CENTER, HALF = np.array([-0.5, 2.5]), np.array([1.5, 2.5])


def make_agent(**kwargs):
    defaults = dict(actor_hidden_sizes=(8, 8), critic_hidden_sizes=(8, 8), gamma=0.9, seed=0)
    defaults.update(kwargs)
    return DDPGAgent(OBS, ACT, **defaults)


def fixed_batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(n, 3)).astype("float32"),
        "action": rng.uniform(-1, 1, (n, 2)).astype("float32"),  # stored normalized
        "reward": rng.normal(size=n).astype("float32"),
        "next_obs": rng.normal(size=(n, 3)).astype("float32"),
        "terminated": np.resize(np.array([0, 1, 0, 0, 1, 0], dtype="float32"), n),
    }


def numpy_actor(model, obs):
    """The actor's forward pass in NumPy from its weights: normalized actions in [-1, 1]."""
    h = obs
    for i in range(2):
        k, b = model.get_layer(f"actor_dense{i}").get_weights()
        h = np.maximum(h @ k + b, 0.0)
    k, b = model.get_layer("actor_out").get_weights()
    return np.tanh(h @ k + b)


def numpy_critic(model, obs, action):
    """The critic's forward pass in NumPy: Q(s, a) of shape (batch,)."""
    h = np.concatenate([obs, action], axis=1)
    for i in range(2):
        k, b = model.get_layer(f"critic_dense{i}").get_weights()
        h = np.maximum(h @ k + b, 0.0)
    k, b = model.get_layer("critic_q").get_weights()
    return (h @ k + b)[:, 0]


def randomize_targets(agent, seed=1):
    rng = np.random.default_rng(seed)
    for net in (agent.target_actor, agent.target_critic):
        net.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in net.get_weights()])


def to_np(x):
    return keras.ops.convert_to_numpy(x)


# -- the graph against NumPy ------------------------------------------------------------
def test_policy_output_is_tanh_scaled_to_the_bounds():
    agent = make_agent()
    obs = fixed_batch()["obs"] * 10
    expected = CENTER + HALF * numpy_actor(agent.actor, obs)
    np.testing.assert_allclose(to_np(agent(obs)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(agent.act(obs), expected, rtol=1e-5, atol=1e-5)


def test_critic_target_matches_numpy():
    agent = make_agent()
    randomize_targets(agent)  # targets differ from the online networks
    b = fixed_batch()
    y = to_np(agent.td_target(b["reward"], b["next_obs"], b["terminated"]))
    next_action = numpy_actor(agent.target_actor, b["next_obs"])
    q_next = numpy_critic(agent.target_critic, b["next_obs"], next_action)
    expected = b["reward"] + 0.9 * (1.0 - b["terminated"]) * q_next
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # Terminal transitions do not bootstrap.
    done = b["terminated"] == 1
    np.testing.assert_allclose(y[done], b["reward"][done], rtol=1e-6)


def test_losses_match_numpy():
    agent = make_agent()
    randomize_targets(agent)
    b = fixed_batch()
    loss, metrics = agent.compute_rl_loss(b)
    y = to_np(agent.td_target(b["reward"], b["next_obs"], b["terminated"]))
    q = numpy_critic(agent.critic, b["obs"], b["action"])
    critic_loss = np.mean((q - y) ** 2)
    actor_loss = -np.mean(numpy_critic(agent.critic, b["obs"], numpy_actor(agent.actor, b["obs"])))
    assert float(to_np(metrics["critic_loss"])) == pytest.approx(critic_loss, rel=1e-5)
    assert float(to_np(metrics["actor_loss"])) == pytest.approx(actor_loss, rel=1e-5, abs=1e-6)
    assert float(to_np(metrics["q_mean"])) == pytest.approx(q.mean(), rel=1e-5, abs=1e-6)
    assert float(to_np(loss)) == pytest.approx(critic_loss + actor_loss, rel=1e-5, abs=1e-6)


# -- one update: the actor term moves only the actor, the critic term only the critic ------------
class CriticLossOnly(DDPGAgent):
    """Updates the critic alone, on the critic loss alone."""

    def optimizer_groups(self):
        return self.optimizer_groups_of("critic")

    def optimizer_groups_of(self, name):
        return [group for group in DDPGAgent.optimizer_groups(self) if group[0] is getattr(self, f"{name}_optimizer")]

    def compute_rl_loss(self, batch):
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"])
        q = self.critic([batch["obs"], batch["action"]])[:, 0]
        return ops.mean(ops.square(q - y)), {}


class ActorLossOnly(CriticLossOnly):
    """Updates the actor alone, on ``-Q(s, pi(s))`` with the plain critic."""

    def optimizer_groups(self):
        return self.optimizer_groups_of("actor")

    def compute_rl_loss(self, batch):
        return -ops.mean(self.critic([batch["obs"], self.actor(batch["obs"])])), {}


class NaiveSum(DDPGAgent):
    """The sum without the frozen critic: the actor term also pushes the critic up."""

    def compute_rl_loss(self, batch):
        critic_only, _ = CriticLossOnly.compute_rl_loss(self, batch)
        actor_only, _ = ActorLossOnly.compute_rl_loss(self, batch)
        return critic_only + actor_only, {}


def one_update(cls, reference, batch, **kwargs):
    agent = cls(OBS, ACT, actor_hidden_sizes=(8, 8), critic_hidden_sizes=(8, 8), gamma=0.9, seed=0, **kwargs)
    agent.set_weights(reference.get_weights())  # the same starting point, targets included
    agent.runtime.update(batch)
    return agent


@pytest.mark.parametrize("max_grad_norm", [None, 0.1])
def test_actor_and_critic_gradients_are_separated(max_grad_norm):
    batch = fixed_batch(n=16)
    reference = make_agent()
    randomize_targets(reference)
    # Different learning rates also show that each optimizer gets its own network.
    kwargs = dict(actor_learning_rate=0.01, critic_learning_rate=0.003, max_grad_norm=max_grad_norm)
    full = one_update(DDPGAgent, reference, batch, **kwargs)
    critic_only = one_update(CriticLossOnly, reference, batch, **kwargs)
    actor_only = one_update(ActorLossOnly, reference, batch, **kwargs)

    for name, expected in (("critic", critic_only), ("actor", actor_only)):
        moved = getattr(full, name).get_weights()
        assert any(not np.allclose(a, b) for a, b in zip(moved, getattr(reference, name).get_weights())), name
        for a, b in zip(moved, getattr(expected, name).get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)
    # The targets do not move in an update.
    for name in ("target_actor", "target_critic"):
        for a, b in zip(getattr(full, name).get_weights(), getattr(reference, name).get_weights()):
            np.testing.assert_array_equal(a, b)

    # The check has teeth: without the frozen critic the critic's update is different.
    naive = one_update(NaiveSum, reference, batch, **kwargs)
    assert any(
        not np.allclose(a, b, rtol=1e-5, atol=1e-7)
        for a, b in zip(naive.critic.get_weights(), critic_only.critic.get_weights())
    )


def test_soft_and_hard_target_updates():
    agent = make_agent()
    randomize_targets(agent)
    online = [w.copy() for w in agent.actor.get_weights() + agent.critic.get_weights()]
    target = [w.copy() for w in agent.target_actor.get_weights() + agent.target_critic.get_weights()]
    agent.runtime.update_targets(0.1)
    new = agent.target_actor.get_weights() + agent.target_critic.get_weights()
    for t_new, t_old, o in zip(new, target, online):
        np.testing.assert_allclose(t_new, t_old + 0.1 * (o - t_old), rtol=1e-5, atol=1e-6)
    agent.runtime.update_targets(1.0)
    for t_new, o in zip(agent.target_actor.get_weights() + agent.target_critic.get_weights(), online):
        np.testing.assert_array_equal(t_new, o)


@pytest.mark.parametrize("targets", [True, False], ids=["fit-order", "fused"])
def test_updates_inside_fit_match_plain_updates(targets):
    """Held, each act returns the actor's output on the weights after the update before it (fused with
    the act on JAX and TF unless a target update ran it first, as in fit's order); same weights as plain."""
    batch = fixed_batch(n=16)
    obs = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    plain, held = make_agent(max_grad_norm=1.0), make_agent(max_grad_norm=1.0)
    held.set_weights(plain.get_weights())
    runtime = held.runtime
    runtime.hold(100)
    for _ in range(3):
        before = numpy_actor(plain.actor, obs)
        plain.runtime.update(batch)
        runtime.update(batch)
        if targets:
            plain.runtime.update_targets(0.05)
            runtime.update_targets(0.05)
        after = numpy_actor(plain.actor, obs)
        actions = runtime.act(obs)  # normalized actions, as the host adds noise to them
        assert actions.shape == (64, 2) and actions.dtype == np.float32 and np.all(np.abs(actions) <= 1.0)
        np.testing.assert_allclose(actions, after, rtol=1e-5, atol=1e-6)
        assert np.abs(after - before).max() > 1e-4  # the weights before the update would act otherwise
    runtime.release()
    for a, b in zip(plain.get_weights(), held.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_learning_rate_schedules_as_seen_by_each_optimizer():
    """Keras schedules for actor and critic: each optimizer counts every update of fit and applies its own."""
    schedule = keras.optimizers.schedules.ExponentialDecay
    env = continuous_counter()
    agent = DDPGAgent(
        env.observation_space, env.action_space, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
        learning_starts=10, batch_size=8, seed=0,
        actor_learning_rate=schedule(1e-3, decay_steps=20, decay_rate=0.5, staircase=True),
        critic_learning_rate=schedule(2e-3, decay_steps=30, decay_rate=0.5, staircase=True),
    )  # fmt: skip
    probe = OptimizerRates("actor_optimizer", "critic_optimizer")
    agent.fit(env, steps=100, verbose=0, log_every=25, callbacks=[probe])
    updates = [16, 41, 66, 91]  # one per env step from step 10 on
    assert [row["updates"] for row in probe.seen] == updates
    for name, start, every in (("actor_optimizer", 1e-3, 20), ("critic_optimizer", 2e-3, 30)):
        assert [row[name][0] for row in probe.seen] == updates, name
        rates = [row[name][1] for row in probe.seen]
        np.testing.assert_allclose(rates, [start * 0.5 ** (n // every) for n in updates], rtol=1e-5, err_msg=name)


# -- acting and exploring on the host -----------------------------------------------------------
@pytest.mark.parametrize("noise_type", ["gaussian", "ornstein-uhlenbeck"])
def test_actions_stay_within_bounds(noise_type):
    agent = make_agent(noise_type=noise_type, noise_std=3.0, learning_starts=0)
    obs = np.random.default_rng(0).normal(scale=100.0, size=(256, 3)).astype("float32")  # saturates tanh
    for actions in (agent.act(obs), agent.act(obs, training=True), agent.act(obs[0], training=True)):
        assert actions.dtype == np.float32
        assert np.all(actions >= ACT.low) and np.all(actions <= ACT.high)
    assert agent.act(obs[0]).shape == (2,)
    # Warm-up actions are uniform over the whole box.
    warm = make_agent(learning_starts=10_000).act(np.zeros((4000, 3), np.float32), training=True)
    assert np.all(warm >= ACT.low) and np.all(warm <= ACT.high)
    np.testing.assert_allclose(warm.mean(axis=0), CENTER, atol=0.1)
    np.testing.assert_allclose(warm.std(axis=0), HALF / np.sqrt(3), rtol=0.05)


def test_noise_statistics():
    obs = np.zeros((20_000, 3), np.float32)
    agent = make_agent(noise_std=0.2, learning_starts=0)
    greedy = agent._normalize(agent.act(obs[:1]))
    noise = agent._normalize(agent.act(obs, training=True)) - greedy
    np.testing.assert_allclose(noise.std(axis=0), 0.2, rtol=0.05)
    # Ornstein-Uhlenbeck: correlated in time, with stationary standard deviation noise_std.
    ou = make_agent(noise_type="ornstein-uhlenbeck", noise_std=0.2, ou_theta=0.15)
    ou._ou_state = None
    x = np.stack([ou._noise(1)[0, 0] for _ in range(20_000)])
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(0.85, abs=0.03)
    assert x[1000:].std() == pytest.approx(0.2, rel=0.15)


def continuous_counter(length=4, truncate=False):
    env = ContinuousActionEnv()
    env.length, env.truncate = length, truncate
    return env


@pytest.mark.parametrize("truncate", [False, True])
def test_fit_stores_normalized_actions_and_bootstraps_through_truncation(truncate):
    env = continuous_counter(truncate=truncate)
    agent = DDPGAgent(
        env.observation_space,
        env.action_space,
        actor_hidden_sizes=(8,),
        critic_hidden_sizes=(8,),
        learning_starts=10,
        batch_size=8,
        noise_std=0.5,
        noise_std_final=0.0,
        exploration_fraction=0.5,
        seed=0,
    )
    history = agent.fit(env, steps=60, verbose=0, log_every=20)
    n = len(agent.buffer)
    data = {k: v[:n] for k, v in agent.buffer.data.items()}
    assert n == 60 and np.all(np.abs(data["action"]) <= 1.0)
    np.testing.assert_array_equal(data["next_obs"][:, 1], data["obs"][:, 1] + 1)  # no transition across a reset
    last = data["next_obs"][:, 1] == 4
    assert (data["terminated"][last] == (0.0 if truncate else 1.0)).all() and (data["terminated"][~last] == 0).all()
    h = history.history
    assert h["noise_std"][0] > h["noise_std"][-1] == pytest.approx(0.0)
    assert all(math.isfinite(v) for v in h["critic_loss"] + h["actor_loss"]) and agent.updates == 51


def test_same_seed_same_run():
    def run():
        env = gym.make("Pendulum-v1")
        agent = DDPGAgent(
            env.observation_space, env.action_space, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
            learning_starts=50, batch_size=16, noise_type="ornstein-uhlenbeck", seed=3,
        )  # fmt: skip
        return agent.fit(env, steps=150, verbose=0, log_every=50).history["critic_loss"]

    assert run() == run()


# -- bad input ----------------------------------------------------------------------------
def test_discrete_action_space_is_refused():
    env = CounterEnv()
    with pytest.raises(TypeError, match="DDPGAgent needs a Box action space"):
        DDPGAgent(env.observation_space, env.action_space)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="finite action bounds"):
        DDPGAgent(OBS, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="high > low"):
        DDPGAgent(OBS, gym.spaces.Box(np.array([0.0, 1.0], np.float32), np.array([1.0, 1.0], np.float32)))
    with pytest.raises(ValueError, match="noise_type"):
        make_agent(noise_type="pink")
    with pytest.raises(ValueError, match="tau"):
        make_agent(tau=0.0)
    with pytest.raises(ValueError, match="bogus"):
        make_agent(bogus=1)


# -- configs and save / load ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpg-pendulum", "ddpg-bipedalwalker"])
def test_configs_are_valid(name):
    config = load_config(os.path.join(ROOT, "configs", f"{name}.json"))
    assert agent_class(config["algo"]) is DDPGAgent
    # The config builds its agent for its env, with the config's hyperparameters.
    env = config_env(config)
    agent = config_agent(config, env)
    assert isinstance(agent, DDPGAgent)
    assert {key: agent.get_config()[key] for key in config["agent"]} == config["agent"]


def test_save_and_load_model_gives_same_actions(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = DDPGAgent(
        env.observation_space, env.action_space, actor_hidden_sizes=(16,), critic_hidden_sizes=(16,),
        learning_starts=20, batch_size=16, seed=0,
    )  # fmt: skip
    agent.fit(env, steps=60, verbose=0)
    assert agent.updates == 41
    loaded = offpolicy.save_load_round_trip(agent, str(tmp_path / "ddpg.keras"))
    loaded.fit(env, steps=30, verbose=0)


# -- learning ------------------------------------------------------------------------------
@pytest.mark.learning
def test_ddpg_learns_pendulum():
    """Seed 0 swings up and holds: a mean return far above a random policy's -1200."""
    start = time.perf_counter()
    result = pendulum.train_and_evaluate(seed=0)
    elapsed = time.perf_counter() - start
    print(f"DDPG Pendulum-v1 after {pendulum.STEPS} steps: mean return {result['mean_return']:.1f} ({elapsed:.0f} s)")
    # benchmarks/ddpg_pendulum.py runs the same check on seeds 0, 1 and 2.
    assert result["mean_return"] > pendulum.THRESHOLD, result
