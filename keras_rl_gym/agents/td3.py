"""Twin Delayed DDPG: DDPG with twin critics, target policy smoothing and a delayed actor."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym import networks
from keras_rl_gym.agents import off_policy
from keras_rl_gym.agents.base import NON_NEGATIVE, POSITIVE, Agent


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class TD3Agent(Agent):
    """Twin Delayed Deep Deterministic policy gradient (Fujimoto et al., 2018) for ``Box`` action spaces.

    DDPG's deterministic tanh actor ``pi(s)`` (scaled to the action bounds) with
    three changes against Q-value overestimation:

    * twin critics ``Q1``, ``Q2``, and the smaller of their targets in the Bellman target

          a' = clip(pi'(s') + clip(eps, -c, c), -1, 1),   eps ~ N(0, target_policy_noise^2)
          y  = r + gamma * (1 - terminated) * min(Q1'(s', a'), Q2'(s', a'))

      in the normalized action space (target policy smoothing, noise clipped at
      ``c = target_noise_clip``); the critic loss is ``mean((Q1 - y)^2) + mean((Q2 - y)^2)``;
    * the actor ascends ``Q1(s, pi(s))`` (through a frozen critic), and it and
      the targets move only every ``policy_delay``-th update: on the others the
      actor's optimizer is not applied at all (see ``backend.split_groups``);
    * the smoothing noise ``eps`` is drawn on the host and sent in the batch
      (``batch["target_noise"]``), so the compiled update is deterministic and
      the same on every backend.

    Exploration, warm-up, replay and the action scaling are DDPG's.

    Args:
        observation_space: a ``Box`` space of vectors.
        action_space: a ``Box`` space with finite bounds, of shape ``(n,)``.
        actor_hidden_sizes: widths of the actor's dense layers.
        critic_hidden_sizes: widths of each critic's dense layers.
        actor_network: your own actor: a ``keras.Model`` (or a function
            ``(observation_space, action_space) -> keras.Model``) from observations
            to ``(batch, n)`` actions in [-1, 1] (end it with a tanh).
        critic_network: your own critic ``[obs, action] -> (batch, 1)``; the second
            critic is a clone of it with fresh weights.
        gamma: discount factor.
        actor_learning_rate: Adam learning rate of the actor.
        critic_learning_rate: Adam learning rate of both critics.
        buffer_size: replay capacity in transitions.
        batch_size: transitions per update.
        learning_starts: env steps of uniformly random actions, with no updates, at the start.
        train_freq: env steps between rounds of updates.
        gradient_steps: updates per round.
        tau: soft target update rate, after each delayed actor update.
        policy_delay: the actor and the targets move every ``policy_delay``-th update.
        target_policy_noise: standard deviation of the target smoothing noise (normalized units).
        target_noise_clip: the smoothing noise is clipped to ``[-target_noise_clip, target_noise_clip]``.
        noise_type: exploration noise, ``"gaussian"`` or ``"ornstein-uhlenbeck"``.
        noise_std: exploration noise standard deviation at the start, in units of the action half-range.
        noise_std_final: the standard deviation at the end of the annealing; ``None`` keeps ``noise_std``.
        exploration_fraction: fraction of the run's horizon over which the noise anneals.
        ou_theta: mean-reversion rate of the Ornstein-Uhlenbeck noise per step.
        max_grad_norm: clip each optimizer's gradients to this global norm (``None``: no clipping).
        seed: random seed.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("Pendulum-v1")
        >>> agent = TD3Agent(env.observation_space, env.action_space, learning_starts=500)
        >>> history = agent.fit(env, steps=1_000, verbose=0)
        >>> bool(env.action_space.contains(agent.act(env.reset(seed=0)[0])))
        True

    References:
        Fujimoto, van Hoof and Meger, "Addressing Function Approximation Error in
        Actor-Critic Methods", ICML 2018.
    """

    _saved_state = ("current_noise_std", "_steps_since_train")

    hyperparameter_rules = {
        **off_policy.RULES,
        "policy_delay": POSITIVE,
        "target_policy_noise": NON_NEGATIVE,
        "target_noise_clip": NON_NEGATIVE,
        **off_policy.NOISE_RULES,
    }

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        actor_hidden_sizes: Sequence[int] = (256, 256),
        critic_hidden_sizes: Sequence[int] = (256, 256),
        actor_network: keras.Model | Callable | None = None,
        critic_network: keras.Model | Callable | None = None,
        gamma: float = 0.99,
        actor_learning_rate: float | LearningRateSchedule = 1e-3,
        critic_learning_rate: float | LearningRateSchedule = 1e-3,
        buffer_size: int = 1_000_000,
        batch_size: int = 256,
        learning_starts: int = 100,
        train_freq: int = 1,
        gradient_steps: int = 1,
        tau: float = 0.005,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        noise_type: str = "gaussian",
        noise_std: float = 0.1,
        noise_std_final: float | None = None,
        exploration_fraction: float = 1.0,
        ou_theta: float = 0.15,
        max_grad_norm: float | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(observation_space, action_space, gamma=gamma, seed=seed, **kwargs)
        self._set_hyperparameters(locals())
        off_policy.check_spaces(self)
        self.actor = off_policy.deterministic_actor(self, actor_network)
        self.critic1, self.critic2 = off_policy.twin_critics(self, critic_network)
        # Built before the first compiled step, with the online weights.
        self.target_actor = networks.target_copy(self.actor, "actor_target")
        self.target_critic1 = networks.target_copy(self.critic1, "critic1_target")
        self.target_critic2 = networks.target_copy(self.critic2, "critic2_target")
        self.actor_optimizer = keras.optimizers.Adam(actor_learning_rate, global_clipnorm=max_grad_norm)
        self.critic_optimizer = keras.optimizers.Adam(critic_learning_rate, global_clipnorm=max_grad_norm)
        self.actor_optimizer.build(self.actor.trainable_variables)
        self.critic_optimizer.build(self._critic_variables())

        self.current_noise_std = self.noise_std
        self.buffer = None
        self._noise_fn = None
        self._steps_since_train = 0  # env steps since the last round of updates
        self._ou_state = None
        self.built = True

    # -- graph (keras.ops) ---------------------------------------------------------
    def call(self, obs, training=False):
        """The deterministic policy's actions, scaled to the action bounds: shape ``(batch, n)``."""
        return off_policy.scale_graph(self, self.actor(self.normalized(obs), training=training))

    def _greedy_graph(self, obs):
        return self._box_actions_graph(off_policy.scale_graph(self, self.actor(obs)))

    def act_graph(self, obs):
        # Normalized actions: the host scales them (and adds noise in this space).
        return self.actor(obs)

    def td_target(self, reward, next_obs, terminated, target_noise):
        """``y = r + gamma (1 - terminated) min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c), -1, 1))``, no gradient.

        ``target_noise`` is the host's ``eps ~ N(0, target_policy_noise^2)``, ``(batch, n)``.
        """
        reward = ops.cast(reward, "float32")
        terminated = ops.cast(terminated, "float32")
        next_obs = ops.convert_to_tensor(next_obs)
        c = self.target_noise_clip
        eps = ops.clip(ops.cast(target_noise, "float32"), -c, c)
        next_action = ops.clip(self.target_actor(next_obs) + eps, -1.0, 1.0)
        q1 = self.target_critic1([next_obs, next_action])[:, 0]
        q2 = self.target_critic2([next_obs, next_action])[:, 0]
        return ops.stop_gradient(reward + self.gamma * (1.0 - terminated) * ops.minimum(q1, q2))

    def compute_rl_loss(self, batch):
        obs = ops.convert_to_tensor(batch["obs"])
        action = ops.cast(batch["action"], "float32")
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"], batch["target_noise"])
        # Critics: both regress on the one target.
        q1 = self.critic1([obs, action], training=True)[:, 0]
        q2 = self.critic2([obs, action], training=True)[:, 0]
        critic_loss = ops.mean(ops.square(q1 - y)) + ops.mean(ops.square(q2 - y))
        # Actor: ascend Q1(s, pi(s)) through a frozen Q1, on the actor's turns only (batch["update_actor"]
        # is 1 every policy_delay-th update). ops.cond runs and differentiates one branch, so a
        # critic-only update skips the actor's forward and backward passes; the actor's optimizer is
        # gated too (optimizer_groups), as Adam would move weights even on a zero gradient.
        actor_turn = ops.cast(batch["update_actor"], "float32") > 0.5

        def actor_objective():
            return -ops.mean(off_policy.frozen_call(self.critic1, [obs, self.actor(obs, training=True)])[:, 0])

        actor_loss = ops.cond(actor_turn, actor_objective, lambda: ops.zeros((), "float32"))
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": ops.mean(q1)}
        metrics["update_actor"] = ops.cast(actor_turn, "float32")
        return critic_loss + actor_loss, metrics

    def _on_update_reported(self, metrics: dict) -> dict:
        # actor_loss is logged for the actor's turns only: a critic-only update has none.
        metrics = super()._on_update_reported(metrics)
        if not metrics.pop("update_actor", 1.0):
            metrics.pop("actor_loss", None)
        return metrics

    def update_targets(self, tau: float):
        networks.update_target(self.target_actor, self.actor, tau)
        networks.update_target(self.target_critic1, self.critic1, tau)
        networks.update_target(self.target_critic2, self.critic2, tau)

    def _critic_variables(self):
        return [*self.critic1.trainable_variables, *self.critic2.trainable_variables]

    def optimizer_groups(self):
        # The actor's group is gated by the batch's "update_actor" entry (backend.split_groups).
        return [
            (self.critic_optimizer, self._critic_variables()),
            (self.actor_optimizer, self.actor.trainable_variables, "update_actor"),
        ]

    # -- host side (NumPy): shared with DDPG and SAC (agents/off_policy.py) -----------------
    _scale = off_policy.scale
    _normalize = off_policy.normalize
    q_values = off_policy.q_values
    _warmup_actions = off_policy.warmup_actions
    _noise = off_policy.noise
    _explore = off_policy.explore_with_noise
    _observe = off_policy.observe
    _train = off_policy.train

    def _greedy(self, obs):
        return self._scale(np.asarray(self.runtime.act(obs)))

    def _on_fit_begin(self, num_envs, steps):
        off_policy.make_replay(self)

    _start_acting = off_policy.start_noise

    def sample_batch(self) -> dict:
        """A replay minibatch with this update's smoothing noise and actor gate, as ``train_step`` takes it."""
        batch = self.buffer.sample(self.batch_size)
        return dict(batch, **self.update_entries(len(batch["reward"])))

    def update_entries(self, n: int) -> dict:
        """The host's entries of the next update's batch: ``target_noise`` and ``update_actor``.

        The update about to run is number ``updates + 1``; the actor moves on every
        ``policy_delay``-th one (the 2nd, 4th... for a delay of 2, as in SB3).
        """
        noise = self.target_policy_noise * self.rng.standard_normal((n, self.action_dim))
        actor_turn = (self.updates + 1) % self.policy_delay == 0
        return {"target_noise": noise.astype(np.float32), "update_actor": np.float32(actor_turn)}

    def _update_once(self):
        batch = self.sample_batch()
        yield self.train_step(batch)
        if batch["update_actor"]:
            self.runtime.update_targets(self.tau)

    def _log_values(self):
        return {"noise_std": float(self.current_noise_std)}
