"""TD3: the smoothed twin target and losses against NumPy, the delayed actor, save/load, bad input, learning."""

import time

import gymnasium as gym
import keras
import numpy as np
import offpolicy_pendulum_setup as pendulum
import pytest
from probe_envs import CounterEnv
from test_ddpg import ACT, OBS, fixed_batch

from keras_rl_gym import TD3Agent
from keras_rl_gym.config import agent_class


def make_agent(**kwargs):
    defaults = dict(actor_hidden_sizes=(8, 8), critic_hidden_sizes=(8, 8), gamma=0.9, seed=0)
    defaults.update(kwargs)
    return TD3Agent(OBS, ACT, **defaults)


def numpy_mlp(model, inputs, prefix, out, activation=None):
    """A dense ReLU network's forward pass in NumPy from its layers ``prefix_dense{i}`` and ``out``."""
    h = inputs
    i = 0
    while any(layer.name == f"{prefix}_dense{i}" for layer in model.layers):
        k, b = model.get_layer(f"{prefix}_dense{i}").get_weights()
        h = np.maximum(h @ k + b, 0.0)
        i += 1
    k, b = model.get_layer(out).get_weights()
    h = h @ k + b
    return np.tanh(h) if activation == "tanh" else h


def actor_np(model, obs):
    return numpy_mlp(model, obs, "actor", "actor_out", "tanh")


def critic_np(model, obs, action, name):
    return numpy_mlp(model, np.concatenate([obs, action], axis=1), name, f"{name}_q")[:, 0]


def randomize(nets, seed=1):
    rng = np.random.default_rng(seed)
    for net in nets:
        net.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in net.get_weights()])


def td3_batch(agent, n=6, actor_turn=True):
    b = fixed_batch(n)
    # Wide noise, so that both clips (the noise's, then the action's) matter.
    b["target_noise"] = np.random.default_rng(5).normal(scale=0.8, size=(n, 2)).astype("float32")
    b["update_actor"] = np.float32(actor_turn)
    return b


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def numpy_target(agent, b, clip=0.5):
    eps = np.clip(b["target_noise"], -clip, clip)
    a2 = np.clip(actor_np(agent.target_actor, b["next_obs"]) + eps, -1.0, 1.0)
    q1 = critic_np(agent.target_critic1, b["next_obs"], a2, "critic1")
    q2 = critic_np(agent.target_critic2, b["next_obs"], a2, "critic2")
    return b["reward"] + 0.9 * (1.0 - b["terminated"]) * np.minimum(q1, q2)


def test_target_is_the_min_of_twin_targets_at_the_smoothed_action():
    agent = make_agent()
    randomize([agent.target_actor, agent.target_critic1, agent.target_critic2])
    b = td3_batch(agent)
    y = to_np(agent.td_target(b["reward"], b["next_obs"], b["terminated"], b["target_noise"]))
    np.testing.assert_allclose(y, numpy_target(agent, b), rtol=1e-5, atol=1e-5)
    # The check has teeth: the min of the two differs from one of the targets alone, and the noise matters.
    a2 = np.clip(actor_np(agent.target_actor, b["next_obs"]) + np.clip(b["target_noise"], -0.5, 0.5), -1, 1)
    q1 = critic_np(agent.target_critic1, b["next_obs"], a2, "critic1")
    q2 = critic_np(agent.target_critic2, b["next_obs"], a2, "critic2")
    assert not np.allclose(np.minimum(q1, q2), q2) or not np.allclose(np.minimum(q1, q2), q1)
    quiet = to_np(agent.td_target(b["reward"], b["next_obs"], b["terminated"], 0 * b["target_noise"]))
    assert not np.allclose(quiet, y)
    done = b["terminated"] == 1
    np.testing.assert_allclose(y[done], b["reward"][done], rtol=1e-6)


def test_losses_match_numpy():
    agent = make_agent()
    randomize([agent.target_actor, agent.target_critic1, agent.target_critic2])
    b = td3_batch(agent)
    loss, metrics = agent.compute_rl_loss(b)
    y = numpy_target(agent, b)
    q1 = critic_np(agent.critic1, b["obs"], b["action"], "critic1")
    q2 = critic_np(agent.critic2, b["obs"], b["action"], "critic2")
    critic_loss = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    actor_loss = -np.mean(critic_np(agent.critic1, b["obs"], actor_np(agent.actor, b["obs"]), "critic1"))
    assert float(to_np(metrics["critic_loss"])) == pytest.approx(critic_loss, rel=1e-5)
    assert float(to_np(metrics["actor_loss"])) == pytest.approx(actor_loss, rel=1e-5, abs=1e-6)
    assert float(to_np(loss)) == pytest.approx(critic_loss + actor_loss, rel=1e-5, abs=1e-6)
    # A critic-only turn has no actor term: its loss is the critics'.
    loss, metrics = agent.compute_rl_loss(td3_batch(agent, actor_turn=False))
    assert float(to_np(loss)) == pytest.approx(critic_loss, rel=1e-5) and float(to_np(metrics["actor_loss"])) == 0.0


