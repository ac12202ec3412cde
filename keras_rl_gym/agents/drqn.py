"""Deep Recurrent Q-Network: DQN with an LSTM Q-network, trained on replayed sequences."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from keras_rl_gym import networks
from keras_rl_gym.agents.base import POSITIVE, masked_mean, one_of
from keras_rl_gym.agents.dqn import DQNAgent
from keras_rl_gym.buffers import SequenceReplayBuffer


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class DRQNAgent(DQNAgent):
    """Deep Recurrent Q-Network (Hausknecht and Stone, 2015): DQN whose Q-network remembers.

    The Q-network is dense layers, an LSTM, then the Q head (dueling with
    ``dueling=True``), so ``Q(o_1..o_t, a)`` depends on the whole episode so
    far: on a partially observed env (``RemoveVelocity``) memory stands in for
    what one observation lacks. While acting, each env's LSTM state ``(h, c)``
    is carried from step to step (:attr:`recurrent_state`) and starts from zero
    with each episode.

    Training samples ``sequence_length`` consecutive transitions of one env
    (``SequenceReplayBuffer``) and unrolls both networks from a zero state over
    ``x = [o_0, o_1, ..., o_L]``, each transition's next observation after the
    first one. At step ``t`` of a sequence the loss is ``(Q(x_0..x_t, a_t) - y_t)^2``
    against the stopped-gradient target

        y_t = r_t + gamma * (1 - terminated_t) * Q_target(x_0..x_{t+1}, a'),
        a'  = argmax_a Q_?(x_0..x_{t+1}, a)

    (``Q_target`` itself, or the online ``Q`` with ``double=True``), averaged
    over the steps up to the sequence's first episode end: the steps after it
    belong to the next episode and have mask 0. Everything else (Double and
    Dueling, target updates, epsilon-greedy exploration, the MSE or Huber loss,
    the learning-rate schedule) is :class:`~keras_rl_gym.agents.dqn.DQNAgent`'s
    and means the same here.

    Args:
        observation_space: a ``Box`` space of vectors (Atari RAM bytes are scaled by 1/255).
        action_space: a ``Discrete`` space.
        network: ``"lstm"`` (a DRQN's config reads as a DQN's), or your own recurrent Q-network: a
            ``keras.Model`` (or a function of the spaces) from ``[obs (batch, time, *obs_shape), h, c]``
            to ``[Q (batch, time, n_actions), h, c]``, with states of ``lstm_size`` units.
        lstm_size: units of the LSTM.
        sequence_length: transitions per training sequence (the tutorial's ``step_size``).
        **kwargs: every other argument of ``DQNAgent``, with its meaning and
            default (``hidden_sizes`` are the dense layers before the LSTM);
            ``replay`` must stay ``"auto"``: DRQN always replays sequences.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym.wrappers.partial import RemoveVelocity
        >>> env = RemoveVelocity(gym.make("CartPole-v1"))  # positions only: memory helps
        >>> agent = DRQNAgent(env.observation_space, env.action_space, lstm_size=32, double=True, seed=0)
        >>> history = agent.fit(env, steps=2_000, verbose=0)
        >>> agent.evaluate(env, episodes=2)["mean_return"] > 0
        True

    References:
        Hausknecht and Stone, "Deep Recurrent Q-Learning for Partially Observable MDPs", AAAI Fall Symposium 2015.
        Mnih et al., "Human-level control through deep reinforcement learning", Nature 2015.
    """

    _NETWORKS = ("lstm",)
    hyperparameter_rules = {
        "replay": one_of("auto"),  # DRQN always replays sequences
        "lstm_size": POSITIVE,
        "sequence_length": POSITIVE,
    }

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        network: str | keras.Model | Callable = "lstm",
        lstm_size: int = 64,
        sequence_length: int = 8,
        **kwargs,
    ):
        # DQNAgent's constructor builds the Q-network (_q_network_signature, _build_q_network),
        # which reads these: they are set first (plain values, which Keras does not track),
        # and checked and recorded with DQN's arguments (_set_hyperparameters).
        self.lstm_size, self.sequence_length = lstm_size, sequence_length
        if kwargs.get("n_step", 1) != 1 or kwargs.get("prioritized", False):
            raise ValueError("DRQNAgent replays whole sequences: n_step must be 1 and prioritized False.")
        super().__init__(observation_space, action_space, network=network, **kwargs)

    def _set_hyperparameters(self, values=None, **more):
        if values is not None and "lstm_size" not in values:  # DQNAgent's, checked with DRQN's own
            more = dict(more, lstm_size=self.lstm_size, sequence_length=self.sequence_length)
        super()._set_hyperparameters(values, **more)

    def _q_network_signature(self):
        # A sequence of 3 observations and the LSTM state in; Q-values per step and the new state out.
        obs, time = self.observation_space, 3
        state = ((self.lstm_size,), "float32")
        inputs = [((time, *obs.shape), obs.dtype), state, state]
        return inputs, [(time, self.n_actions), (self.lstm_size,), (self.lstm_size,)]

    def _build_q_network(self) -> keras.Model:
        obs_shape = self.observation_space.shape
        if len(obs_shape) != 1:
            raise ValueError(f"{type(self).__name__} needs vector observations, got shape {obs_shape}.")
        return networks.recurrent_q_network(
            obs_shape,
            self.n_actions,
            hidden_sizes=self.hidden_sizes,
            lstm_size=self.lstm_size,
            dueling=self.dueling,
            obs_dtype=str(self.observation_space.dtype),
            name="q_network",
        )

    # -- graph (keras.ops) ---------------------------------------------------------
    def call(self, obs, training=False):
        """Q-values of every action at an episode's first step (a zero state), shape ``(batch, n_actions)``."""
        zeros = self._zero_state(obs)
        return self.q_network([ops.expand_dims(self.normalized(obs), 1), zeros, zeros], training=training)[0][:, 0]

    def act_graph(self, obs):
        # One step of the recurrent net, from and to the carried state.
        obs, h, c = obs
        q, h, c = self.q_network([ops.expand_dims(obs, 1), h, c])
        return ops.argmax(q[:, 0], axis=-1), h, c

    def _greedy_graph(self, obs):
        raise NotImplementedError(
            "DRQNAgent acts from an LSTM state carried from step to step; an exported or served policy "
            "takes one observation at a time with no state, so DRQN is not exported or served."
        )

    def _zero_state(self, obs):
        return ops.zeros((ops.shape(obs)[0], self.lstm_size), "float32")

    def _unroll(self, obs, next_obs, training=False):
        """Q-values of both nets, ``(B, L + 1, n_actions)``, over ``x = [obs, next_obs_0, ..., next_obs_{L-1}]``."""
        x = ops.concatenate([ops.expand_dims(obs, 1), next_obs], axis=1)
        zeros = self._zero_state(obs)
        q = self.q_network([x, zeros, zeros], training=training)[0]
        return q, self.target_network([x, zeros, zeros])[0]

    def td_target(self, reward, next_obs, terminated, *, obs):
        """The Bellman targets ``y`` of ``(B, L)`` sequences that start at ``obs``, without gradient."""
        q, q_target = self._unroll(obs, next_obs)
        return self._bellman_target(reward, terminated, q_target[:, 1:], q[:, 1:])

    def compute_rl_loss(self, batch):
        # One unroll of the online net gives Q(x_0..x_t, .) for the loss and, shifted
        # by one, Q(x_0..x_{t+1}, .) for Double DQN's choice of a'.
        q, q_target = self._unroll(batch["obs"], batch["next_obs"], training=True)
        y = self._bellman_target(batch["reward"], batch["terminated"], q_target[:, 1:], q[:, 1:])
        q_taken = self._pick(q[:, :-1], ops.cast(batch["action"], "int32"))
        # mask_t is 0 after the sequence's first episode end: those steps are the next episode's.
        mask = ops.cast(batch["mask"], "float32")
        return self._error_loss(q_taken - y, mask), {"q_mean": masked_mean(q_taken, mask)}

    # -- host side (NumPy) ----------------------------------------------------------
    def initial_state(self, num_envs):
        """The LSTM's ``(h, c)`` at an episode's start: zeros, one row per env."""
        zeros = np.zeros((num_envs, self.lstm_size), np.float32)
        return zeros, zeros.copy()

    def _greedy(self, obs):
        n = len(obs)
        if self._state is None or len(self._state[0]) != n:
            self._state = self.initial_state(n)  # a batch of another size: new envs
        actions, h, c = self.runtime.act((np.asarray(obs, np.float32), *self._state))
        self._state = (np.array(h), np.array(c))  # writable copies: reset_state zeroes rows
        return np.asarray(actions)

    def _explore(self, obs, step):
        if step < self.learning_starts:
            # The actions are random, but the LSTM still reads every observation,
            # so that its state is the episode's when learning starts.
            self._greedy(obs)
        return super()._explore(obs, step)

    def _on_fit_begin(self, num_envs, steps):
        # One ring per env slot, so that a sequence is consecutive steps of one env.
        if self.buffer is None or len(self.buffer.sizes) != num_envs:
            obs_space = self.observation_space
            self.buffer = SequenceReplayBuffer(
                self.buffer_size,
                num_envs,
                self.sequence_length,
                {
                    "obs": (obs_space.shape, obs_space.dtype),
                    "action": ((), np.int32),
                    "reward": ((), np.float32),
                    "next_obs": (obs_space.shape, obs_space.dtype),
                    "terminated": ((), np.float32),
                    "done": ((), bool),
                },
                seed=self.replay_seed,
            )
        super()._on_fit_begin(num_envs, steps)  # DQN keeps the buffer set here

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid):
        # Either end of an episode (done) starts the mask's zeros; only termination cuts the target.
        done = np.asarray(terminated) | np.asarray(truncated)
        self.buffer.add(
            valid, obs=obs, action=action, reward=reward, next_obs=next_obs, terminated=terminated, done=done
        )

    def _train(self, step, new_steps):
        # No update, nor a count toward one, until some env has stored a whole sequence.
        if self.buffer.can_sample():
            yield from super()._train(step, new_steps)
