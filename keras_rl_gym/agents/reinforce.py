"""REINFORCE: Monte-Carlo policy gradient, with an optional learned baseline."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym.agents.base import POSITIVE, masked_mean
from keras_rl_gym.agents.policy import PolicyAgent
from keras_rl_gym.rollouts import bootstrap_truncated, discounted_returns, pad_rows, padded_size, standardize


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class ReinforceAgent(PolicyAgent):
    """REINFORCE (Williams, 1992): learns from whole episodes.

    When an episode ends, its returns ``G_t = r_t + gamma * G_{t+1}`` are computed
    backwards; every ``episodes_per_update`` episodes one gradient step follows

        L = -mean(log pi(a_t|s_t) * stop_gradient(G_t - b(s_t)))

    with ``b = 0``, or a learned value ``V(s)`` (``baseline=True``) regressed on
    ``G_t`` with an MSE loss, added as ``value_coef * mean((V(s_t) - G_t)^2)`` to
    the one loss that one optimizer minimizes over policy and baseline. An episode
    cut by a time limit is completed with the baseline's value of its last state
    (without a baseline, its return stops there).

    Args:
        observation_space: a ``Box`` space.
        action_space: ``Discrete`` or 1-D ``Box``.
        baseline: learn a state-value baseline.
        normalize_returns: standardize the returns of each update.
        episodes_per_update: episodes per gradient step.
        learning_rate: Adam learning rate (the tutorial's ``lr``).
        learning_rate_decay: multiply it by this every 1000 updates (the tutorial's ``lr_decay``).
        **kwargs: see :class:`~keras_rl_gym.agents.policy.PolicyAgent`.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> agent = ReinforceAgent(env.observation_space, env.action_space, baseline=True)
        >>> history = agent.fit(env, steps=1_000, verbose=0)

    References:
        Williams, "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning", Machine Learning 1992.
    """

    _host_attributes = PolicyAgent._host_attributes | {"_episodes", "_finished"}

    hyperparameter_rules = {"episodes_per_update": POSITIVE}

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        baseline: bool = False,
        normalize_returns: bool = False,
        episodes_per_update: int = 1,
        learning_rate: float | LearningRateSchedule = 1e-3,
        **kwargs,
    ):
        super().__init__(observation_space, action_space, use_critic=baseline, learning_rate=learning_rate, **kwargs)
        self._set_hyperparameters(locals())

    def compute_rl_loss(self, batch):
        mask, returns = batch["mask"], batch["returns"]
        log_prob, entropy = self.log_prob_entropy(batch["obs"], batch["action"])
        metrics = {}
        if self.baseline:
            value = self.value(batch["obs"], training=True)
            weight = returns - value
            value_loss = masked_mean(ops.square(value - returns), mask)
            metrics["value_loss"] = value_loss
        else:
            weight, value_loss = returns, 0.0
        policy_loss = -masked_mean(log_prob * ops.stop_gradient(weight), mask)
        entropy = masked_mean(entropy, mask)
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        return loss, {"policy_loss": policy_loss, "entropy": entropy, **metrics}

    def _on_fit_begin(self, num_envs, steps):
        self._episodes = [{"obs": [], "action": [], "reward": []} for _ in range(num_envs)]
        self._finished = []

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
        final_values = self._final_values(next_obs, truncated, terminated)
        reward = bootstrap_truncated(reward, terminated, truncated, final_values, self.gamma)
        done = np.asarray(terminated) | np.asarray(truncated)
        for i in np.flatnonzero(valid):
            episode = self._episodes[i]
            episode["obs"].append(obs[i])
            episode["action"].append(self._stored_actions[i])
            episode["reward"].append(reward[i])
            if done[i]:
                rewards = np.asarray(episode["reward"], np.float32)
                dones = np.zeros(len(rewards), bool)
                dones[-1] = True
                self._finished.append(
                    {
                        "obs": np.asarray(episode["obs"]),
                        "action": np.asarray(episode["action"]),
                        "returns": discounted_returns(rewards, dones, 0.0, self.gamma),
                    }
                )
                self._episodes[i] = {"obs": [], "action": [], "reward": []}

    def _train(self, step, new_steps):
        if len(self._finished) < self.episodes_per_update:
            return
        batch = {key: np.concatenate([e[key] for e in self._finished]) for key in ("obs", "action", "returns")}
        self._finished = []
        if self.normalize_returns and len(batch["returns"]) > 1:
            batch["returns"] = standardize(batch["returns"])
        # Episodes vary in length: pad to a power of two with mask 0, so the
        # update compiles for a handful of shapes.
        size = len(batch["obs"])
        padded = padded_size(size)
        batch = {key: pad_rows(value, padded) for key, value in batch.items()}
        batch["action"] = batch["action"].astype(self._action_field()[1])
        batch["mask"] = pad_rows(np.ones(size, np.float32), padded)
        yield self.train_step(batch)
