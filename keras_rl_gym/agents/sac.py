"""Soft Actor-Critic: a tanh-squashed Gaussian policy, twin soft Q critics, a learned temperature."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym import distributions, networks
from keras_rl_gym.agents import off_policy
from keras_rl_gym.agents.base import POSITIVE, POSITIVE_RATE, Agent

# The policy's log standard deviation is clipped to this range (as SB3 and CleanRL do).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

AUTO_OR_POSITIVE = (lambda v: v == "auto" if isinstance(v, str) else v > 0, '"auto" or > 0')
AUTO_OR_NUMBER = (lambda v: v == "auto" if isinstance(v, str) else isinstance(v, numbers.Real), '"auto" or a number')


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class SACAgent(Agent):
    """Soft Actor-Critic (Haarnoja et al., 2018), twin-Q with automatic entropy tuning, for ``Box`` actions.

    The policy outputs the mean ``mu(s)`` and log standard deviation
    ``log sigma(s)`` (clipped to [-20, 2]) of a Gaussian ``u``; the normalized
    action is ``a = tanh(u)``, scaled to the bounds, with
    ``log pi(a|s) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2)``. One update
    minimizes, on a replay minibatch, the sum of three losses, each reaching
    its own variables only:

    * critics: ``mean((Q1(s, a) - y)^2) + mean((Q2(s, a) - y)^2)`` with

          y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s')),   a' ~ pi(.|s');

    * actor: ``mean(alpha * log pi(a|s) - min_i Q_i(s, a))``, ``a ~ pi(.|s)`` reparameterized
      through frozen critics;
    * temperature: ``-mean(log_alpha * (log pi(a|s) + target_entropy))`` with the bracket
      stopped, which raises ``alpha`` while the entropy is below ``-target_entropy``.

    All three read ``alpha`` as it was before the step. The reparameterization
    noise ``eps`` (``u = mu + sigma * eps``) is drawn on the host and sent in the
    batch (``noise``, ``next_noise``), so the compiled update is deterministic and
    the same on every backend; acting samples on the host likewise. The critic
    targets move by ``tau`` after every update; the first ``learning_starts`` env
    steps take uniformly random actions. ``evaluate`` and ``act`` use the mean action ``tanh(mu)``.

    Args:
        observation_space: a ``Box`` space of vectors.
        action_space: a ``Box`` space with finite bounds, of shape ``(n,)``.
        actor_hidden_sizes: widths of the policy's dense layers.
        critic_hidden_sizes: widths of each critic's dense layers.
        actor_network: your own policy: a ``keras.Model`` (or a function
            ``(observation_space, action_space) -> keras.Model``) from observations to
            ``(batch, 2 n)``: the means, then the log standard deviations, before the tanh.
        critic_network: your own critic ``[obs, action] -> (batch, 1)``; the second is a clone with fresh weights.
        gamma: discount factor.
        actor_learning_rate: Adam learning rate of the policy.
        critic_learning_rate: Adam learning rate of both critics.
        alpha: ``"auto"`` learns the temperature; a float fixes it.
        initial_alpha: the learned temperature's starting value.
        alpha_learning_rate: Adam learning rate of ``log alpha``.
        target_entropy: the entropy the temperature aims for; ``"auto"`` is ``-n``.
        buffer_size: replay capacity in transitions.
        batch_size: transitions per update.
        learning_starts: env steps of uniformly random actions, with no updates, at the start.
        train_freq: env steps between rounds of updates.
        gradient_steps: updates per round.
        tau: soft target update rate after each update.
        max_grad_norm: clip each optimizer's gradients to this global norm (``None``: no clipping).
        seed: random seed.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("Pendulum-v1")
        >>> agent = SACAgent(env.observation_space, env.action_space, learning_starts=500)
        >>> history = agent.fit(env, steps=1_000, verbose=0)
        >>> bool(env.action_space.contains(agent.act(env.reset(seed=0)[0])))
        True

    References:
        Haarnoja et al., "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement
        Learning with a Stochastic Actor", ICML 2018.
        Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905, 2018.
    """

    _saved_state = ("_steps_since_train",)

    hyperparameter_rules = {
        **off_policy.RULES,
        "alpha": AUTO_OR_POSITIVE,
        "initial_alpha": POSITIVE,
        "alpha_learning_rate": POSITIVE_RATE,
        "target_entropy": AUTO_OR_NUMBER,
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
        actor_learning_rate: float | LearningRateSchedule = 3e-4,
        critic_learning_rate: float | LearningRateSchedule = 3e-4,
        alpha: float | str = "auto",
        initial_alpha: float = 1.0,
        alpha_learning_rate: float | LearningRateSchedule = 3e-4,
        target_entropy: float | str = "auto",
        buffer_size: int = 1_000_000,
        batch_size: int = 256,
        learning_starts: int = 100,
        train_freq: int = 1,
        gradient_steps: int = 1,
        tau: float = 0.005,
        max_grad_norm: float | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(observation_space, action_space, gamma=gamma, seed=seed, **kwargs)
        self._set_hyperparameters(locals())
        off_policy.check_spaces(self)
        obs_shape, obs_dtype = obs = off_policy.observation_signature(self)
        n = self.action_dim
        self.actor = self._network(
            "actor_network",
            "mlp" if actor_network is None else actor_network,
            lambda: networks.mlp(obs_shape, self.actor_hidden_sizes, 2 * n, obs_dtype=obs_dtype, name="actor"),
            inputs=[obs],
            output_shape=(2 * n,),
        )
        self.critic1, self.critic2 = off_policy.twin_critics(self, critic_network)
        # Built before the first compiled step, with the online weights.
        self.target_critic1 = networks.target_copy(self.critic1, "critic1_target")
        self.target_critic2 = networks.target_copy(self.critic2, "critic2_target")
        self.actor_optimizer = keras.optimizers.Adam(actor_learning_rate, global_clipnorm=max_grad_norm)
        self.critic_optimizer = keras.optimizers.Adam(critic_learning_rate, global_clipnorm=max_grad_norm)
        self.actor_optimizer.build(self.actor.trainable_variables)
        self.critic_optimizer.build(self._critic_variables())
        self.learn_alpha = self.alpha == "auto"
        self.target_entropy_value = -float(n) if self.target_entropy == "auto" else float(self.target_entropy)
        if self.learn_alpha:
            # log alpha, not alpha, is learned: alpha = exp(log alpha) stays positive.
            self.log_alpha = self.add_weight(
                name="log_alpha",
                shape=(),
                initializer=keras.initializers.Constant(math.log(self.initial_alpha)),
                trainable=True,
            )
            self.alpha_optimizer = keras.optimizers.Adam(alpha_learning_rate, global_clipnorm=max_grad_norm)
            self.alpha_optimizer.build([self.log_alpha])

        self.buffer = None
        self._steps_since_train = 0  # env steps since the last round of updates
        self.built = True

    # -- graph (keras.ops) ---------------------------------------------------------
    def policy(self, obs, training=False):
        """``(mean, log_std)`` of the pre-tanh Gaussian, each ``(batch, n)``, ``log_std`` clipped to [-20, 2]."""
        out = self.actor(obs, training=training)
        n = self.action_dim
        return out[:, :n], ops.clip(out[:, n:], LOG_STD_MIN, LOG_STD_MAX)

    def call(self, obs, training=False):
        """The mean action ``tanh(mu(s))``, scaled to the action bounds: shape ``(batch, n)``."""
        mean, _ = self.policy(self.normalized(obs), training=training)
        return off_policy.scale_graph(self, ops.tanh(mean))

    def _greedy_graph(self, obs):
        mean, _ = self.policy(obs)
        return self._box_actions_graph(off_policy.scale_graph(self, ops.tanh(mean)))

    def act_graph(self, obs):
        # (batch, 2 n): mean and clipped log_std. The host samples from them (or takes tanh(mean)).
        return ops.concatenate(self.policy(obs), axis=-1)

    def sample_action(self, obs, noise, training=False):
        """``(a, log pi(a|s))`` with ``a = tanh(mu + sigma * noise)``: reparameterized, differentiable in the policy."""
        mean, log_std = self.policy(obs, training=training)
        u = mean + ops.exp(log_std) * ops.cast(noise, "float32")
        return ops.tanh(u), distributions.squashed_gaussian_log_prob(mean, log_std, u)

    def alpha_value(self):
        """The temperature ``alpha``: ``exp(log_alpha)`` when learned, else the fixed float."""
        return ops.exp(self.log_alpha) if self.learn_alpha else ops.convert_to_tensor(float(self.alpha))

    def td_target(self, reward, next_obs, terminated, next_noise):
        """``y = r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``."""
        reward = ops.cast(reward, "float32")
        terminated = ops.cast(terminated, "float32")
        next_obs = ops.convert_to_tensor(next_obs)
        next_action, next_log_pi = self.sample_action(next_obs, next_noise)
        q1 = self.target_critic1([next_obs, next_action])[:, 0]
        q2 = self.target_critic2([next_obs, next_action])[:, 0]
        soft_value = ops.minimum(q1, q2) - self.alpha_value() * next_log_pi
        return ops.stop_gradient(reward + self.gamma * (1.0 - terminated) * soft_value)

    def compute_rl_loss(self, batch):
        obs = ops.convert_to_tensor(batch["obs"])
        action = ops.cast(batch["action"], "float32")
        alpha = ops.stop_gradient(self.alpha_value())  # the temperature before this step, a constant here
        # Critics: both regress on the one soft target.
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"], batch["next_noise"])
        q1 = self.critic1([obs, action], training=True)[:, 0]
        q2 = self.critic2([obs, action], training=True)[:, 0]
        critic_loss = ops.mean(ops.square(q1 - y)) + ops.mean(ops.square(q2 - y))
        # Actor: mean(alpha log pi(a|s) - min_i Q_i(s, a)), a = tanh(mu + sigma eps), through frozen critics.
        new_action, log_pi = self.sample_action(obs, batch["noise"], training=True)
        q_new = ops.minimum(
            off_policy.frozen_call(self.critic1, [obs, new_action])[:, 0],
            off_policy.frozen_call(self.critic2, [obs, new_action])[:, 0],
        )
        actor_loss = ops.mean(alpha * log_pi - q_new)
        loss = critic_loss + actor_loss
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": ops.mean(q1)}
        metrics["entropy"] = -ops.mean(log_pi)
        if self.learn_alpha:
            # Temperature: -mean(log_alpha (log pi + target_entropy)), the bracket a constant.
            alpha_loss = -ops.mean(self.log_alpha * ops.stop_gradient(log_pi + self.target_entropy_value))
            metrics["alpha_loss"] = alpha_loss
            loss = loss + alpha_loss
        return loss, metrics

    def update_targets(self, tau: float):
        networks.update_target(self.target_critic1, self.critic1, tau)
        networks.update_target(self.target_critic2, self.critic2, tau)

    def _critic_variables(self):
        return [*self.critic1.trainable_variables, *self.critic2.trainable_variables]

    def optimizer_groups(self):
        groups = [
            (self.critic_optimizer, self._critic_variables()),
            (self.actor_optimizer, self.actor.trainable_variables),
        ]
        if self.learn_alpha:
            groups.append((self.alpha_optimizer, [self.log_alpha]))
        return groups

    # -- host side (NumPy): shared with DDPG and TD3 (agents/off_policy.py) -----------------
    _scale = off_policy.scale
    _normalize = off_policy.normalize
    q_values = off_policy.q_values
    _warmup_actions = off_policy.warmup_actions
    _observe = off_policy.observe
    _train = off_policy.train

    def _split(self, out):
        out = np.asarray(out)
        return out[:, : self.action_dim], out[:, self.action_dim :]

    def _greedy(self, obs):
        mean, _ = self._split(self.runtime.act(obs))
        return self._scale(np.tanh(mean))

    def _explore(self, obs, step):
        if step < self.learning_starts:
            return self._warmup_actions(len(obs))
        mean, log_std = self._split(self.runtime.act(obs))
        action, _ = distributions.sample_squashed_gaussian(self.rng, mean, log_std)
        return self._scale(action)

    def _on_fit_begin(self, num_envs, steps):
        off_policy.make_replay(self)

    def sample_batch(self) -> dict:
        """A replay minibatch with this update's reparameterization noise, as ``train_step`` takes it."""
        batch = self.buffer.sample(self.batch_size)
        shape = (len(batch["reward"]), self.action_dim)
        noise = self.rng.standard_normal((2, *shape)).astype(np.float32)
        return dict(batch, noise=noise[0], next_noise=noise[1])

    def _update_once(self):
        yield self.train_step(self.sample_batch())
        self.runtime.update_targets(self.tau)

    def _log_values(self):
        # fit syncs held state into the Keras variables before it logs.
        return {"alpha": float(ops.convert_to_numpy(self.alpha_value()))}
