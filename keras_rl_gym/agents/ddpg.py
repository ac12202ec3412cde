"""Deep Deterministic Policy Gradient: a deterministic actor and a Q(s, a) critic, both with target networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym import networks
from keras_rl_gym.agents import off_policy
from keras_rl_gym.agents.base import Agent


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class DDPGAgent(Agent):
    """Deep Deterministic Policy Gradient (Lillicrap et al., 2016) for ``Box`` action spaces.

    The actor ``pi(s)`` is an MLP with a ``tanh`` output, scaled to the
    action bounds. The critic ``Q(s, a)`` sees the action in that normalized
    ``[-1, 1]`` form. Both are trained from minibatches of a replay buffer, in
    one step, on the sum of two losses:

    * critic: ``mean((Q(s, a) - y)^2)`` against the stopped-gradient target

          y = r + gamma * (1 - terminated) * Q'(s', pi'(s'))

      of the target actor ``pi'`` and target critic ``Q'``. Only ``terminated``
      cuts the bootstrap: a time-limit truncation still bootstraps from ``s'``.
    * actor: ``-mean(Q(s, pi(s)))``, where the critic runs on stopped-gradient
      copies of its weights, so this term moves the actor only and the
      critic loss moves the critic only. Both read the critic as it was before
      the step.

    After every update the targets move by ``target <- tau * online + (1 - tau) * target``.

    Exploration adds Gaussian or Ornstein-Uhlenbeck noise to the actor's
    normalized action on the host (NumPy), with a standard deviation annealed
    linearly from ``noise_std`` to ``noise_std_final`` (the tutorial's
    ``epsilon`` -> ``epsilon_final``); the first ``learning_starts`` env steps
    take uniformly random actions and do no updates.

    Args:
        observation_space: a ``Box`` space of vectors.
        action_space: a ``Box`` space with finite bounds, of shape ``(n,)``.
        actor_hidden_sizes: widths of the actor's dense layers.
        critic_hidden_sizes: widths of the critic's dense layers.
        actor_network: your own actor instead: a ``keras.Model`` (or a function
            ``(observation_space, action_space) -> keras.Model``) from ``(batch, *obs_shape)``
            to ``(batch, n)`` actions in [-1, 1] (end it with a tanh), scaled to the bounds.
        critic_network: your own critic: ``[obs, action] -> (batch, 1)``, likewise.
        gamma: discount factor.
        actor_learning_rate: Adam learning rate of the actor (the tutorial's ``lr_a``).
        critic_learning_rate: Adam learning rate of the critic (the tutorial's ``lr_c``).
        buffer_size: replay capacity in transitions.
        batch_size: transitions per update.
        learning_starts: env steps of uniformly random actions, with no updates, at the start.
        train_freq: env steps between rounds of updates.
        gradient_steps: updates per round.
        tau: soft target update rate after each update; 1.0 copies the weights.
        noise_type: ``"gaussian"`` (independent per step) or ``"ornstein-uhlenbeck"``
            (temporally correlated, reset at each episode end).
        noise_std: standard deviation of the exploration noise at the start, in units
            of the action half-range (0.1 on a ``[-2, 2]`` box is 0.2).
        noise_std_final: the standard deviation reached at the end of the annealing;
            ``None`` keeps ``noise_std`` constant.
        exploration_fraction: fraction of the run's horizon (``fit``'s ``total_steps``) over which the noise anneals.
        ou_theta: mean-reversion rate of the Ornstein-Uhlenbeck noise per step.
        max_grad_norm: clip each network's gradients to this global norm (``None``: no clipping).
        seed: random seed.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("Pendulum-v1")
        >>> agent = DDPGAgent(env.observation_space, env.action_space, learning_starts=500)
        >>> history = agent.fit(env, steps=1_000, verbose=0)
        >>> action = agent.act(env.reset(seed=0)[0])
        >>> bool(env.action_space.contains(action))
        True

    References:
        Lillicrap et al., "Continuous control with deep reinforcement learning", ICLR 2016.
        Silver et al., "Deterministic Policy Gradient Algorithms", ICML 2014.
    """

    _saved_state = ("current_noise_std", "_steps_since_train")

    hyperparameter_rules = {**off_policy.RULES, **off_policy.NOISE_RULES}

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
        buffer_size: int = 200_000,
        batch_size: int = 256,
        learning_starts: int = 1_000,
        train_freq: int = 1,
        gradient_steps: int = 1,
        tau: float = 0.005,
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

        obs_shape, obs_dtype = obs = off_policy.observation_signature(self)
        self.actor = off_policy.deterministic_actor(self, actor_network)
        self.critic = self._network(
            "critic_network",
            "mlp" if critic_network is None else critic_network,
            lambda: networks.state_action_value(
                obs_shape, self.action_dim, self.critic_hidden_sizes, obs_dtype=obs_dtype, name="critic"
            ),
            inputs=[obs, ((self.action_dim,), "float32")],
            output_shape=(1,),
        )
        # Built before the first compiled step, with the online weights.
        self.target_actor = networks.target_copy(self.actor, "actor_target")
        self.target_critic = networks.target_copy(self.critic, "critic_target")
        self.actor_optimizer = keras.optimizers.Adam(actor_learning_rate, global_clipnorm=max_grad_norm)
        self.critic_optimizer = keras.optimizers.Adam(critic_learning_rate, global_clipnorm=max_grad_norm)
        self.actor_optimizer.build(self.actor.trainable_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)

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

    def td_target(self, reward, next_obs, terminated):
        """The critic's Bellman target ``y = r + gamma (1 - terminated) Q'(s', pi'(s'))``, without gradient."""
        reward = ops.cast(reward, "float32")
        terminated = ops.cast(terminated, "float32")
        next_obs = ops.convert_to_tensor(next_obs)
        next_action = self.target_actor(next_obs)
        q_next = self.target_critic([next_obs, next_action])[:, 0]
        return ops.stop_gradient(reward + self.gamma * (1.0 - terminated) * q_next)

    def frozen_critic(self, obs, action):
        """``Q(s, a)`` with the critic's weights behind ``stop_gradient``: gradients reach ``action`` only."""
        return off_policy.frozen_call(self.critic, [obs, action])[:, 0]

    def compute_rl_loss(self, batch):
        obs = ops.convert_to_tensor(batch["obs"])
        # Critic: regress Q(s, a) on the target; a is the stored normalized action.
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"])
        q = self.critic([obs, ops.cast(batch["action"], "float32")], training=True)[:, 0]
        critic_loss = ops.mean(ops.square(q - y))
        # Actor: ascend Q(s, pi(s)); the frozen critic keeps this term's gradient off the critic.
        actor_loss = -ops.mean(self.frozen_critic(obs, self.actor(obs, training=True)))
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": ops.mean(q)}
        return critic_loss + actor_loss, metrics

    def update_targets(self, tau: float):
        networks.update_target(self.target_actor, self.actor, tau)
        networks.update_target(self.target_critic, self.critic, tau)

    def optimizer_groups(self):
        return [
            (self.critic_optimizer, self.critic.trainable_variables),
            (self.actor_optimizer, self.actor.trainable_variables),
        ]

    # -- host side (NumPy): shared with TD3 and SAC (agents/off_policy.py) -----------------
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

    def _update_once(self):
        yield self.train_step(self.buffer.sample(self.batch_size))
        self.runtime.update_targets(self.tau)

    def _log_values(self):
        return {"noise_std": float(self.current_noise_std)}
