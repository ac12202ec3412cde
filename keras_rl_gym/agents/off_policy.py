"""What the off-policy continuous-control agents (DDPG, TD3, SAC) share, written once as functions.

Each agent keeps its own loss; the host side is the same for all three: the
``Box`` checks, the map between env actions and the normalized ``[-1, 1]``
actions the networks see, the replay, the uniform warm-up, the exploration
noise of the deterministic actors, storing transitions, and the round of
updates every ``train_freq`` env steps. The agents take these functions as
their methods (``_observe = off_policy.observe``) rather than inherit them:
``Agent`` -> algorithm, no class in between.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from keras import ops

from keras_rl_gym import networks, schedules
from keras_rl_gym.agents.base import ALL_POSITIVE, NON_NEGATIVE, POSITIVE, POSITIVE_RATE, between, one_of
from keras_rl_gym.buffers import ReplayBuffer
from keras_rl_gym.spaces import require

NOISE_TYPES = ("gaussian", "ornstein-uhlenbeck")


def check_spaces(agent) -> None:
    """Checks for vector ``Box`` observations and a finite 1-D ``Box`` of actions; sets the action scaling.

    Sets ``agent.action_dim`` and ``agent._center``, ``agent._half_range``, with
    ``env action = center + half_range * normalized action``, normalized in ``[-1, 1]``.
    """
    name = type(agent).__name__
    require(agent.action_space, (spaces.Box,), name, "action")
    require(agent.observation_space, (spaces.Box,), name, "observation")
    if len(agent.action_space.shape) != 1:
        raise ValueError(f"{name} needs a 1-D Box action space, got shape {agent.action_space.shape}.")
    if not (np.all(np.isfinite(agent.action_space.low)) and np.all(np.isfinite(agent.action_space.high))):
        raise ValueError(f"{name} needs finite action bounds to scale its tanh output, got {agent.action_space}.")
    if np.any(agent.action_space.high <= agent.action_space.low):
        raise ValueError(f"{name} needs high > low in every action dimension, got {agent.action_space}.")
    if len(agent.observation_space.shape) == 3:
        raise ValueError(f"{name} has dense networks only; got image observations {agent.observation_space.shape}.")
    low = agent.action_space.low.astype(np.float64)
    high = agent.action_space.high.astype(np.float64)
    agent.action_dim = int(agent.action_space.shape[0])
    agent._center = ((high + low) / 2.0).astype(np.float32)
    agent._half_range = ((high - low) / 2.0).astype(np.float32)


def scale_graph(agent, normalized):
    """``center + half_range * normalized`` in ``keras.ops``: env actions from ``[-1, 1]`` ones."""
    return ops.add(
        ops.convert_to_tensor(agent._center), ops.multiply(ops.convert_to_tensor(agent._half_range), normalized)
    )


def frozen_call(model, inputs):
    """``model(inputs)`` with its weights behind ``stop_gradient``: gradients reach ``inputs`` only.

    A stateless call maps each variable to a stopped copy of its current value
    (read in the caller's scope, so this also works inside the JAX runtime's
    stateless scope; the model reads no other variable).
    """
    frozen = [ops.stop_gradient(v.value) for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    out, _ = model.stateless_call(frozen, state, inputs)
    return out


# -- hyperparameters and networks all three agents share ---------------------------------------
# Networks, rates, replay and target updates; each agent adds its own rules to these.
RULES = {
    "actor_hidden_sizes": ALL_POSITIVE,
    "critic_hidden_sizes": ALL_POSITIVE,
    "actor_learning_rate": POSITIVE_RATE,
    "critic_learning_rate": POSITIVE_RATE,
    "buffer_size": POSITIVE,
    "batch_size": POSITIVE,
    "learning_starts": NON_NEGATIVE,
    "train_freq": POSITIVE,
    "gradient_steps": POSITIVE,
    "tau": between(0, 1, open_low=True),
    "max_grad_norm": POSITIVE,
}


# The exploration-noise rules of the deterministic actors (DDPG and TD3).
NOISE_RULES = {
    "noise_type": one_of(*NOISE_TYPES),
    "noise_std": NON_NEGATIVE,
    "noise_std_final": NON_NEGATIVE,
    "exploration_fraction": between(0, 1),
    "ou_theta": between(0, 1, open_low=True),
}


def observation_signature(agent):
    """``(shape, dtype)`` of one observation, as ``agent._network`` declares its inputs."""
    return agent.observation_space.shape, str(agent.observation_space.dtype)


def deterministic_actor(agent, actor_network):
    """``mu(s) -> (batch, dim(A))`` in ``[-1, 1]``: the default tanh MLP, or the user's network."""
    obs_shape, obs_dtype = obs = observation_signature(agent)
    return agent._network(
        "actor_network",
        "mlp" if actor_network is None else actor_network,
        lambda: networks.mlp(
            obs_shape,
            agent.actor_hidden_sizes,
            agent.action_dim,
            output_activation="tanh",
            obs_dtype=obs_dtype,
            name="actor",
        ),
        inputs=[obs],
        output_shape=(agent.action_dim,),
    )


def twin_critics(agent, critic_network):
    """Two critics ``Q(s, a) -> (batch, 1)``: the default MLPs, or the user's and a clone with fresh weights."""
    action = ((agent.action_dim,), "float32")
    obs_shape, obs_dtype = obs = observation_signature(agent)

    def default(name):
        return lambda: networks.state_action_value(
            obs_shape, agent.action_dim, agent.critic_hidden_sizes, obs_dtype=obs_dtype, name=name
        )

    if critic_network is None:
        return default("critic1")(), default("critic2")()
    first = agent._network("critic_network", critic_network, None, inputs=[obs, action], output_shape=(1,))
    second = networks.copy_network(first)
    second.name = f"{first.name}_twin"
    return first, second


