"""Proximal Policy Optimization with the clipped surrogate objective and GAE."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym.agents.base import POSITIVE
from keras_rl_gym.agents.policy import OnPolicyAgent
from keras_rl_gym.rollouts import standardize


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class PPOAgent(OnPolicyAgent):
    """PPO-Clip (Schulman et al., 2017) over N envs stepped in parallel.

    Each iteration collects ``n_steps`` from every env of a Gymnasium vector env
    (``gymnasium.make_vec(..., vectorization_mode="sync" | "async")``: the
    tutorial's rollout workers), computes GAE(lambda) advantages, then runs
    ``n_epochs`` passes of minibatch updates on

        L = -mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A))
            + value_coef * mean((V(s) - R)^2) - entropy_coef * mean(H[pi(.|s)])

    where ``rho = pi(a|s) / pi_old(a|s)``. The advantages ``A`` and returns ``R``
    come from the host as data, so no gradient flows through them. One optimizer
    minimizes ``L`` over policy and value networks, with one joint gradient-norm
    clip (``max_grad_norm``), as in SB3 and CleanRL. A time-limit
    truncation bootstraps from the critic's value of the last observation.

    Args:
        observation_space: a ``Box`` space.
        action_space: ``Discrete`` or 1-D ``Box``.
        n_steps: vector steps per rollout (per env).
        batch_size: transitions per minibatch.
        n_epochs: passes over each rollout.
        clip_range: the ratio clip ``eps``.
        clip_range_final: if set, ``eps`` decays linearly to this over the run's horizon (``fit``'s ``total_steps``).
        gae_lambda: GAE's lambda.
        normalize_advantage: standardize advantages within each minibatch.
        learning_rate, value_learning_rate, learning_rate_decay, max_grad_norm,
        entropy_coef, value_coef, hidden_sizes, value_hidden_sizes, network,
        log_std_init, gamma, seed: see :class:`~keras_rl_gym.agents.policy.PolicyAgent`.

    Example:
        >>> import gymnasium as gym
        >>> envs = gym.make_vec("CartPole-v1", num_envs=4)
        >>> agent = PPOAgent(envs.single_observation_space, envs.single_action_space, n_steps=32)
        >>> history = agent.fit(envs, steps=1_024, verbose=0)

    References:
        Schulman et al., "Proximal Policy Optimization Algorithms", 2017.
        Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage Estimation", ICLR 2016.
    """

    _saved_state = ("current_clip_range",)

    hyperparameter_rules = {
        "batch_size": POSITIVE,
        "n_epochs": POSITIVE,
        "clip_range": POSITIVE,
        "clip_range_final": POSITIVE,
    }

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        n_steps: int = 128,
        batch_size: int = 64,
        n_epochs: int = 10,
        clip_range: float = 0.2,
        clip_range_final: float | None = None,
        gae_lambda: float = 0.95,
        normalize_advantage: bool = True,
        learning_rate: float | LearningRateSchedule = 3e-4,
        max_grad_norm: float | None = 0.5,
        **kwargs,
    ):
        super().__init__(
            observation_space,
            action_space,
            n_steps=n_steps,
            gae_lambda=gae_lambda,
            learning_rate=learning_rate,
            max_grad_norm=max_grad_norm,
            use_critic=True,
            **kwargs,
        )
        self._set_hyperparameters(locals())
        self.current_clip_range = self.clip_range

    def compute_rl_loss(self, batch):
        log_prob, entropy = self.log_prob_entropy(batch["obs"], batch["action"])
        advantage = ops.stop_gradient(batch["advantage"])
        clip = batch["clip_range"]
        log_ratio = log_prob - batch["log_prob"]
        ratio = ops.exp(log_ratio)
        surrogate = ops.minimum(ratio * advantage, ops.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage)
        policy_loss = -ops.mean(surrogate)
        value_loss = ops.mean(ops.square(self.value(batch["obs"], training=True) - batch["returns"]))
        entropy = ops.mean(entropy)
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        return loss, {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            # Schulman's low-variance estimator of KL(pi_old || pi).
            "approx_kl": ops.mean((ratio - 1.0) - log_ratio),
            "clip_fraction": ops.mean(ops.cast(ops.abs(ratio - 1.0) > clip, "float32")),
        }

    def _learn(self, batch):
        if self.clip_range_final is not None:
            # The clip range decays linearly over the run's horizon.
            progress = min(self.env_steps / self.total_steps, 1.0)
            self.current_clip_range = self.clip_range + progress * (self.clip_range_final - self.clip_range)
        size = len(batch["obs"])
        n_batches = -(-size // self.batch_size)
        # Every minibatch has exactly batch_size rows (one compiled shape): the last
        # one of an epoch is topped up with random rows of this rollout.
        index = np.stack(
            [
                np.concatenate(
                    [self.rng.permutation(size), self.rng.integers(0, size, n_batches * self.batch_size - size)]
                ).reshape(n_batches, self.batch_size)
                for _ in range(self.n_epochs)
            ]
        ).reshape(self.n_epochs * n_batches, self.batch_size)
        # All epochs' minibatches, stacked: the runtime runs them as one compiled round.
        minibatches = {key: value[index] for key, value in batch.items()}
        if self.normalize_advantage:
            minibatches["advantage"] = standardize(minibatches["advantage"], axis=-1)
        minibatches["clip_range"] = np.full(len(index), self.current_clip_range, np.float32)
        yield from self._train_round(minibatches)

    def _log_values(self):
        return {**super()._log_values(), "clip_range": float(self.current_clip_range)}
