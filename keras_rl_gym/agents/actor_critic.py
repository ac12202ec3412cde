"""Advantage Actor-Critic: the tutorial's one-step actor-critic, and n-step A2C over vector envs."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym.agents.base import masked_mean
from keras_rl_gym.agents.policy import OnPolicyAgent
from keras_rl_gym.rollouts import pad_rows, standardize


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class ActorCriticAgent(OnPolicyAgent):
    """Actor-Critic with a learned state value as critic.

    With ``n_steps=1`` on one env it is the tutorial's one-step actor-critic: the
    critic regresses ``V(s)`` on the TD target ``r + gamma * V(s')`` and the actor
    follows ``-log pi(a|s) * delta`` with the TD error
    ``delta = r + gamma * V(s') - V(s)`` as its (stopped-gradient) weight. With
    ``n_steps > 1`` over a vector env it is synchronous A2C (Mnih et al., 2016):
    one update per rollout of ``n_steps x num_envs`` transitions, with n-step (or
    GAE, ``gae_lambda < 1``) advantages.

        L = -mean(log pi(a|s) * A) + value_coef * mean((V(s) - R)^2) - entropy_coef * mean(H)

    is one loss over actor and critic, minimized by one optimizer with one joint
    gradient-norm clip (``max_grad_norm``), as in SB3 and CleanRL.

    Args:
        observation_space: a ``Box`` space.
        action_space: ``Discrete`` or 1-D ``Box``.
        n_steps: vector steps per update.
        gae_lambda: 1.0 gives n-step returns.
        normalize_advantage: standardize the advantages of each update.
        learning_rate: the actor's learning rate (the tutorial's ``lr_a``).
        value_learning_rate: the critic's (``lr_c``): a second Adam for the critic's variables, same loss.
        entropy_coef: weight of the entropy bonus.
        **kwargs: see :class:`~keras_rl_gym.agents.policy.PolicyAgent`.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> agent = ActorCriticAgent(env.observation_space, env.action_space, n_steps=1)
        >>> history = agent.fit(env, steps=500, verbose=0)

    References:
        Sutton and Barto, "Reinforcement Learning: An Introduction", 2nd ed., section 13.5.
        Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016.
    """

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        n_steps: int = 5,
        gae_lambda: float = 1.0,
        normalize_advantage: bool = False,
        learning_rate: float | LearningRateSchedule = 7e-4,
        entropy_coef: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            observation_space,
            action_space,
            n_steps=n_steps,
            gae_lambda=gae_lambda,
            learning_rate=learning_rate,
            entropy_coef=entropy_coef,
            use_critic=True,
            **kwargs,
        )
        self._set_hyperparameters(normalize_advantage=normalize_advantage)

    def compute_rl_loss(self, batch):
        mask = batch["mask"]
        log_prob, entropy = self.log_prob_entropy(batch["obs"], batch["action"])
        advantage = ops.stop_gradient(batch["advantage"])
        policy_loss = -masked_mean(log_prob * advantage, mask)
        value_loss = masked_mean(ops.square(self.value(batch["obs"], training=True) - batch["returns"]), mask)
        entropy = masked_mean(entropy, mask)
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def _learn(self, batch):
        size = len(batch["obs"])
        if self.normalize_advantage and size > 1:
            batch["advantage"] = standardize(batch["advantage"])
        # Autoreset steps are dropped, so a rollout holds a varying number of
        # transitions: pad to a fixed size with mask 0 (one compiled shape).
        padded = self.n_steps * self.rollout.num_envs
        batch = {key: pad_rows(value, padded) for key, value in batch.items() if key != "log_prob"}
        batch["mask"] = pad_rows(np.ones(size, np.float32), padded)
        yield self.train_step(batch)
