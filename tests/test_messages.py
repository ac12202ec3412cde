"""Bad inputs at run time get one clear line naming the value and the fault, not an error from deep inside.

Wrong-shaped rewards and observations from an env, non-finite observations, a conv
torso on vector observations; and user networks holding a ``keras.layers.Lambda``,
which the agents copy in-process for their target networks and twin critics.
"""

import keras
import numpy as np
import pytest
from probe_envs import ContinuousActionEnv, CounterEnv

from keras_rl_gym import (
    ActorCriticAgent,
    DDPGAgent,
    DQNAgent,
    DRQNAgent,
    PPOAgent,
    ReinforceAgent,
    SACAgent,
    TD3Agent,
)
from keras_rl_gym.loop import EpisodeLoop, as_vector_env
from keras_rl_gym.networks import mlp, q_network


# -- what an env returns ----------------------------------------------------------------------
class ArrayRewardEnv(CounterEnv):
    """Returns its reward as an array of shape (1,), as a network's output often is."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, np.array([reward], np.float32), terminated, truncated, info


class WrongResetEnv(CounterEnv):
    """Declares observations of shape (2,) and resets to one of shape (3,)."""

    def reset(self, *, seed=None, options=None):
        _, info = super().reset(seed=seed, options=options)
        return np.zeros(3, np.float32), info


class WrongStepEnv(CounterEnv):
    """Declares observations of shape (2,) and steps to one of shape (2, 1)."""

    def step(self, action):
        obs, *rest = super().step(action)
        return (obs[:, None], *rest)


class NaNEnv(CounterEnv):
    """Observes NaN from its second step on, as a diverging simulation does."""

    def _obs(self):
        return np.array([self.episode, np.nan if self.t >= 2 else self.t], dtype=np.float32)


@pytest.mark.backend_independent
def test_a_reward_of_shape_1_is_refused_naming_the_env_and_the_shape():
    loop = EpisodeLoop(as_vector_env(ArrayRewardEnv()))
    loop.reset(seed=0)
    with pytest.raises(ValueError, match=r"ArrayRewardEnv\.step\(\) returned a reward of shape \(1,\).*scalar"):
        loop.step(np.zeros(1, np.int64))


@pytest.mark.backend_independent
def test_an_observation_of_the_wrong_shape_is_refused_at_reset_and_at_step():
    loop = EpisodeLoop(as_vector_env(WrongResetEnv()))
    with pytest.raises(ValueError, match=r"WrongResetEnv\.reset\(\) returned an observation of shape \(3,\);.*\(2,\)"):
        loop.reset(seed=0)
    loop = EpisodeLoop(as_vector_env(WrongStepEnv()))
    loop.reset(seed=0)
    with pytest.raises(ValueError, match=r"WrongStepEnv\.step\(\) returned an observation of shape \(2, 1\);.*\(2,\)"):
        loop.step(np.zeros(1, np.int64))


@pytest.mark.backend_independent
def test_a_non_finite_observation_from_the_env_is_refused_naming_the_step():
    loop = EpisodeLoop(as_vector_env(NaNEnv(length=5)))
    loop.reset(seed=0)
    loop.step(np.zeros(1, np.int64))  # t = 1: finite
    with pytest.raises(ValueError, match=r"NaNEnv\.step\(\) returned a non-finite observation .*at step 2 "):
        loop.step(np.zeros(1, np.int64))


def tiny_dqn(env, **kwargs):
    return DQNAgent(env.observation_space, env.action_space, hidden_sizes=(4,), learning_starts=1000, seed=0, **kwargs)


def test_fit_stops_at_a_non_finite_observation_with_a_clear_error():
    env = NaNEnv(length=5)
    with pytest.raises(ValueError, match=r"non-finite observation .*at step 2 "):
        tiny_dqn(env).fit(env, steps=10, verbose=0)


def test_act_refuses_a_non_finite_observation():
    env = CounterEnv()
    agent = tiny_dqn(env)
    assert agent.act(np.zeros(2, np.float32)) in (0, 1)
    with pytest.raises(ValueError, match=r"DQNAgent\.act: non-finite observation \(NaN or inf\)"):
        agent.act(np.array([np.nan, 0.0], np.float32))
    batch = np.zeros((3, 2), np.float32)
    batch[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite observation .*1 of 6 values"):
        agent.act(batch)


# -- the conv torso needs images ------------------------------------------------------------
@pytest.mark.backend_independent  # refused before any network is built
@pytest.mark.parametrize("agent_class", [PPOAgent, ActorCriticAgent, ReinforceAgent, DQNAgent])
def test_a_conv_network_on_vector_observations_is_refused_at_construction(agent_class):
    env = CounterEnv()
    with pytest.raises(ValueError, match=rf"{agent_class.__name__}: network='conv' needs HxWxC .*shape \(2,\)"):
        agent_class(env.observation_space, env.action_space, network="conv")


@pytest.mark.backend_independent
def test_the_conv_builders_name_the_shape_they_cannot_take():
    with pytest.raises(ValueError, match=r"network='conv' needs HxWxC image observations, got shape \(2,\)"):
        mlp((2,), (8,), 2, network="conv")
    with pytest.raises(ValueError, match=r"at least 36x36.*got shape \(20, 20, 1\)"):
        q_network((20, 20, 1), 2, network="conv")


# -- user networks holding a Lambda ---------------------------------------------------------
def halve(x):
    # A module-level name (keras) inside the Lambda: a copy made through the layer's
    # serialized bytecode would not find it.
    return keras.ops.multiply(x, 0.5)


def lambda_q(observation_space, action_space):
    obs = keras.Input(observation_space.shape)
    x = keras.layers.Lambda(lambda t: halve(t))(obs)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(obs, keras.layers.Dense(int(action_space.n))(x), name="lambda_q")


def lambda_lstm(observation_space, action_space, units=8):
    obs = keras.Input((None, *observation_space.shape))
    h, c = keras.Input((units,)), keras.Input((units,))
    seq, h_out, c_out = keras.layers.LSTM(units, return_sequences=True, return_state=True)(obs, initial_state=[h, c])
    q = keras.layers.Dense(int(action_space.n))(keras.layers.Lambda(lambda t: keras.ops.tanh(t))(seq))
    return keras.Model([obs, h, c], [q, h_out, c_out], name="lambda_lstm")


def lambda_actor(outputs):
    def build(observation_space, action_space):
        # A Sequential inside the functional model: the copy reaches Lambdas in nested models too.
        inner = keras.Sequential([keras.layers.Lambda(lambda t: t * 0.5), keras.layers.Dense(8, activation="relu")])
        obs = keras.Input(observation_space.shape)
        return keras.Model(obs, keras.layers.Dense(outputs, activation="tanh")(inner(obs)), name="lambda_actor")

    return build


def lambda_critic(observation_space, action_space):
    obs, action = keras.Input(observation_space.shape), keras.Input(action_space.shape)
    x = keras.layers.Concatenate()([obs, action])
    x = keras.layers.Lambda(lambda t: keras.ops.clip(t, -10.0, 10.0), name="clip")(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model([obs, action], keras.layers.Dense(1)(x), name="lambda_critic")


OFF_POLICY = dict(learning_starts=8, batch_size=4, buffer_size=100, seed=0)
LAMBDA_CASES = {
    "dqn": (DQNAgent, dict(network=lambda_q, **OFF_POLICY), [("q_network", "target_network")]),
    "drqn": (
        DRQNAgent,
        dict(network=lambda_lstm, lstm_size=8, sequence_length=2, **OFF_POLICY),
        [("q_network", "target_network")],
    ),
    "ddpg": (
        DDPGAgent,
        dict(actor_network=lambda_actor(1), critic_network=lambda_critic, **OFF_POLICY),
        [("actor", "target_actor"), ("critic", "target_critic")],
    ),
    "td3": (
        TD3Agent,
        dict(actor_network=lambda_actor(1), critic_network=lambda_critic, policy_delay=1, **OFF_POLICY),
        [("actor", "target_actor"), ("critic1", "target_critic1"), ("critic2", "target_critic2")],
    ),
    "sac": (
        SACAgent,
        dict(actor_network=lambda_actor(2), critic_network=lambda_critic, **OFF_POLICY),
        [("critic1", "target_critic1"), ("critic2", "target_critic2")],
    ),
}


# DQN's copy (networks.target_copy) and SAC's (twin_critics and target_copy) on every backend; DRQN, DDPG and TD3
# make theirs through the same two functions, so they run once (the CI budget).
ONCE = ("ddpg", "drqn", "td3")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=pytest.mark.backend_independent if name in ONCE else ())
        for name in sorted(LAMBDA_CASES)
    ],
)
def test_a_users_network_with_a_lambda_layer_gets_target_copies_and_trains(case):
    agent_class, kwargs, pairs = LAMBDA_CASES[case]
    env = CounterEnv(length=4) if agent_class in (DQNAgent, DRQNAgent) else ContinuousActionEnv()
    agent = agent_class(env.observation_space, env.action_space, **kwargs)
    for online_name, target_name in pairs:
        online, target = getattr(agent, online_name), getattr(agent, target_name)
        # A separate copy (its own variables) holding the online weights at the start.
        assert target is not online
        assert not {id(v) for v in target.weights} & {id(v) for v in online.weights}
        for a, b in zip(online.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(a, b)
    if hasattr(agent, "critic2"):  # the twin: a copy of the user's critic with its own variables
        assert not {id(v) for v in agent.critic2.weights} & {id(v) for v in agent.critic1.weights}
    agent.fit(env, steps=16, verbose=0)
    assert agent.updates > 0
