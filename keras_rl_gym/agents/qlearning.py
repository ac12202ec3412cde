"""Tabular Q-learning, with the Q-table as a Keras variable."""

from __future__ import annotations

import keras
import numpy as np
from gymnasium import spaces
from keras import ops

from keras_rl_gym import schedules
from keras_rl_gym.agents.base import EPSILON_RULES, Agent, between


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class QLearningAgent(Agent):
    """Tabular Q-learning (Watkins, 1989) on a ``Discrete`` observation space.

    Each transition moves one table entry toward its Bellman target:

        Q[s, a] += alpha * (r + gamma * (1 - terminated) * max_a' Q[s', a'] - Q[s, a])

    which is exactly a gradient step of size ``alpha`` on
    ``0.5 * (Q[s, a] - stop_gradient(y))^2``: so the update is written as that loss
    and runs through the same compiled update as every other agent (plain SGD
    with learning rate 1, ``alpha`` passed in with the batch). As in the tutorial,
    ``alpha`` decays by ``alpha_decay`` after each episode and epsilon anneals
    from ``epsilon_start`` to ``epsilon_final``. A time-limit truncation still
    bootstraps from ``s'``.

    Continuous observations need discretizing first, e.g. with
    :func:`keras_rl_gym.wrappers.discretize_observation`.

    Args:
        observation_space: a ``Discrete`` space (state indices).
        action_space: a ``Discrete`` space.
        alpha: initial step size.
        alpha_decay: multiply ``alpha`` by this at the end of each episode.
        alpha_min: ``alpha`` never decays below this.
        epsilon_start, epsilon_final: exploration rate annealed between these.
        exploration_fraction: fraction of the run's horizon (``fit``'s ``total_steps``) over which epsilon anneals.
        epsilon_schedule: ``"linear"`` or ``"exponential"``.
        initial_q: initial value of every entry.
        gamma: discount factor.
        seed: random seed.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("FrozenLake-v1", is_slippery=False)
        >>> agent = QLearningAgent(env.observation_space, env.action_space, alpha=0.5)
        >>> history = agent.fit(env, steps=2_000, verbose=0)

    References:
        Watkins, "Learning from Delayed Rewards", PhD thesis, 1989.
    """

    _host_attributes = Agent._host_attributes | {"_batch"}
    _saved_state = ("epsilon", "current_alpha")
    hyperparameter_rules = {
        "alpha": between(0, 1, open_low=True),
        "alpha_decay": between(0, 1, open_low=True),
        "alpha_min": between(0, 1),
        **EPSILON_RULES,
    }

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        alpha: float = 0.5,
        alpha_decay: float = 1.0,
        alpha_min: float = 0.0,
        epsilon_start: float = 1.0,
        epsilon_final: float = 0.05,
        exploration_fraction: float = 0.8,
        epsilon_schedule: str = "linear",
        initial_q: float = 0.0,
        gamma: float = 0.99,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(observation_space, action_space, gamma=gamma, seed=seed, **kwargs)
        self._set_hyperparameters(locals())
        name = type(self).__name__
        if not isinstance(self.observation_space, spaces.Discrete):
            raise TypeError(
                f"{name} needs a Discrete observation space (state indices), got {self.observation_space}. "
                "Discretize continuous observations first, e.g. with "
                "keras_rl_gym.wrappers.discretize_observation(env, n_bins=..., low=..., high=...)."
            )
        if not isinstance(self.action_space, spaces.Discrete):
            raise TypeError(f"{name} needs a Discrete action space, got {self.action_space}.")
        self.n_states = int(self.observation_space.n)
        self.n_actions = int(self.action_space.n)
        self.q_table = self.add_weight(
            shape=(self.n_states, self.n_actions),
            initializer=keras.initializers.Constant(self.initial_q),
            name="q_table",
        )
        self.optimizer = keras.optimizers.SGD(learning_rate=1.0)
        self.optimizer.build([self.q_table])
        self.current_alpha = self.alpha
        self.epsilon = self.epsilon_start
        self._epsilon_fn = None
        self.built = True

    # -- graph (keras.ops) ---------------------------------------------------------
    def _state_index(self, obs):
        return ops.cast(obs, "int32") - self.observation_space.start

    def call(self, obs, training=False):
        """The table's rows for a batch of states: ``(batch, n_actions)``."""
        return ops.take(self.q_table, self._state_index(obs), axis=0)

    def act_graph(self, obs):
        return ops.argmax(self(obs), axis=-1)

    def _greedy_graph(self, obs):
        return self._discrete_actions_graph(self(obs))

    def compute_rl_loss(self, batch):
        q_next = ops.max(self(batch["next_obs"]), axis=-1)
        terminated = ops.cast(batch["terminated"], "float32")
        y = ops.stop_gradient(ops.cast(batch["reward"], "float32") + self.gamma * (1.0 - terminated) * q_next)
        q = ops.take_along_axis(self(batch["obs"]), ops.expand_dims(ops.cast(batch["action"], "int32"), -1), axis=-1)
        error = q[:, 0] - y
        # d/dQ[s,a] of alpha * 0.5 * error^2 is alpha * error: one SGD step of
        # rate 1 is the tabular update. A sum, so each transition moves its entry by alpha.
        loss = batch["alpha"] * 0.5 * ops.sum(ops.square(error))
        return loss, {"td_error": ops.mean(ops.abs(error))}

    # -- host side (NumPy) ------------------------------------------------------------
    def _on_fit_begin(self, num_envs, steps):
        self._batch = None

    def _start_acting(self, num_envs):
        # Epsilon anneals over the first exploration_fraction of the run's horizon.
        self._epsilon_fn = schedules.make_schedule(
            self.epsilon_schedule,
            max(self.epsilon_start, 1e-8),
            max(self.epsilon_final, 1e-8),
            int(self.exploration_fraction * self.total_steps),
        )

    def _explore(self, obs, step):
        if self._epsilon_fn is not None:
            self.epsilon = self._epsilon_fn(step)
        n = len(obs)
        actions = self._greedy(obs)
        explore = self.rng.random(n) < self.epsilon
        return np.where(explore, self.rng.integers(0, self.n_actions, size=n), actions)

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
        self._batch = {
            "obs": np.asarray(obs, np.int32)[valid],
            "action": np.asarray(action, np.int32)[valid],
            "reward": np.asarray(reward, np.float32)[valid],
            "next_obs": np.asarray(next_obs, np.int32)[valid],
            "terminated": np.asarray(terminated, np.float32)[valid],
            "alpha": np.float32(self.current_alpha),
        }
        episodes = int(np.sum((np.asarray(terminated) | np.asarray(truncated)) & valid))
        if episodes:
            self.current_alpha = max(self.current_alpha * self.alpha_decay**episodes, self.alpha_min)

    def _train(self, step, new_steps):
        batch, self._batch = self._batch, None
        if batch is not None and len(batch["obs"]):
            yield self.train_step(batch)

    def _log_values(self):
        return {"epsilon": float(self.epsilon), "alpha": float(self.current_alpha)}