# -- host side (NumPy); each takes the agent as ``self`` --------------------------------------
def scale(self, normalized: np.ndarray) -> np.ndarray:
    action = self._center + self._half_range * normalized
    # The clip only removes float rounding past the bounds.
    return np.clip(action, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)


def normalize(self, action: np.ndarray) -> np.ndarray:
    return ((np.asarray(action, np.float32) - self._center) / self._half_range).astype(np.float32)


def q_values(self, obs, actions) -> np.ndarray:
    """Q(s, a) of each critic for observations and env actions: shape ``(batch, critics)``.

    One observation and one action give shape ``(critics,)``. DDPG has one critic, TD3 and
    SAC two (``Q1``, ``Q2``; their targets take the smaller). Actions are the env's, as
    ``act`` returns them: they are mapped to the ``[-1, 1]`` the critics were trained on,
    and observations are normalized as in training where the agent normalizes them.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import TD3Agent
        >>> env = gym.make("Pendulum-v1")
        >>> agent = TD3Agent(env.observation_space, env.action_space, seed=0)
        >>> obs, _ = env.reset(seed=0)
        >>> agent.q_values(obs, agent.act(obs)).shape
        (2,)
    """
    obs = np.asarray(obs, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    single = obs.shape == self.observation_space.shape
    if single:
        obs, actions = obs[None], actions.reshape(1, -1)
    if actions.shape != (len(obs), self.action_dim):
        raise ValueError(
            f"{type(self).__name__}.q_values: actions of shape {actions.shape} for {len(obs)} observations; "
            f"expected ({len(obs)}, {self.action_dim})."
        )
    self.sync_weights()  # a backend may hold the trained weights outside the Keras variables during fit
    critics = [self.critic] if hasattr(self, "critic") else [self.critic1, self.critic2]
    inputs = [self.normalized(ops.convert_to_tensor(obs)), ops.convert_to_tensor(self._normalize(actions))]
    values = np.concatenate([ops.convert_to_numpy(critic(inputs)) for critic in critics], axis=-1)
    return values[0] if single else values


def make_replay(self) -> None:
    """Allocates the replay of ``(obs, normalized action, reward, next_obs, terminated)``, once."""
    if self.buffer is not None:
        return
    obs_space = self.observation_space
    self.buffer = ReplayBuffer(
        self.buffer_size,
        {
            "obs": (obs_space.shape, obs_space.dtype),
            "action": ((self.action_dim,), np.float32),
            "reward": ((), np.float32),
            "next_obs": (obs_space.shape, obs_space.dtype),
            "terminated": ((), np.float32),
        },
        seed=self.replay_seed,
    )


def warmup_actions(self, n: int) -> np.ndarray:
    """Uniform over the box, drawn from the agent's own generator."""
    return self._scale(self.rng.uniform(-1.0, 1.0, (n, self.action_dim)))


def observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
    """Stores the real transitions, actions normalized to ``[-1, 1]``; restarts correlated noise at episode ends."""
    if valid.any():
        self.buffer.add(
            obs=obs[valid],
            action=self._normalize(action)[valid],
            reward=reward[valid],
            next_obs=next_obs[valid],
            terminated=terminated[valid],
        )
    if getattr(self, "_ou_state", None) is not None:
        # Each episode starts with fresh (zero) correlated noise.
        done = (terminated | truncated) & valid
        if done.any() and self._ou_state.shape[0] == len(done):
            self._ou_state[done] = 0.0


def train(self, step, new_steps):
    """``gradient_steps`` updates every ``train_freq`` env steps once ``learning_starts`` have passed.

    Each update is ``self._update_once()``, which yields the update's metrics
    (and does the target update that follows it, if any).
    """
    if step < self.learning_starts:
        return
    self._steps_since_train += new_steps
    while self._steps_since_train >= self.train_freq:
        self._steps_since_train -= self.train_freq
        for _ in range(self.gradient_steps):
            yield from self._update_once()


# -- exploration noise of a deterministic actor (DDPG, TD3) -----------------------------------
def start_noise(self, num_envs: int) -> None:
    """The noise schedule: linear from ``noise_std`` to ``noise_std_final`` over ``exploration_fraction`` of the run."""
    final = self.noise_std if self.noise_std_final is None else self.noise_std_final
    self._noise_fn = schedules.linear_schedule(self.noise_std, final, int(self.exploration_fraction * self.total_steps))
    self._ou_state = np.zeros((num_envs, self.action_dim))


def noise(self, n: int) -> np.ndarray:
    std = self.current_noise_std
    if self.noise_type == "gaussian":
        return std * self.rng.standard_normal((n, self.action_dim))
    # Ornstein-Uhlenbeck as the AR(1) process x <- (1 - theta) x + sigma_e * N(0, 1), with
    # sigma_e = std * sqrt(2 theta - theta^2) so that its stationary standard deviation is std.
    if self._ou_state is None or self._ou_state.shape[0] != n:
        self._ou_state = np.zeros((n, self.action_dim))
    theta = self.ou_theta
    shock = std * np.sqrt(2 * theta - theta**2) * self.rng.standard_normal((n, self.action_dim))
    self._ou_state = (1.0 - theta) * self._ou_state + shock
    return self._ou_state


def explore_with_noise(self, obs, step):
    """Warm-up actions first, then the actor's normalized action plus annealed noise, clipped to the box."""
    n = len(obs)
    if step < self.learning_starts:
        return self._warmup_actions(n)
    if self._noise_fn is not None:
        self.current_noise_std = self._noise_fn(step)
    normalized = np.asarray(self.runtime.act(obs)) + self._noise(n)
    return self._scale(np.clip(normalized, -1.0, 1.0))
