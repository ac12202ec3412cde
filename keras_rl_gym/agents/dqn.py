"""Deep Q-Network with experience replay and a target network; Double and Dueling as flags."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import keras
import numpy as np
from gymnasium import spaces
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_rl_gym import networks, schedules
from keras_rl_gym.agents.base import (
    ALL_POSITIVE,
    EPSILON_RULES,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_RATE,
    Agent,
    between,
    masked_mean,
    one_of,
)
from keras_rl_gym.buffers import FrameReplayBuffer, NStepAccumulator, ReplayBuffer
from keras_rl_gym.spaces import require

LOSSES = ("mse", "huber")
REPLAYS = ("auto", "uniform", "frames")


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class DQNAgent(Agent):
    """Deep Q-Network (Mnih et al., 2015), with Double and Dueling variants.

    The Q-network is trained on minibatches from a replay buffer to minimize
    ``(Q(s, a) - y)^2`` against the stopped-gradient Bellman target

        y = r + gamma * (1 - terminated) * Q_target(s', argmax_a' Q_?(s', a'))

    where the argmax uses the target network itself (DQN) or the online
    network (Double DQN, van Hasselt et al., 2016). Only ``terminated`` cuts the
    bootstrap: a time-limit truncation still bootstraps from ``s'``. The target
    network is a frozen copy, refreshed every ``target_update_every`` env steps
    by ``target <- tau * online + (1 - tau) * target`` (``tau=1`` is the hard copy).

    Args:
        observation_space: a ``Box`` space (vectors for ``network="dense"``,
            HxWxC images for ``network="conv"``).
        action_space: a ``Discrete`` space.
        network: ``"dense"`` or ``"conv"`` (the Nature DQN torso), or your own
            Q-network: a ``keras.Model`` (or a function ``(observation_space,
            action_space) -> keras.Model``) from ``(batch, *obs_shape)`` to
            ``(batch, n_actions)``, checked, trained and saved with the agent
            (``hidden_sizes`` and ``dueling`` then do not apply). DRQN's LSTM
            Q-network is :class:`~keras_rl_gym.agents.drqn.DRQNAgent`.
        hidden_sizes: widths of the dense layers.
        double: use Double DQN targets.
        dueling: use a dueling value/advantage head (Wang et al., 2016).
        gamma: discount factor.
        learning_rate: Adam learning rate (a float or a Keras schedule).
        learning_rate_decay: multiply the learning rate by this every 1000 updates.
        loss: ``"mse"`` (the tutorial's) or ``"huber"``.
        buffer_size: replay capacity in transitions.
        replay: ``"uniform"`` stores whole observations (``ReplayBuffer``);
            ``"frames"`` stores each frame of stacked HxWxC observations once
            (``FrameReplayBuffer``, ~8x less memory on Atari); ``"auto"`` picks
            ``"frames"`` for uint8 HxWxC observations with C > 1, else ``"uniform"``.
        batch_size: transitions per update.
        learning_starts: env steps of pure exploration before the first update.
        train_freq: env steps between rounds of updates.
        gradient_steps: updates per round.
        target_update_every: env steps between target network updates.
        tau: target update rate; 1.0 copies the weights.
        epsilon_start, epsilon_final: exploration rate annealed between these.
        exploration_fraction: fraction of the run's horizon (``fit``'s ``total_steps``) over which epsilon anneals.
        epsilon_schedule: ``"linear"`` or ``"exponential"``.
        max_grad_norm: clip gradients to this global norm (``None``: no clipping).
        n_step: steps per bootstrapped return (Sutton and Barto 2018, ch. 7): the target becomes
            ``y = sum_{k<m} gamma^k r_k + gamma^m * (1 - terminated) * Q_target(s_m, a')`` with ``m = n_step``,
            or fewer at an episode's end (a termination cuts it, a truncation bootstraps from its final
            observation); ``1`` is plain DQN. Works with both replays and across vector envs.
        prioritized: proportional prioritized replay (Schaul et al., 2016): transition ``i`` is drawn with
            ``P(i) = p_i^alpha / sum_k p_k^alpha``, ``p_i = |Q(s, a) - y| + priority_eps`` from its last
            update (new ones get the largest priority seen), and the loss is the mean of
            ``w_i * loss_i`` with ``w_i = (N P(i))^-beta / max_j w_j``.
        priority_alpha: the priority exponent ``alpha``.
        priority_beta: ``beta`` at the start; it anneals linearly to 1 over the run's horizon (``total_steps``).
        priority_eps: added to ``|TD error|`` so that no priority is 0.
        seed: random seed.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space, double=True)
        >>> history = agent.fit(env, steps=2_000, verbose=0)
        >>> agent.evaluate(env, episodes=2)["mean_return"] > 0
        True

    References:
        Mnih et al., "Human-level control through deep reinforcement learning", Nature 2015.
        van Hasselt, Guez and Silver, "Deep Reinforcement Learning with Double Q-learning", AAAI 2016.
        Wang et al., "Dueling Network Architectures for Deep Reinforcement Learning", ICML 2016.
        Schaul, Quan, Antonoglou and Silver, "Prioritized Experience Replay", ICLR 2016.
        Sutton and Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, ch. 7 (n-step returns).
        Hessel et al., "Rainbow: Combining Improvements in Deep Reinforcement Learning", AAAI 2018.
    """

    _saved_state = ("epsilon", "_steps_since_train", "_steps_since_target")
    _NETWORKS = ("dense", "conv")  # the values of ``network`` this class builds
    _attribute_names = {"loss": "loss_name"}  # keras.Model has a ``loss`` of its own
    # The n-step windows and the FIFO of sampled rows: host data Keras must not track.
    _host_attributes = Agent._host_attributes | {"_nstep", "_sampled"}
    # ``network`` is checked before Keras's constructor (see __init__), so it has no rule here.
    hyperparameter_rules = {
        "hidden_sizes": ALL_POSITIVE,
        "learning_rate": POSITIVE_RATE,
        "learning_rate_decay": between(0, 1, open_low=True),
        "loss": one_of(*LOSSES),
        "buffer_size": POSITIVE,
        "replay": one_of(*REPLAYS),
        "batch_size": POSITIVE,
        "learning_starts": NON_NEGATIVE,
        "train_freq": POSITIVE,
        "gradient_steps": POSITIVE,
        "target_update_every": POSITIVE,
        "tau": between(0, 1, open_low=True),
        "max_grad_norm": POSITIVE,
        "n_step": POSITIVE,
        "priority_alpha": NON_NEGATIVE,
        "priority_beta": between(0, 1),
        "priority_eps": POSITIVE,
        **EPSILON_RULES,
    }

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        network: str | keras.Model | Callable = "dense",
        hidden_sizes: Sequence[int] = (64, 64),
        double: bool = False,
        dueling: bool = False,
        gamma: float = 0.99,
        learning_rate: float | LearningRateSchedule = 1e-3,
        learning_rate_decay: float | None = None,
        loss: str = "mse",
        buffer_size: int = 50_000,
        replay: str = "auto",
        batch_size: int = 32,
        learning_starts: int = 1_000,
        train_freq: int = 1,
        gradient_steps: int = 1,
        target_update_every: int = 500,
        tau: float = 1.0,
        epsilon_start: float = 1.0,
        epsilon_final: float = 0.02,
        exploration_fraction: float = 0.1,
        epsilon_schedule: str = "linear",
        max_grad_norm: float | None = None,
        n_step: int = 1,
        prioritized: bool = False,
        priority_alpha: float = 0.6,
        priority_beta: float = 0.4,
        priority_eps: float = 1e-6,
        seed: int | None = None,
        **kwargs,
    ):
        # Checked before Keras's constructor, which would reject a DRQN's lstm_size first.
        if isinstance(network, str) and network not in self._NETWORKS:
            drqn = " DRQN's LSTM Q-network is DRQNAgent (algo 'drqn' in a run config)." if network == "lstm" else ""
            expected = " or ".join(map(repr, self._NETWORKS))
            raise ValueError(
                f"Unknown network {network!r} for {type(self).__name__}: expected {expected} or a keras.Model.{drqn}"
            )
        super().__init__(observation_space, action_space, gamma=gamma, seed=seed, **kwargs)
        self._set_hyperparameters(locals())
        require(self.action_space, (spaces.Discrete,), type(self).__name__, "action")
        require(self.observation_space, (spaces.Box,), type(self).__name__, "observation")
        obs_shape = self.observation_space.shape
        if network == "dense" and len(obs_shape) == 3:
            raise ValueError(f"{type(self).__name__}: image observations {obs_shape} need network='conv', not 'dense'.")
        if network == "conv":
            networks.check_conv_shape(obs_shape, type(self).__name__)
        if replay == "frames" and len(obs_shape) != 3:
            raise ValueError(f"replay='frames' needs HxWxC stacked-frame observations, got shape {obs_shape}.")
        self.n_actions = int(self.action_space.n)

        inputs, output_shape = self._q_network_signature()
        self.q_network = self._network(
            "network", network, self._build_q_network, inputs=inputs, output_shape=output_shape
        )
        # Built before the first compiled step, with the online weights.
        self.target_network = networks.target_copy(self.q_network, "q_target")
        self.lr_schedule = schedules.learning_rate(learning_rate, learning_rate_decay)
        self.optimizer = keras.optimizers.Adam(self.lr_schedule, global_clipnorm=max_grad_norm)
        self.optimizer.build(self.q_network.trainable_variables)
        self.epsilon = self.epsilon_start
        self.buffer = None
        self._device_replay = False  # whether the runtime gathers batches from its copy of the ring
        self._epsilon_fn = None
        self._steps_since_train = 0  # env steps since the last round of updates
        self._steps_since_target = 0
        self._nstep = None  # an NStepAccumulator while fitting with n_step > 1
        # Tree rows of each update's batch, oldest first, until its TD errors come back (fit only).
        self._sampled = deque()
        self.built = True

    def _q_network_signature(self):
        """What a user's Q-network must take and give, per example: observations in, one Q-value per action out."""
        return [(self.observation_space.shape, self.observation_space.dtype)], (self.n_actions,)

    def _build_q_network(self) -> keras.Model:
        """The online Q-network, observations to one Q-value per action."""
        return networks.q_network(
            self.observation_space.shape,
            self.n_actions,
            network=self.network,
            hidden_sizes=self.hidden_sizes,
            dueling=self.dueling,
            obs_dtype=str(self.observation_space.dtype),
            name="q_network",
        )

    # -- graph (keras.ops) ---------------------------------------------------------
    def call(self, obs, training=False):
        """Q-values of every action, shape ``(batch, n_actions)``."""
        return self.q_network(self.normalized(obs), training=training)

    def act_graph(self, obs):
        return ops.argmax(self.q_network(obs), axis=-1)

    def _greedy_graph(self, obs):
        return self._discrete_actions_graph(self.q_network(obs))

    def td_target(self, reward, next_obs, terminated, discount=None):
        """The Bellman target ``y`` of a batch of transitions, without gradient."""
        q_next_online = self.q_network(next_obs) if self.double else None
        return self._bellman_target(reward, terminated, self.target_network(next_obs), q_next_online, discount)

    def _bellman_target(self, reward, terminated, q_next_target, q_next_online=None, discount=None):
        """``y = r + gamma * (1 - terminated) * Q_target(s', a')``, without gradient.

        ``a' = argmax Q_target(s', .)`` (DQN), or ``argmax Q_online(s', .)`` from
        ``q_next_online`` (Double DQN). ``q_next_*`` are ``(..., n_actions)`` Q-values
        of the next observations, so one item or a whole sequence of them alike.
        ``discount`` (per item, ``gamma^m`` of an n-step transition) replaces ``gamma`` when given.
        """
        if self.double:
            # The online network picks a', the target network values it: choosing and
            # valuing with one noisy estimate is what makes max overestimate.
            q_next = self._pick(q_next_target, ops.argmax(q_next_online, axis=-1))
        else:
            q_next = ops.max(q_next_target, axis=-1)
        # Only termination cuts the bootstrap: a truncated step still values s'.
        gamma = self.gamma if discount is None else ops.cast(discount, "float32")
        y = ops.cast(reward, "float32") + gamma * (1.0 - ops.cast(terminated, "float32")) * q_next
        return ops.stop_gradient(y)

    def compute_rl_loss(self, batch):
        action = ops.cast(batch["action"], "int32")
        y = self.td_target(batch["reward"], batch["next_obs"], batch["terminated"], batch.get("discount"))
        q = self.q_network(batch["obs"], training=True)
        q_taken = self._pick(q, action)
        if not self.prioritized:
            return self._error_loss(q_taken - y), {"q_mean": ops.mean(q_taken)}
        # Prioritized replay: loss = mean_i w_i * l(q_i - y_i), the importance weights w_i undoing
        # the bias of drawing by priority; |q_i - y_i| goes back to the host as the new priorities.
        error = q_taken - y
        loss = self._error_loss(error, weight=ops.cast(batch["weight"], "float32"))
        return loss, {"q_mean": ops.mean(q_taken), "td_error": ops.stop_gradient(ops.abs(error))}

    def _pick(self, q, action):
        """``q[..., action]``: a one-hot product, which compiles to fewer and
        cheaper kernels (forward and gradient) than a gather."""
        return ops.sum(q * ops.one_hot(action, self.n_actions, dtype=q.dtype), axis=-1)

    def _error_loss(self, error, mask=None, weight=None):
        if self.loss_name == "huber":
            abs_error = ops.abs(error)
            per_item = ops.where(abs_error < 1.0, 0.5 * ops.square(error), abs_error - 0.5)
        else:
            per_item = ops.square(error)
        if weight is not None:
            per_item = weight * per_item
        return ops.mean(per_item) if mask is None else masked_mean(per_item, mask)

    def update_targets(self, tau: float):
        networks.update_target(self.target_network, self.q_network, tau)

    # -- host side (NumPy) ----------------------------------------------------------
    def _on_fit_begin(self, num_envs, steps):
        obs_space = self.observation_space
        prioritized = {"priority_alpha": self.priority_alpha, "priority_eps": self.priority_eps}
        prioritized = prioritized if self.prioritized else {}
        if self.buffer is None and self._use_frame_replay():
            self.buffer = FrameReplayBuffer(
                self.buffer_size,
                frame_shape=obs_space.shape[:2],
                stack=obs_space.shape[2],
                seed=self.replay_seed,
                num_envs=num_envs,
                dtype=obs_space.dtype,
                n_step=self.n_step,
                gamma=self.gamma,
                **prioritized,
            )
        if self.buffer is None:
            fields = {
                "obs": (obs_space.shape, obs_space.dtype),
                "action": ((), np.int32),
                "reward": ((), np.float32),
                "next_obs": (obs_space.shape, obs_space.dtype),
                "terminated": ((), np.float32),
            }
            if self.n_step > 1:
                fields["discount"] = ((), np.float32)  # gamma^m of each n-step transition
            self.buffer = ReplayBuffer(self.buffer_size, fields, seed=self.replay_seed, **prioritized)
        # Each fit resets its envs: open n-step windows and unreported sampled rows belong to no one now.
        # Frame replay keeps its n-step windows itself, next to the frames.
        uniform = type(self.buffer) is ReplayBuffer
        self._nstep = NStepAccumulator(self.n_step, self.gamma, num_envs) if self.n_step > 1 and uniform else None
        self._sampled.clear()
        # Where the runtime keeps a copy of the ring on its device (JAX, TensorFlow), an update
        # takes only sampled rows, and gathers the batch inside its compiled call. Prioritized and
        # n-step replay sample on the host.
        host = self.prioritized or self.n_step > 1
        self._device_replay = type(self.buffer) is ReplayBuffer and not host and self.runtime.attach_replay(self.buffer)

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
        # Before learning starts every action is random: the network is not run.
        actions = self._greedy(obs) if step >= self.learning_starts else np.zeros(n, np.int64)
        # The coin flip stays on the host: random ops inside the compiled act cost more.
        explore = self.rng.random(n) < (self.epsilon if step >= self.learning_starts else 1.0)
        if explore.any():
            actions = np.where(explore, self.rng.integers(0, self.n_actions, size=n), actions)
        return actions

    def _use_frame_replay(self) -> bool:
        shape, dtype = self.observation_space.shape, self.observation_space.dtype
        if self.replay == "auto":
            return len(shape) == 3 and shape[2] > 1 and dtype == np.uint8
        return self.replay == "frames"

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
        if self._nstep is not None:
            # One-step transitions in, the n-step transitions they complete out.
            done = self._nstep.add(obs, action, reward, next_obs, terminated, truncated, valid)
            if done is not None:
                self.buffer.add(**done)
        elif isinstance(self.buffer, FrameReplayBuffer):
            # Frame replay tracks episodes per env slot: it takes the whole batch and the mask.
            self.buffer.add(obs, action, reward, next_obs, terminated, truncated, valid=valid)
        elif valid.all():
            self.buffer.add(obs=obs, action=action, reward=reward, next_obs=next_obs, terminated=terminated)
        elif valid.any():
            self.buffer.add(
                obs=obs[valid],
                action=action[valid],
                reward=reward[valid],
                next_obs=next_obs[valid],
                terminated=terminated[valid],
            )

    def _train(self, step, new_steps):
        if step < self.learning_starts:
            return
        self._steps_since_train += new_steps
        self._steps_since_target += new_steps
        while self._steps_since_train >= self.train_freq:
            self._steps_since_train -= self.train_freq
            if self.gradient_steps > 1 and not self._device_replay:
                # The round's batches drawn at once, its updates run as one compiled call.
                batches = self._host_batch(self.gradient_steps * self.batch_size, self.gradient_steps)
                yield from self._train_round(
                    {k: v.reshape(self.gradient_steps, self.batch_size, *v.shape[1:]) for k, v in batches.items()}
                )
                continue
            for _ in range(self.gradient_steps):
                yield self.train_step(self._sample())
        if self._steps_since_target >= self.target_update_every:
            self._steps_since_target %= self.target_update_every
            self.runtime.update_targets(self.tau)

    def _sample(self) -> dict:
        if self._device_replay:
            return {"index": self.buffer.sample_index(self.batch_size)}
        return self._host_batch(self.batch_size, 1)

    def _host_batch(self, size: int, updates: int) -> dict:
        """``size`` transitions for ``updates`` updates in a row; prioritized: their tree rows queued per update.

        Called only from ``_train`` (inside ``fit``), so every queued entry gets its report back.
        """
        if not self.prioritized:
            return self.buffer.sample(size)
        # beta anneals linearly from priority_beta to 1 over the run's horizon.
        progress = min(1.0, self.env_steps / max(self.total_steps or 1, 1))
        batch = self.buffer.sample(size, beta=self.priority_beta + (1.0 - self.priority_beta) * progress)
        rows, writes = np.split(batch.pop("tree_index"), updates), np.split(batch.pop("tree_writes"), updates)
        self._sampled.extend(zip(rows, writes, strict=True))
        return batch

    def _on_update_reported(self, metrics: dict) -> dict:
        # Reports come in update order, maybe one update late (a fused runtime): the oldest rows are theirs.
        if self.prioritized and "td_error" in metrics and self._sampled:
            rows, writes = self._sampled.popleft()
            self.buffer.sampler.update(rows, metrics["td_error"], writes)
        return super()._on_update_reported(metrics)

    def _log_values(self):
        return {
            "epsilon": float(self.epsilon),
            "learning_rate": schedules.optimizer_learning_rate(self.optimizer, self.updates),
        }
