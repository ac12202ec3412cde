"""What every policy-gradient agent shares: a stochastic policy, an optional critic, rollouts.

The policy is categorical over a ``Discrete`` action space (the network outputs
logits) or a diagonal Gaussian over a ``Box`` (the network outputs the mean; the
log standard deviation is a state-independent trainable vector). Both come from
:mod:`keras_rl_gym.distributions`: log-probabilities and entropies in ``keras.ops``
for the losses, and host samplers in NumPy, fed the logits or mean the compiled act
returns, so the compiled graph holds no random state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from gymnasium import spaces
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym import networks, schedules
from keras_rl_gym.agents.base import (
    ALL_POSITIVE,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_RATE,
    Agent,
    between,
    network_kind,
)
from keras_rl_gym.distributions import (
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    sample_categorical,
    sample_gaussian,
)
from keras_rl_gym.rollouts import RolloutBuffer, bootstrap_truncated, gae

if hasattr(keras.optimizers, "MultiOptimizer"):

    class _JointClipMultiOptimizer(keras.optimizers.MultiOptimizer):
        """A MultiOptimizer that first clips all gradients together to one global norm.

        Its inner optimizers do not clip: ``g <- g * min(1, max_norm / ||g||)`` with
        ``||g||`` the norm over every variable, actor and critic alike.
        """

        def __init__(self, optimizer_map, global_clipnorm=None, **kwargs):
            super().__init__(optimizer_map, **kwargs)
            self.global_clipnorm = global_clipnorm

        def apply(self, grads, trainable_variables=None):
            super().apply(self._clip_gradients(list(grads)), trainable_variables)


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class PolicyAgent(Agent):
    """Base of the policy-gradient agents: policy and value networks, sampling, greedy actions.

    Args:
        observation_space: a ``Box`` space (vectors, or HxWxC images with ``network="conv"``).
        action_space: ``Discrete`` (categorical policy) or a 1-D ``Box`` (Gaussian policy).
        hidden_sizes: widths of the policy network's hidden layers.
        value_hidden_sizes: widths of the value network's (defaults to ``hidden_sizes``).
        network: ``"dense"`` or ``"conv"`` (for both networks), or your own policy network: a
            ``keras.Model`` (or a function ``(observation_space, action_space) -> keras.Model``)
            from a batch of observations to ``(batch, n)`` logits (Discrete) or mean actions (Box).
            It is checked on the spaces, trained, and saved and loaded with the agent.
        value_network: your own critic, ``(batch, *obs_shape) -> (batch, 1)``, likewise; by
            default an MLP of ``value_hidden_sizes``.
        use_critic: build a value network (a baseline or critic).
        learning_rate: the policy's Adam learning rate.
        value_learning_rate: the critic's (defaults to ``learning_rate``); when it differs, a
            ``keras.optimizers.MultiOptimizer`` gives the critic's variables their own Adam.
        learning_rate_decay: multiply both rates by this every 1000 updates.
        max_grad_norm: clip the gradients of all variables, actor and critic together, to this global norm.
        entropy_coef: weight of the entropy bonus.
        value_coef: weight of the critic's loss in the one joint loss. With separate actor and critic
            networks and Adam (whose step is invariant to the scale of a gradient), it changes the
            update through the joint ``max_grad_norm`` clip: without a clip it has next to no effect.
        log_std_init: initial log standard deviation of a Gaussian policy.
        gamma: discount factor.
        seed: random seed.
    """

    hyperparameter_rules = {
        "hidden_sizes": ALL_POSITIVE,
        "value_hidden_sizes": ALL_POSITIVE,
        "network": network_kind("dense", "conv"),
        "learning_rate": POSITIVE_RATE,
        "value_learning_rate": POSITIVE_RATE,
        "learning_rate_decay": between(0.0, 1.0, open_low=True),
        "max_grad_norm": POSITIVE,
        "entropy_coef": NON_NEGATIVE,
        "value_coef": NON_NEGATIVE,
    }
    _derived_hyperparameters = ("use_critic",)  # each algorithm decides whether it has a critic
    on_policy = True
    _acting_outputs = ("_stored_actions", "_log_probs", "_values")

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        value_hidden_sizes: Sequence[int] | None = None,
        network: str | keras.Model | Callable = "dense",
        value_network: keras.Model | Callable | None = None,
        use_critic: bool = True,
        learning_rate: float | LearningRateSchedule = 3e-4,
        value_learning_rate: float | LearningRateSchedule | None = None,
        learning_rate_decay: float | None = None,
        max_grad_norm: float | None = None,
        entropy_coef: float = 0.0,
        value_coef: float = 0.5,
        log_std_init: float = 0.0,
        gamma: float = 0.99,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(observation_space, action_space, gamma=gamma, seed=seed, **kwargs)
        self._set_hyperparameters(locals())
        name = type(self).__name__
        if not isinstance(self.observation_space, spaces.Box):
            raise TypeError(
                f"{name} needs a Box observation space, got {self.observation_space}. "
                "Wrap the env so that it emits vectors or images."
            )
        if isinstance(self.action_space, spaces.Discrete):
            self.continuous = False
            out_size = int(self.action_space.n)
        elif isinstance(self.action_space, spaces.Box) and len(self.action_space.shape) == 1:
            self.continuous = True
            out_size = int(self.action_space.shape[0])
        else:
            raise TypeError(
                f"{name} needs a Discrete or a 1-D Box action space, got {self.action_space}. "
                "Flatten multi-dimensional Box actions with gymnasium.wrappers.FlattenAction (or similar)."
            )
        obs_shape = self.observation_space.shape
        if network == "dense" and len(obs_shape) == 3:
            raise ValueError(f"{name}: image observations {obs_shape} need network='conv', not 'dense'.")
        if network == "conv":
            networks.check_conv_shape(obs_shape, name)
        if value_network is not None and not self.use_critic:
            raise ValueError(f"{name}: value_network is given, but this agent has no critic (use_critic / baseline).")
        self.value_hidden_sizes = self.value_hidden_sizes or self.hidden_sizes

        obs_dtype = str(self.observation_space.dtype)
        inputs = [(obs_shape, obs_dtype)]
        # A named kind of network for both, or the user's own (a model or a function of the spaces).
        kind = network if isinstance(network, str) else "conv" if len(obs_shape) == 3 else "dense"
        self.policy_network = self._network(
            "network",
            network,
            lambda: networks.mlp(
                obs_shape, self.hidden_sizes, out_size, obs_dtype=obs_dtype, network=kind, name="policy"
            ),
            inputs=inputs,
            output_shape=(out_size,),
        )
        if self.continuous:
            self.log_std = self.add_weight(
                shape=(out_size,), initializer=keras.initializers.Constant(self.log_std_init), name="log_std"
            )
            self._low = self.action_space.low.astype(np.float32)
            self._high = self.action_space.high.astype(np.float32)
        self.value_network = None
        if self.use_critic:
            self.value_network = self._network(
                "value_network",
                kind if value_network is None else value_network,
                lambda: networks.mlp(
                    obs_shape, self.value_hidden_sizes, 1, obs_dtype=obs_dtype, network=kind, name="value"
                ),
                inputs=inputs,
                output_shape=(1,),
            )
        # One loss L = policy + value_coef * value - entropy_coef * entropy over
        # every trainable variable, one optimizer, one clip of the global norm
        # ||(g_actor, g_critic)||, as SB3 and CleanRL do. With an Adam per network,
        # value_coef would be undone by Adam's scale invariance (c * g gives the
        # same step as g), and each network would be clipped on its own.
        self.lr_schedule = schedules.learning_rate(learning_rate, learning_rate_decay)
        value_lr, self.value_optimizer = value_learning_rate, None
        if self.value_network is None or value_lr is None or value_lr == learning_rate:
            self.optimizer = keras.optimizers.Adam(self.lr_schedule, global_clipnorm=max_grad_norm)
            actor = critic = None
        else:
            # The tutorial's separate lr_a and lr_c, still on the one loss: the critic's
            # variables go to an Adam of their own, after the joint clip.
            actor = keras.optimizers.Adam(self.lr_schedule)
            critic = keras.optimizers.Adam(schedules.learning_rate(value_lr, learning_rate_decay))
            critic_ids = {id(v) for v in self.value_network.trainable_variables}
            select = lambda v: critic if id(v) in critic_ids else actor  # noqa: E731
            if hasattr(keras.optimizers, "MultiOptimizer"):
                self.optimizer = _JointClipMultiOptimizer(select, global_clipnorm=max_grad_norm)
            else:
                # A Keras without MultiOptimizer: two optimizers, each clipping its own
                # network's gradients, so value_coef does not trade actor against critic.
                actor.global_clipnorm = critic.global_clipnorm = max_grad_norm
                self.optimizer, self.value_optimizer = actor, critic
                self.value_optimizer.build(self.value_network.trainable_variables)
        # The Adams whose rates are logged (a plain reference: Keras tracks them in self.optimizer).
        object.__setattr__(self, "_rate_optimizers", (actor or self.optimizer, critic))
        if self.value_optimizer is not None:
            self.optimizer.build([v for v in self.trainable_variables if id(v) not in critic_ids])
        else:
            self.optimizer.build(self.trainable_variables)
        self.built = True

    def optimizer_groups(self):
        if self.value_optimizer is not None:  # the fallback without MultiOptimizer (see __init__)
            critic = list(self.value_network.trainable_variables)
            actor = [v for v in self.trainable_variables if all(v is not c for c in critic)]
            return [(self.optimizer, actor), (self.value_optimizer, critic)]
        return [(self.optimizer, list(self.trainable_variables))]

    # -- graph (keras.ops) ---------------------------------------------------------
    def call(self, obs, training=False):
        """The policy's logits (Discrete) or mean action (Box)."""
        return self.policy_network(self.normalized(obs), training=training)

    def value(self, obs, training=False):
        """``V(s)``, shape ``(batch,)``; zeros without a critic."""
        if self.value_network is None:
            return ops.zeros((ops.shape(obs)[0],), "float32")
        return self.value_network(obs, training=training)[:, 0]

    def act_graph(self, obs):
        out = self.policy_network(obs)
        if self.continuous:
            return out, ops.broadcast_to(self.log_std, ops.shape(out)), self.value(obs)
        return out, self.value(obs)

    def _greedy_graph(self, obs):
        out = self.policy_network(obs)
        return self._box_actions_graph(out) if self.continuous else self._discrete_actions_graph(out)

    def log_prob_entropy(self, obs, action, training=True):
        """``(log pi(a|s), entropy of pi(.|s))`` under the current policy."""
        out = self.policy_network(obs, training=training)
        if self.continuous:
            log_std = ops.broadcast_to(self.log_std, ops.shape(out))
            return gaussian_log_prob(out, log_std, action), gaussian_entropy(log_std)
        return categorical_log_prob(out, action), categorical_entropy(out)

    # -- host side (NumPy) ------------------------------------------------------------
    def _greedy(self, obs):
        out = self.runtime.act(obs)
        if self.continuous:
            return np.clip(out[0], self._low, self._high)
        return np.argmax(out[0], axis=-1)

    def _sample(self, obs):
        """``(env_actions, stored_actions, log_probs, values)`` for a batch of observations.

        A Gaussian sample is stored unclipped (its log-probability is the one
        the loss recomputes) and clipped to the bounds for the env.
        """
        out = self.runtime.act(obs)
        values = out[-1]
        if self.continuous:
            actions, log_probs = sample_gaussian(self.rng, out[0], out[1])
            return np.clip(actions, self._low, self._high), actions, log_probs, values
        actions, log_probs = sample_categorical(self.rng, out[0])
        return actions, actions, log_probs, values

    def _explore(self, obs, step):
        env_actions, self._stored_actions, self._log_probs, self._values = self._sample(obs)
        return env_actions

    def _final_values(self, next_obs, truncated, terminated):
        """``V`` of the last observations of truncated episodes (zeros elsewhere)."""
        cut = np.asarray(truncated, bool) & ~np.asarray(terminated, bool)
        if not (cut.any() and self.use_critic):
            return np.zeros(len(cut), np.float32)
        # The whole batch goes through, so the compiled act sees one shape.
        return np.where(cut, self.runtime.act(next_obs)[-1], 0.0).astype(np.float32)

    def _action_field(self):
        if self.continuous:
            return self.action_space.shape, np.float32
        return (), np.int32

    def _log_values(self):
        # Read from the optimizers themselves: a rate a callback set is the one logged.
        actor, critic = self._rate_optimizers
        logs = {"learning_rate": schedules.optimizer_learning_rate(actor, self.updates)}
        if critic is not None:
            logs["value_learning_rate"] = schedules.optimizer_learning_rate(critic, self.updates)
        return logs


