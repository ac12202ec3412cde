"""SAC: the squashed-Gaussian log-prob, the soft target and the three losses against NumPy, fixed alpha,
save/load, bad input, learning."""

import math
import time

import gymnasium as gym
import numpy as np
import offpolicy_pendulum_setup as pendulum
import pytest
from probe_envs import CounterEnv
from test_ddpg import ACT, OBS, fixed_batch
from test_td3 import critic_np, numpy_mlp, randomize, to_np

from keras_rl_gym import SACAgent, distributions
from keras_rl_gym.config import agent_class


def make_agent(**kwargs):
    defaults = dict(actor_hidden_sizes=(8, 8), critic_hidden_sizes=(8, 8), gamma=0.9, seed=0)
    defaults.update(kwargs)
    return SACAgent(OBS, ACT, **defaults)


def sac_batch(n=6):
    b = fixed_batch(n)
    rng = np.random.default_rng(7)
    b["noise"] = rng.standard_normal((n, 2)).astype("float32")
    b["next_noise"] = rng.standard_normal((n, 2)).astype("float32")
    return b


def policy_np(agent, obs, noise):
    """NumPy ``(tanh(u), log pi)`` with ``u = mu + sigma * noise``, log pi in float64 by the plain formula."""
    out = numpy_mlp(agent.actor, obs, "actor", "actor_out").astype(np.float64)
    mean, log_std = out[:, :2], np.clip(out[:, 2:], -20.0, 2.0)
    u = mean + np.exp(log_std) * noise
    log_n = np.sum(-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)
    return np.tanh(u), log_n - np.sum(np.log(1.0 - np.tanh(u) ** 2), axis=-1)