def opt_state(opt):
    return [to_np(v).copy() for v in opt.variables]


# On torch also under torch.compile, as a run of 20k steps or more gets it: its first compiled
# apply, traced with the actor's gate shut, was replayed on every update and the actor never moved.
@pytest.mark.parametrize("compiled", [False, True] if keras.backend.backend() == "torch" else [False])
def test_critic_only_updates_leave_the_actor_untouched_bit_for_bit(compiled, monkeypatch):
    agent = make_agent(actor_learning_rate=0.01, critic_learning_rate=0.01)
    if compiled:
        monkeypatch.setenv("KERAS_RL_GYM_TORCH_COMPILE", "1")
        agent.runtime.hold()
        assert agent.runtime.compiled
    actor, actor_opt = agent.actor.get_weights(), opt_state(agent.actor_optimizer)
    critics = agent.critic1.get_weights() + agent.critic2.get_weights()
    for _ in range(2):
        agent.runtime.update(td3_batch(agent, n=16, actor_turn=False))
    for a, b in zip(agent.actor.get_weights(), actor):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(opt_state(agent.actor_optimizer), actor_opt):
        np.testing.assert_array_equal(a, b)  # no Adam moment, no iteration count moved
    moved = agent.critic1.get_weights() + agent.critic2.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(moved, critics))
    # An actor turn moves the actor.
    agent.runtime.update(td3_batch(agent, n=16, actor_turn=True))
    assert any(not np.allclose(a, b) for a, b in zip(agent.actor.get_weights(), actor))
    assert int(to_np(agent.actor_optimizer.iterations)) == 1 and int(to_np(agent.critic_optimizer.iterations)) == 3
    # And the gate shuts again.
    actor = agent.actor.get_weights()
    agent.runtime.update(td3_batch(agent, n=16, actor_turn=False))
    for a, b in zip(agent.actor.get_weights(), actor):
        np.testing.assert_array_equal(a, b)
    assert int(to_np(agent.actor_optimizer.iterations)) == 1


def test_fit_delays_the_actor_and_the_targets():
    env = gym.make("Pendulum-v1")
    agent = TD3Agent(
        env.observation_space, env.action_space, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
        learning_starts=20, batch_size=16, policy_delay=3, seed=0,
    )  # fmt: skip
    reported = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            reported.append(logs)

    agent.fit(env, steps=60, verbose=0, callbacks=[Record()])  # updates at steps 20..60: 41 of them
    assert agent.updates == len(reported) == 41
    # An actor_loss only from the actor's turns: a critic-only update computes none.
    assert [i for i, logs in enumerate(reported) if "actor_loss" in logs] == list(range(2, 41, 3))
    assert int(to_np(agent.critic_optimizer.iterations)) == 41
    assert int(to_np(agent.actor_optimizer.iterations)) == 41 // 3
    # A critic-only turn moves no target; the actor turn after it moves all of them by tau.
    targets = lambda: agent.target_actor.get_weights() + agent.target_critic1.get_weights()  # noqa: E731
    agent.updates = 3 * 100  # the next update (number 301) is a critic-only one
    before = targets()
    list(agent._update_once())
    for a, b in zip(targets(), before):
        np.testing.assert_array_equal(a, b)
    list(agent._update_once())
    list(agent._update_once())  # number 303: an actor turn, then the soft target update
    assert any(not np.array_equal(a, b) for a, b in zip(targets(), before))


def test_save_and_load_model_gives_same_actions(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = TD3Agent(
        env.observation_space, env.action_space, actor_hidden_sizes=(16,), critic_hidden_sizes=(16,),
        learning_starts=20, batch_size=16, seed=0,
    )  # fmt: skip
    agent.fit(env, steps=60, verbose=0)
    loaded = pendulum.save_load_round_trip(agent, str(tmp_path / "td3.keras"))
    assert loaded.updates == agent.updates == 41
    loaded.fit(env, steps=20, verbose=0)


def test_registered_and_bad_input_is_named():
    assert agent_class("td3") is TD3Agent
    with pytest.raises(TypeError, match="TD3Agent needs a Box action space"):
        TD3Agent(CounterEnv().observation_space, CounterEnv().action_space)
    with pytest.raises(ValueError, match="finite action bounds"):
        TD3Agent(OBS, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="policy_delay"):
        make_agent(policy_delay=0)
    with pytest.raises(ValueError, match="target_noise_clip"):
        make_agent(target_noise_clip=-0.1)


@pytest.mark.learning
def test_td3_learns_pendulum():
    start = time.perf_counter()
    result = pendulum.train_and_evaluate("TD3Agent", seed=0)
    elapsed = time.perf_counter() - start
    steps = pendulum.STEPS["TD3Agent"]
    print(f"TD3 Pendulum-v1 after {steps} steps: mean return {result['mean_return']:.1f} ({elapsed:.0f} s)")
    assert result["mean_return"] > pendulum.THRESHOLD, result