class OnPolicyAgent(PolicyAgent):
    """A policy agent that collects ``n_steps`` from each env, then learns from that rollout.

    Subclasses write ``compute_rl_loss`` and ``_learn(batch)`` (the updates on
    one rollout, flattened to ``(T * N, ...)`` arrays of real transitions).
    """

    hyperparameter_rules = {"n_steps": POSITIVE, "gae_lambda": between(0.0, 1.0)}

    def __init__(self, observation_space, action_space, *, n_steps: int = 5, gae_lambda: float = 1.0, **kwargs):
        super().__init__(observation_space, action_space, **kwargs)
        self._set_hyperparameters(n_steps=n_steps, gae_lambda=gae_lambda)
        self.rollout = None

    def _on_fit_begin(self, num_envs, steps):
        action_shape, action_dtype = self._action_field()
        self.rollout = RolloutBuffer(
            self.n_steps,
            num_envs,
            {
                "obs": (self.observation_space.shape, self.observation_space.dtype),
                "action": (action_shape, action_dtype),
                "log_prob": ((), np.float32),
                "value": ((), np.float32),
                "reward": ((), np.float32),
                "done": ((), bool),
                "valid": ((), bool),
            },
        )

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
        final_values = self._final_values(next_obs, truncated, terminated)
        self.rollout.add(
            obs=obs,
            action=self._stored_actions,
            log_prob=self._log_probs,
            value=self._values,
            reward=bootstrap_truncated(reward, terminated, truncated, final_values, self.gamma),
            done=np.asarray(terminated) | np.asarray(truncated),
            valid=valid,
        )
        self._next_obs = next_obs

    def _train(self, step, new_steps):
        if not self.rollout.full:
            return
        data = self.rollout.data
        if not data["valid"].any():
            # Only autoreset steps (n_steps=1 right after an episode end): nothing
            # to learn from. An all-masked batch would still move the weights,
            # since Adam steps by its momentum m / (sqrt(v) + eps) even at g = 0.
            self.rollout.reset()
            return
        last_value = self.runtime.act(self._next_obs)[-1] if self.use_critic else 0.0
        advantages, returns = gae(
            data["reward"], data["value"], data["done"], last_value, self.gamma, self.gae_lambda, data["valid"]
        )
        valid = data["valid"].reshape(-1)
        batch = {
            "obs": data["obs"].reshape(-1, *self.observation_space.shape)[valid],
            "action": data["action"].reshape(len(valid), *data["action"].shape[2:])[valid],
            "log_prob": data["log_prob"].reshape(-1)[valid],
            "advantage": advantages.reshape(-1)[valid],
            "returns": returns.reshape(-1)[valid],
        }
        self.rollout.reset()
        yield from self._learn(batch)

    def _learn(self, batch):
        raise NotImplementedError