# -- the tanh-squashed Gaussian ---------------------------------------------------------
def test_squashed_log_prob_is_the_change_of_variables():
    mean = np.array([[0.3, -1.0]], np.float32)
    log_std = np.array([[-0.5, 0.2]], np.float32)
    u = np.array([[0.7, -2.5]], np.float32)
    got = float(to_np(distributions.squashed_gaussian_log_prob(mean, log_std, u))[0])
    # p_a(a) = p_u(atanh(a)) * d atanh(a)/da, the derivative by central finite differences, per dimension.
    a, h = np.tanh(u.astype(np.float64)), 1e-6
    sigma = np.exp(log_std.astype(np.float64))
    p_u = np.exp(-0.5 * ((u - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    jacobian = (np.arctanh(a + h) - np.arctanh(a - h)) / (2 * h)
    assert got == pytest.approx(float(np.sum(np.log(p_u * jacobian))), rel=1e-4)
    # The density of a integrates to 1 over (-1, 1) (one dimension, midpoint rule in u).
    grid = np.linspace(-12, 12, 200_001, dtype=np.float32)[:, None]
    log_p = to_np(distributions.squashed_gaussian_log_prob(mean[:, :1], log_std[:, :1], grid))
    da = np.diff(np.tanh(grid[:, 0].astype(np.float64)))
    assert float(np.sum(np.exp(log_p[:-1]) * da)) == pytest.approx(1.0, abs=1e-3)
    # Stable where tanh(u) rounds to 1: log(1 - tanh(u)^2) ~ 2 log 2 - 2 |u|.
    far = to_np(distributions.tanh_log_det(np.array([[30.0, -30.0]], np.float32)))[0]
    assert np.isfinite(far) and far == pytest.approx(2 * (2 * math.log(2) - 60.0), rel=1e-6)


def test_host_sampler_agrees_with_the_graph_log_prob():
    rng = np.random.default_rng(0)
    mean, log_std = rng.normal(size=(64, 2)).astype("float32"), rng.normal(scale=0.5, size=(64, 2)).astype("float32")
    actions, log_p = distributions.sample_squashed_gaussian(np.random.default_rng(1), mean, log_std)
    assert actions.dtype == np.float32 and np.all(np.abs(actions) < 1.0)
    u = mean + np.exp(log_std) * np.random.default_rng(1).standard_normal(mean.shape).astype(np.float32)
    np.testing.assert_allclose(np.tanh(u), actions, rtol=1e-6)
    graph = to_np(distributions.squashed_gaussian_log_prob(mean, log_std, u))
    np.testing.assert_allclose(log_p, graph, rtol=1e-4, atol=1e-4)


# -- the losses against NumPy ------------------------------------------------------------
def prepared(**kwargs):
    agent = make_agent(**kwargs)
    randomize([agent.target_critic1, agent.target_critic2])
    if agent.learn_alpha:
        agent.log_alpha.assign(math.log(0.3))
    return agent


def numpy_target(agent, b, alpha):
    a2, log_pi2 = policy_np(agent, b["next_obs"], b["next_noise"])
    q1 = critic_np(agent.target_critic1, b["next_obs"], a2, "critic1")
    q2 = critic_np(agent.target_critic2, b["next_obs"], a2, "critic2")
    return b["reward"] + 0.9 * (1.0 - b["terminated"]) * (np.minimum(q1, q2) - alpha * log_pi2)


@pytest.mark.parametrize("alpha", ["auto", 0.05])
def test_soft_target_and_losses_match_numpy(alpha):
    agent = prepared(alpha=alpha, target_entropy=-1.5 if alpha == "auto" else "auto")
    value = 0.3 if alpha == "auto" else alpha
    b = sac_batch()
    y = to_np(agent.td_target(b["reward"], b["next_obs"], b["terminated"], b["next_noise"]))
    expected_y = numpy_target(agent, b, value)
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-4)
    # The entropy term counts: the target without it is another.
    assert not np.allclose(expected_y, numpy_target(agent, b, 0.0), atol=1e-3)

    loss, metrics = agent.compute_rl_loss(b)
    q1 = critic_np(agent.critic1, b["obs"], b["action"], "critic1")
    q2 = critic_np(agent.critic2, b["obs"], b["action"], "critic2")
    critic_loss = np.mean((q1 - expected_y) ** 2) + np.mean((q2 - expected_y) ** 2)
    a, log_pi = policy_np(agent, b["obs"], b["noise"])
    q_new = np.minimum(
        critic_np(agent.critic1, b["obs"], a, "critic1"), critic_np(agent.critic2, b["obs"], a, "critic2")
    )
    actor_loss = np.mean(value * log_pi - q_new)
    assert float(to_np(metrics["critic_loss"])) == pytest.approx(critic_loss, rel=1e-4)
    assert float(to_np(metrics["actor_loss"])) == pytest.approx(actor_loss, rel=1e-4, abs=1e-5)
    total = critic_loss + actor_loss
    if alpha == "auto":
        alpha_loss = -np.mean(math.log(0.3) * (log_pi - 1.5))
        assert float(to_np(metrics["alpha_loss"])) == pytest.approx(alpha_loss, rel=1e-4, abs=1e-5)
        total += alpha_loss
    else:
        assert "alpha_loss" not in metrics
    assert float(to_np(loss)) == pytest.approx(total, rel=1e-4, abs=1e-5)


def test_temperature_moves_toward_the_target_entropy():
    """One update: alpha falls when the policy's entropy is above the target, rises when below."""
    for target_entropy, direction in ((-50.0, -1), (50.0, 1)):
        agent = prepared(target_entropy=target_entropy, alpha_learning_rate=0.01)
        before = float(to_np(agent.log_alpha))
        agent.runtime.update(sac_batch(n=16))
        assert np.sign(float(to_np(agent.log_alpha)) - before) == direction
        assert float(to_np(agent.log_alpha)) - before == pytest.approx(direction * 0.01, rel=1e-2)


def test_fixed_alpha_has_no_temperature_variable():
    agent = make_agent(alpha=0.2)
    assert not agent.learn_alpha and len(agent.optimizer_groups()) == 2
    assert not any("log_alpha" in v.path for v in agent.variables)
    assert agent._log_values() == {"alpha": pytest.approx(0.2)}
    auto = make_agent(initial_alpha=0.5)
    assert len(auto.optimizer_groups()) == 3 and auto._log_values()["alpha"] == pytest.approx(0.5)
    assert auto.target_entropy_value == -2.0


# -- fit, save / load, bad input ------------------------------------------------------------
def test_fit_logs_alpha_and_save_load_round_trip(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = SACAgent(
        env.observation_space, env.action_space, actor_hidden_sizes=(16,), critic_hidden_sizes=(16,),
        learning_starts=20, batch_size=16, alpha_learning_rate=0.01, seed=0,
    )  # fmt: skip
    history = agent.fit(env, steps=60, verbose=0).history
    assert history["alpha"][-1] != pytest.approx(1.0) and agent.updates == 41
    optimizers = ("actor_optimizer", "critic_optimizer", "alpha_optimizer")
    loaded = pendulum.save_load_round_trip(agent, str(tmp_path / "sac.keras"), optimizers)
    assert np.all(np.abs(agent.act(np.zeros((4, 3), np.float32))) <= 2.0)
    assert float(to_np(loaded.log_alpha)) == float(to_np(agent.log_alpha))
    loaded.fit(env, steps=20, verbose=0)


def test_registered_and_bad_input_is_named():
    assert agent_class("sac") is SACAgent
    with pytest.raises(TypeError, match="SACAgent needs a Box action space"):
        SACAgent(CounterEnv().observation_space, CounterEnv().action_space)
    with pytest.raises(ValueError, match="finite action bounds"):
        SACAgent(OBS, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        make_agent(alpha="learned")
    with pytest.raises(ValueError, match="alpha"):
        make_agent(alpha=-0.1)
    with pytest.raises(ValueError, match="target_entropy"):
        make_agent(target_entropy="high")


@pytest.mark.learning
def test_sac_learns_pendulum():
    start = time.perf_counter()
    result = pendulum.train_and_evaluate("SACAgent", seed=0)
    elapsed = time.perf_counter() - start
    steps = pendulum.STEPS["SACAgent"]
    print(f"SAC Pendulum-v1 after {steps} steps: mean return {result['mean_return']:.1f} ({elapsed:.0f} s)")
    assert result["mean_return"] > pendulum.THRESHOLD, result
