"""Replay and rollout storage, in NumPy on the host.

``save_buffer`` and ``load_buffer`` write a buffer to one ``.npz`` file and read it back exactly, generator state
included, so a resumed training run samples the same batches the interrupted one would have.
"""

from __future__ import annotations

import json
import sys

import numpy as np


class _Saveable:
    """What ``save_buffer`` and ``load_buffer`` need of a buffer.

    A subclass names its kind, the attributes that change as it fills (``_STATE``) and, in ``_init_args``, the
    JSON-able constructor arguments that rebuild its empty arrays; one mechanism then saves and restores them all.
    """

    _KIND: str
    _STATE: tuple[str, ...]

    def _init_args(self) -> dict:
        raise NotImplementedError

    def _state(self) -> dict:
        """The ``_STATE`` attributes and the generator state as a flat ``{key: array}`` dict."""
        state = {}
        for name in self._STATE:
            value = getattr(self, name)
            if isinstance(value, dict):
                state.update({f"{name}/{field}": array for field, array in value.items()})
            elif hasattr(value, "_STATE"):  # a part with state of its own (the prioritized sampler)
                state.update(_nested_state(name, value))
            elif value is not None:  # left out (ReplayBuffer's block not yet drawn): the constructor's None stands
                state[name] = np.asarray(value)
        # The state dict holds 128-bit integers: JSON keeps them exact without pickle.
        state["rng"] = np.array(json.dumps(self.rng.bit_generator.state))
        return state

    @classmethod
    def _from_state(cls, args: dict, state: dict):
        """A buffer built from ``args`` whose ``_STATE`` attributes and generator are then set from ``state``."""
        buffer = cls(**args)

        def restored(key, current):
            value = state[key]
            if isinstance(current, np.ndarray) and (value.shape, value.dtype) != (current.shape, current.dtype):
                raise ValueError(f"Saved {key} is {value.dtype}{value.shape}, expected {current.dtype}{current.shape}.")
            # Counters come back as the Python ints the buffer keeps; arrays as loaded, never copied again.
            return value.item() if value.ndim == 0 else value

        for name in cls._STATE:
            current = getattr(buffer, name)
            if isinstance(current, dict):
                for field in current:
                    current[field] = restored(f"{name}/{field}", current[field])
            elif hasattr(current, "_STATE"):
                _restore_nested(name, current, state, restored)
            elif name in state:
                setattr(buffer, name, restored(name, current))
        buffer.rng.bit_generator.state = json.loads(state["rng"].item())
        return buffer


def _nested_state(prefix: str, part) -> dict:
    state = {}
    for name in part._STATE:
        value = getattr(part, name)
        if hasattr(value, "_STATE"):
            state.update(_nested_state(f"{prefix}/{name}", value))
        else:
            state[f"{prefix}/{name}"] = np.asarray(value)
    return state


def _restore_nested(prefix: str, part, state: dict, restored) -> None:
    for name in part._STATE:
        value = getattr(part, name)
        if hasattr(value, "_STATE"):
            _restore_nested(f"{prefix}/{name}", value, state, restored)
        else:
            setattr(part, name, restored(f"{prefix}/{name}", value))


def _fields(data: dict, axes: int) -> dict:
    """JSON-able ``{name: (shape, dtype)}`` of one transition, from arrays with ``axes`` leading axes."""
    return {name: (list(array.shape[axes:]), array.dtype.str) for name, array in data.items()}


class ReplayBuffer(_Saveable):
    """A fixed-size ring buffer of transitions, sampled uniformly.

    Each field is one preallocated NumPy array; ``add`` writes a batch of
    transitions (one per vector-env slot) and overwrites the oldest when full.

    Args:
        capacity: number of transitions kept.
        fields: ``{name: (shape, dtype)}`` of one transition.
        seed: seed of the sampling generator.

    Example:
        >>> buf = ReplayBuffer(100, {"obs": ((4,), "float32"), "action": ((), "int64")})
        >>> buf.add(obs=np.zeros((2, 4)), action=np.array([0, 1]))
        >>> len(buf), buf.sample(8)["obs"].shape
        (2, (8, 4))
    """

    _KIND = "uniform"
    _STATE = ("data", "position", "size", "_random", "_next", "written", "sampler")

    def __init__(
        self,
        capacity: int,
        fields: dict,
        seed: int | None = None,
        priority_alpha: float | None = None,
        priority_eps: float = 1e-6,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.data = {name: np.zeros((self.capacity, *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
        self.position = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self._random = None  # a block of random integers for sampling
        self._next = 0
        # Rows written since the buffer was made: a runtime that keeps a copy of the
        # ring on the device (see ``backend.ReplayMirror``) sends it only the new ones.
        self.written = 0
        # Prioritized replay when priority_alpha is set: sample draws rows through it.
        self.sampler = None if priority_alpha is None else PrioritizedSampler(capacity, priority_alpha, priority_eps)

    def _init_args(self) -> dict:
        # No seed: the saved generator state replaces the seeded one.
        return {"capacity": self.capacity, "fields": _fields(self.data, 1), **_sampler_args(self.sampler)}

    def __len__(self) -> int:
        return self.size

    def add(self, **batch) -> None:
        """Appends ``n`` transitions; every field has a leading axis of length ``n``."""
        n = len(next(iter(batch.values())))
        start = self.position
        if start + n <= self.capacity:
            # Slice writes: a third of the cost of index writes, once per env step.
            for name, array in self.data.items():
                array[start : start + n] = batch[name]
        else:
            index = (start + np.arange(n)) % self.capacity
            for name, array in self.data.items():
                array[index] = batch[name]
        if self.sampler is not None:
            self.sampler.add((start + np.arange(n)) % self.capacity)
        self.position = (start + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.written += n

    def sample(self, batch_size: int, beta: float = 1.0) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement.

        With a prioritized sampler they are drawn by priority instead, and the batch also
        holds ``"weight"`` (importance weights with exponent ``beta``), ``"tree_index"`` (the
        rows drawn) and ``"tree_writes"`` (their write counts), for the sampler's ``update``.
        """
        if self.sampler is None:
            index = self.sample_index(batch_size)
            return {name: array.take(index, axis=0) for name, array in self.data.items()}
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        index, weight = self.sampler.sample(batch_size, self.rng, beta)
        batch = {name: array.take(index, axis=0) for name, array in self.data.items()}
        return dict(batch, **self.sampler.batch_entries(index, beta, weight))

    def sample_index(self, batch_size: int) -> np.ndarray:
        """Ring rows of ``batch_size`` transitions drawn uniformly with replacement (what ``sample`` gathers).

        Draws from the same stream as ``sample``: a run samples the same rows whether
        the host gathers them or a runtime does, from its device copy of the ring.
        """
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        return self._indices(batch_size)

    _BLOCK = 8192

    def _indices(self, batch_size: int) -> np.ndarray:
        # Generator.integers costs ~7 us a call, a third of a CartPole env step.
        # Uniform 62-bit integers are drawn in blocks instead and reduced
        # modulo the size (a bias below size / 2**62: none in practice).
        if batch_size > self._BLOCK:
            return self.rng.integers(0, self.size, size=batch_size)
        if self._random is None or self._next + batch_size > self._BLOCK:
            self._random = self.rng.integers(0, 1 << 62, size=self._BLOCK, dtype=np.int64)
            self._next = 0
        start, self._next = self._next, self._next + batch_size
        return self._random[start : self._next] % self.size


class SumTree:
    """An array-backed binary tree over ``capacity`` leaves holding their sums (and minima).

    Node ``k`` has children ``2k`` and ``2k + 1``; leaf ``i`` is node ``size + i`` where
    ``size`` is ``capacity`` rounded up to a power of two, and node 1 holds the total.
    ``update`` and ``find`` are vectorized over many leaves or draws at once.

    Args:
        capacity: number of leaves.

    Example:
        >>> tree = SumTree(4)
        >>> tree.update(np.array([0, 2]), np.array([1.0, 3.0]))
        >>> tree.total, tree.find(np.array([0.5, 2.0])).tolist()
        (4.0, [0, 2])
    """

    _STATE = ("sums", "mins")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.size = 1 << max(self.capacity - 1, 0).bit_length()
        self.sums = np.zeros(2 * self.size, np.float64)
        self.mins = np.full(2 * self.size, np.inf, np.float64)  # empty leaves never set the minimum

    @property
    def total(self) -> float:
        return float(self.sums[1])

    @property
    def min(self) -> float:
        return float(self.mins[1])

    def leaves(self, index) -> np.ndarray:
        return self.sums[self.size + np.asarray(index)]

    def update(self, index, values) -> None:
        """Sets leaves ``index`` to ``values`` (non-negative) and refreshes their ancestors, level by level."""
        values = np.asarray(values, np.float64)
        if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
            raise ValueError("SumTree values must be finite and >= 0.")
        node = self.size + np.asarray(index, np.int64)
        self.sums[node] = values
        self.mins[node] = values
        node = np.unique(node // 2)
        while node.size and node[0] >= 1:
            self.sums[node] = self.sums[2 * node] + self.sums[2 * node + 1]
            self.mins[node] = np.minimum(self.mins[2 * node], self.mins[2 * node + 1])
            node = np.unique(node // 2) if node[0] > 1 else node[:0]

    def find(self, mass) -> np.ndarray:
        """The leaf of each prefix sum in ``mass``: the first ``i`` with ``sum(leaves[:i + 1]) > mass``."""
        mass = np.array(mass, np.float64)
        node = np.ones(mass.shape, np.int64)
        while node.size and node[0] < self.size:  # every draw descends one level per pass
            left = self.sums[2 * node]
            right = mass >= left
            mass -= np.where(right, left, 0.0)
            node = 2 * node + right
        return np.minimum(node - self.size, self.capacity - 1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` leaves drawn proportionally to their values, stratified: one draw in each of ``n`` equal segments."""
        if self.total <= 0:
            raise ValueError("Cannot sample from a SumTree whose total is 0.")
        mass = (np.arange(n) + rng.random(n)) * (self.total / n)
        return self.find(mass)


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al., 2016) over the rows of a replay buffer.

    Row ``i`` is drawn with ``P(i) = p_i^alpha / sum_k p_k^alpha``; a new row gets the largest
    priority seen so far, and ``update`` sets ``p_i = |td_i| + eps``. Each draw carries the
    importance weight ``w_i = (N P(i))^-beta / max_j w_j = (min_j p_j^alpha / p_i^alpha)^beta``.
    ``writes[i]`` counts the times row ``i`` was written: a TD error reported for a row that
    was overwritten since it was drawn belongs to the old transition and is dropped.

    Args:
        capacity: rows of the buffer.
        alpha: priority exponent (0 is uniform).
        eps: added to ``|td|`` so that no row's priority is 0.

    Example:
        >>> sampler = PrioritizedSampler(8)
        >>> sampler.add(np.arange(4))
        >>> index, weight = sampler.sample(2, np.random.default_rng(0), beta=0.4)
        >>> weight.tolist()
        [1.0, 1.0]

    References:
        Schaul, Quan, Antonoglou and Silver, "Prioritized Experience Replay", ICLR 2016.
    """

    _STATE = ("tree", "max_priority", "writes")

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6):
        if alpha < 0:
            raise ValueError(f"priority alpha must be >= 0, got {alpha}.")
        if eps <= 0:
            raise ValueError(f"priority eps must be > 0, got {eps}.")
        self.alpha, self.eps = float(alpha), float(eps)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0
        self.writes = np.zeros(capacity, np.int64)

    def add(self, rows) -> None:
        """New rows start at the largest priority seen, so each is replayed soon at least once."""
        rows = np.asarray(rows, np.int64)
        self.tree.update(rows, np.full(rows.shape, self.max_priority**self.alpha))
        np.add.at(self.writes, rows, 1)

    def update(self, rows, td_error, writes=None) -> None:
        """Priorities ``|td_error| + eps`` for ``rows`` (a row drawn twice keeps its last value).

        ``writes``: ``self.writes[rows]`` as it was when the rows were drawn; rows written
        again since then keep the new transition's priority.
        """
        priority = np.abs(np.asarray(td_error, np.float64)).reshape(-1) + self.eps
        if not np.all(np.isfinite(priority)):
            raise ValueError("TD errors for priorities must be finite.")
        rows = np.asarray(rows, np.int64).reshape(-1)
        if writes is not None:
            same = self.writes[rows] == np.asarray(writes).reshape(-1)
            rows, priority = rows[same], priority[same]
        self.tree.update(rows, priority**self.alpha)
        self.max_priority = max(self.max_priority, float(priority.max(initial=0.0)))

    def sample(self, n: int, rng, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows and their importance weights (float32, the largest possible weight being 1)."""
        rows = self.tree.sample(n, rng)
        return rows, self.weights(rows, beta)

    def batch_entries(self, rows, beta: float, weight=None) -> dict:
        """What a prioritized batch carries besides its transitions: the importance weights, and
        the rows with their write counts for ``update`` (``weight``: when already computed)."""
        weight = self.weights(rows, beta) if weight is None else weight
        return {"weight": weight, "tree_index": rows, "tree_writes": self.writes[rows]}

    def weights(self, rows, beta: float) -> np.ndarray:
        # (N P(i))^-beta / max_j (N P(j))^-beta: N and the total cancel, leaving (p_min / p_i)^beta.
        return ((self.tree.min / self.tree.leaves(rows)) ** float(beta)).astype(np.float32)


class NStepAccumulator:
    """Turns one-step transitions of a vector env into n-step ones, one window per env slot.

    From rewards ``r_0 .. r_{m-1}`` of one episode it emits ``reward = sum_{k<m} gamma^k r_k``,
    ``next_obs`` = the observation ``m`` steps after ``obs``, and ``discount = gamma^m`` (Sutton and
    Barto 2018, ch. 7). ``m = n``, except at an episode's end, where the window is flushed with
    ``m`` = what remains: after a termination with ``terminated=True`` (no bootstrap), after a
    truncation with ``terminated=False``, bootstrapping from the truncation's final ``next_obs``.
    Rows where ``valid`` is False (Gymnasium's NEXT_STEP autoreset steps) are not transitions.

    Args:
        n: steps per return.
        gamma: discount factor.
        num_envs: env slots.

    Example:
        >>> acc = NStepAccumulator(2, 0.5, num_envs=1)
        >>> step = dict(obs=np.zeros((1, 1)), action=np.array([0]), next_obs=np.ones((1, 1)))
        >>> acc.add(reward=np.array([1.0]), terminated=np.array([False]), truncated=np.array([False]), **step)
        >>> out = acc.add(reward=np.array([2.0]), terminated=np.array([True]), truncated=np.array([False]), **step)
        >>> out["reward"].tolist(), out["discount"].tolist(), out["terminated"].tolist()
        ([2.0, 2.0], [0.25, 0.5], [1.0, 1.0])

    References:
        Sutton and Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, ch. 7.
    """

    def __init__(self, n: int, gamma: float, num_envs: int):
        if n < 1:
            raise ValueError(f"n_step must be >= 1, got {n}.")
        self.n, self.gamma = int(n), float(gamma)
        self.reset(num_envs)

    def reset(self, num_envs: int) -> None:
        """Drops every open window (a new run resets its envs)."""
        self.windows = [[] for _ in range(int(num_envs))]

    def _emit(self, out, window, next_obs, terminated) -> None:
        """Emits the window's oldest start: its return over the (at most n) rewards from there."""
        rewards = [r for *_, r in window[: self.n]]
        obs, action, _ = window.pop(0)
        ret = sum(self.gamma**k * r for k, r in enumerate(rewards))
        out.append((obs, action, ret, next_obs, terminated, self.gamma ** len(rewards)))

    def add(self, obs, action, reward, next_obs, terminated, truncated, valid=None):
        """One vector step in; the n-step transitions it completes out (a dict of arrays, or ``None``)."""
        out = []
        rows = range(len(obs)) if valid is None else np.flatnonzero(valid)
        for i in rows:
            window = self.windows[i]
            window.append((obs[i], action[i], float(reward[i])))
            if terminated[i] or truncated[i]:
                while window:  # flush: every open start ends here
                    self._emit(out, window, next_obs[i], bool(terminated[i]))
            elif len(window) == self.n:
                self._emit(out, window, next_obs[i], False)
        if not out:
            return None
        obs_, action_, reward_, next_, term_, disc_ = zip(*out)
        return {
            "obs": np.stack(obs_),
            "action": np.asarray(action_),
            "reward": np.asarray(reward_, np.float32),
            "next_obs": np.stack(next_),
            "terminated": np.asarray(term_, np.float32),
            "discount": np.asarray(disc_, np.float32),
        }


class FrameReplayBuffer(_Saveable):
    """Replay for stacked-frame observations that stores each frame once.

    A stacked observation ``(H, W, C)`` shares ``C - 1`` frames with the next
    one, so storing ``obs`` and ``next_obs`` whole keeps every frame ``2C``
    times (56,448 bytes per 84x84x4 transition). Here frames live once in a
    uint8 ring, and each transition keeps the ring slots of its ``C`` obs frames
    and ``C`` next-obs frames; stacks are rebuilt at sample time. Within an
    episode each transition adds one new frame, so a transition costs one frame
    (7,056 bytes at 84x84) plus 49 bytes of slots, action, reward and flags.

    Episodes are tracked per vector-env slot (row ``i`` of every ``add`` batch
    is env ``i``). An episode's first ``obs`` is stored whole, whatever padding
    the frame stacker used (``FrameStackObservation`` repeats the reset frame
    by default; a frame equal to the one before it is stored once), then each
    step stores only the newest frame of ``next_obs`` when
    ``next_obs[..., :-1] == obs[..., 1:]``, and the whole stack otherwise.
    A new episode starts after ``terminated`` or ``truncated``, or whenever
    ``obs`` is not the env's last ``next_obs``, so no stack ever mixes frames
    of two episodes.

    With ``n_step > 1`` each row also holds its n-step return, as
    ``NStepAccumulator`` computes it: ``sum_{k<m} gamma^k r_k`` over the next
    ``m <= n`` rows of the same env and episode, the frame slots of the
    ``next_obs`` ``m`` steps on, whether that step terminated, and
    ``gamma^m``. A row is written at once (its frames are stored in order)
    but is sampled only once its window is complete: after ``n`` more steps of
    its env, or when its episode ends (terminated: no bootstrap; truncated or
    broken off: bootstrap from the last ``next_obs``).

    Frames are overwritten oldest first. A transition whose frames were
    overwritten is never sampled; with ``frame_capacity == capacity`` (the
    default) these are the oldest ``~1 / (episode_length + 1)`` of the
    transitions (each episode's first stack takes one frame more), about 0.1%
    for Pong or Breakout; raise ``frame_capacity`` for very short episodes.

    Args:
        capacity: number of transitions kept.
        frame_shape: ``(H, W)`` of one frame.
        stack: frames per observation ``C``.
        seed: seed of the sampling generator.
        num_envs: vector-env slots tracked (an ``add`` batch of another size
            restarts the tracking: every slot then begins a new episode).
        frame_capacity: frames kept (defaults to ``capacity``).
        dtype: frame dtype.
        n_step: steps per stored return (1: one-step transitions).
        gamma: discount of the n-step returns.

    Example:
        >>> buf = FrameReplayBuffer(1_000, frame_shape=(84, 84), stack=4)
        >>> obs = np.zeros((1, 84, 84, 4), np.uint8)
        >>> next_obs = np.ones((1, 84, 84, 4), np.uint8)
        >>> buf.add(obs, np.array([0]), np.array([1.0]), next_obs, np.array([False]))
        >>> buf.sample(2)["next_obs"].shape
        (2, 84, 84, 4)
    """

    _KIND = "frames"
    _STATE = ("frames", "frames_written", "obs_slots", "next_slots", "oldest", "action", "reward", "terminated")
    _STATE += ("position", "size", "_last_frames", "_last_obs", "_open")  # and each env's episode so far
    _STATE += ("sampler",)
    # n-step rows (None with n_step=1) and each env's window of rows still waiting for their return.
    _STATE += ("nstep_reward", "nstep_next_slots", "nstep_terminated", "discount", "ready", "_window", "_window_len")

    def __init__(
        self,
        capacity: int,
        frame_shape=(84, 84),
        stack: int = 4,
        seed: int | None = None,
        num_envs: int = 1,
        frame_capacity: int | None = None,
        dtype=np.uint8,
        priority_alpha: float | None = None,
        priority_eps: float = 1e-6,
        n_step: int = 1,
        gamma: float = 0.99,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}.")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}.")
        self.n_step, self.gamma = int(n_step), float(gamma)
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.stack = int(stack)
        # One transition may need up to 2C fresh frames (a new episode with an unshifted next_obs).
        self.frame_capacity = max(int(frame_capacity or capacity), 2 * self.stack)
        self.frames = np.zeros((self.frame_capacity, *self.frame_shape), dtype=dtype)
        self.frames_written = 0  # total frames ever written; frame k lives in slot k % frame_capacity
        # Per transition: ring slots of the obs stack and of the next-obs stack, and the
        # absolute number of its oldest frame (it is sampleable while that frame is kept).
        self.obs_slots = np.zeros((self.capacity, self.stack), dtype=np.int32)
        self.next_slots = np.zeros((self.capacity, self.stack), dtype=np.int32)
        self.oldest = np.zeros(self.capacity, dtype=np.int64)
        self.action = np.zeros(self.capacity, dtype=np.int32)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.bool_)
        self.position = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self.sampler = None if priority_alpha is None else PrioritizedSampler(capacity, priority_alpha, priority_eps)
        self.nstep_reward = self.nstep_next_slots = self.nstep_terminated = self.discount = self.ready = None
        if self.n_step > 1:
            self.nstep_reward = np.zeros(self.capacity, dtype=np.float32)
            self.nstep_next_slots = np.zeros((self.capacity, self.stack), dtype=np.int32)
            self.nstep_terminated = np.zeros(self.capacity, dtype=np.bool_)
            self.discount = np.zeros(self.capacity, dtype=np.float32)
            self.ready = np.zeros(self.capacity, dtype=np.bool_)
        self._window = self._window_len = None
        self._reset_envs(int(num_envs))

    def _reset_envs(self, num_envs: int) -> None:
        if self._window is not None:
            # The open windows end here: their rows bootstrap from their last next_obs, as at a truncation.
            for i in range(self.num_envs):
                self._flush(i, terminated=False)
        # The last next_obs of each env: its frame numbers, a copy, and whether its episode goes on.
        self.num_envs = num_envs
        self._last_frames = np.zeros((num_envs, self.stack), dtype=np.int64)
        self._last_obs = np.zeros((num_envs, *self.frame_shape, self.stack), dtype=self.frames.dtype)
        self._open = np.zeros(num_envs, dtype=bool)
        if self.n_step > 1:
            # Rows of each env's open window, oldest first (at most n_step - 1 between adds).
            self._window = np.zeros((num_envs, self.n_step), dtype=np.int64)
            self._window_len = np.zeros(num_envs, dtype=np.int64)

    def _finish(self, i: int, terminated: bool) -> None:
        """Completes the oldest row of env ``i``'s window: its return over the rows from there to the newest."""
        rows = self._window[i, : self._window_len[i]]
        first, last = rows[0], rows[-1]
        self.nstep_reward[first] = np.sum(self.gamma ** np.arange(len(rows)) * self.reward[rows])
        self.nstep_next_slots[first] = self.next_slots[last]
        self.nstep_terminated[first] = terminated
        self.discount[first] = self.gamma ** len(rows)
        self.ready[first] = True
        self._window[i, : len(rows) - 1] = rows[1:]
        self._window_len[i] -= 1

    def _flush(self, i: int, terminated: bool) -> None:
        while self._window_len[i]:
            self._finish(i, terminated)

    def _init_args(self) -> dict:
        # The current num_envs (an add of another size changes it), so the per-env arrays have the saved shapes.
        return {
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "num_envs": self.num_envs,
            "frame_capacity": self.frame_capacity,
            "dtype": self.frames.dtype.str,
            "n_step": self.n_step,
            "gamma": self.gamma,
            **_sampler_args(self.sampler),
        }

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.frames, self.obs_slots, self.next_slots, self.oldest, self.action, self.reward, self.terminated)
        arrays += (self.nstep_reward, self.nstep_next_slots, self.nstep_terminated, self.discount, self.ready)
        return int(sum(a.nbytes for a in arrays if a is not None)) + self._last_obs.nbytes

    def _write(self, frame) -> int:
        """Stores one frame; returns its absolute number."""
        number = self.frames_written
        self.frames[number % self.frame_capacity] = frame
        self.frames_written += 1
        return number

    def _write_stack(self, stack) -> np.ndarray:
        """Stores a whole ``(H, W, C)`` stack; returns its frame numbers.

        A frame equal to the one before it is stored once: the padding of a
        first stack (the reset frame repeated, or zeros) costs one frame.
        """
        numbers = np.empty(self.stack, dtype=np.int64)
        for c in range(self.stack):
            if c and np.array_equal(stack[..., c], stack[..., c - 1]):
                numbers[c] = numbers[c - 1]
            else:
                numbers[c] = self._write(stack[..., c])
        return numbers

    def _kept(self, number) -> bool:
        return number >= self.frames_written - self.frame_capacity

    def add(self, obs, action, reward, next_obs, terminated, truncated=None, valid=None) -> None:
        """Appends one transition per vector-env slot.

        Args:
            obs, next_obs: ``(n, H, W, C)`` stacked frames, channels last.
            action, reward, terminated: ``(n,)``.
            truncated: ``(n,)``; a truncated episode also ends there (optional).
            valid: ``(n,)`` bool mask of the rows that are real transitions
                (the vector-env step that only resets an env is not); all by default.
        """
        obs = np.asarray(obs)
        next_obs = np.asarray(next_obs)
        n = len(obs)
        expected = (*self.frame_shape, self.stack)
        if obs.shape[1:] != expected or next_obs.shape[1:] != expected:
            raise ValueError(
                f"FrameReplayBuffer expects (n, {', '.join(map(str, expected))}) stacked frames, "
                f"got obs {obs.shape} and next_obs {next_obs.shape}."
            )
        if n != self.num_envs:
            # Another vector env: every slot starts a new episode.
            self._reset_envs(n)
        if self.n_step > 1 and self.capacity <= 2 * self.n_step * n:
            # A row must outlive its window: at most n_step rows per env are open at once.
            raise ValueError(f"capacity {self.capacity} is too small for n_step={self.n_step} with {n} envs.")
        terminated = np.asarray(terminated, dtype=bool).reshape(n)
        done = terminated if truncated is None else terminated | np.asarray(truncated, dtype=bool).reshape(n)
        rows = range(n) if valid is None else np.flatnonzero(valid)
        for i in rows:
            # Continue the env's episode only if obs is exactly its last next_obs, still stored.
            last = self._last_frames[i]
            if not (self._open[i] and self._kept(last[0]) and np.array_equal(obs[i], self._last_obs[i])):
                last = self._write_stack(obs[i])
                if self.n_step > 1:
                    self._flush(i, terminated=False)  # the env's episode was broken off: bootstrap its open rows
            if self._shifted(obs[i], next_obs[i]):
                # The usual case: next_obs is obs shifted by one new frame.
                new = np.empty_like(last)
                new[:-1] = last[1:]
                new[-1] = self._write(next_obs[i, ..., -1])
            else:
                new = self._write_stack(next_obs[i])
            p = self.position
            if self.sampler is not None:
                self.sampler.add([p])
            self.obs_slots[p] = last % self.frame_capacity
            self.next_slots[p] = new % self.frame_capacity
            self.oldest[p] = min(last[0], new[0])
            self.action[p] = action[i]
            self.reward[p] = reward[i]
            self.terminated[p] = terminated[i]
            self.position = (p + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)
            self._last_frames[i] = new
            self._last_obs[i] = next_obs[i]
            self._open[i] = not done[i]
            if self.n_step > 1:
                self.ready[p] = False
                self._window[i, self._window_len[i]] = p
                self._window_len[i] += 1
                if done[i]:
                    self._flush(i, bool(terminated[i]))
                elif self._window_len[i] == self.n_step:
                    self._finish(i, terminated=False)

    def _shifted(self, obs, next_obs) -> bool:
        """Whether ``next_obs[..., :-1] == obs[..., 1:]`` (one ``(H, W, C)`` stack each)."""
        if self.stack == 1:
            return False
        width = self.stack * self.frames.itemsize
        if width in (2, 4, 8) and sys.byteorder == "little":
            # Each pixel's C channels read as one integer: dropping the first channel is a right
            # shift, dropping the last a mask. ~10x faster than comparing the strided channel views.
            word = np.dtype(f"u{width}")
            drop = 8 * self.frames.itemsize
            a = np.ascontiguousarray(obs).view(word)
            b = np.ascontiguousarray(next_obs).view(word)
            return bool(np.array_equal(a >> word.type(drop), b & word.type((1 << (8 * width - drop)) - 1)))
        return bool(np.array_equal(next_obs[..., :-1], obs[..., 1:]))

    def _sampleable(self, index: np.ndarray) -> np.ndarray:
        kept = self.oldest[index] >= self.frames_written - self.frame_capacity
        return kept if self.ready is None else kept & self.ready[index]

    def sample(self, batch_size: int, beta: float = 1.0) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement among those whose frames are kept.

        With a prioritized sampler they are drawn by priority instead (still only among those),
        and the batch also holds ``"weight"``, ``"tree_index"`` and ``"tree_writes"`` (see ``ReplayBuffer.sample``).

        Returns:
            ``{"obs", "next_obs"}``: ``(B, H, W, C)`` frames; ``"action"`` int32,
            ``"reward"`` and ``"terminated"`` float32, each ``(B,)``. With ``n_step > 1``
            ``reward``, ``next_obs`` and ``terminated`` are the n-step ones, and ``"discount"``
            (float32) is ``gamma^m``.
        """
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")

        def draw(n):
            return (
                self.rng.integers(0, self.size, size=n)
                if self.sampler is None
                else self.sampler.tree.sample(n, self.rng)
            )

        index = draw(batch_size)
        bad = ~self._sampleable(index)
        for _ in range(8):
            # Rejection: redraw the few transitions whose oldest frames are gone.
            if not bad.any():
                break
            index[bad] = draw(int(bad.sum()))
            bad = ~self._sampleable(index)
        if bad.any():
            candidates = np.flatnonzero(self._sampleable(np.arange(self.size)))
            if candidates.size == 0:
                raise ValueError(
                    "No transition in the replay buffer is complete with all its frames kept; raise frame_capacity."
                )
            index[bad] = self.rng.choice(candidates, size=int(bad.sum()))
        one_step = self.n_step == 1
        batch = {
            "obs": self._stacks(self.obs_slots[index]),
            "action": self.action[index],
            "reward": (self.reward if one_step else self.nstep_reward)[index],
            "next_obs": self._stacks((self.next_slots if one_step else self.nstep_next_slots)[index]),
            "terminated": (self.terminated if one_step else self.nstep_terminated)[index].astype(np.float32),
        }
        if not one_step:
            batch["discount"] = self.discount[index]
        if self.sampler is not None:
            batch.update(self.sampler.batch_entries(index, beta))
        return batch

    def _stacks(self, slots: np.ndarray) -> np.ndarray:
        """``(B, H, W, C)`` stacks from ``(B, C)`` frame slots."""
        out = np.empty((len(slots), *self.frame_shape, self.stack), dtype=self.frames.dtype)
        for c in range(self.stack):
            out[..., c] = self.frames[slots[:, c]]
        return out


class SequenceReplayBuffer(_Saveable):
    """Replay of sequences of consecutive transitions, for recurrent Q-networks (DRQN).

    Each env slot of a vector env keeps its own ring, in order, so a sampled
    sequence is ``length`` consecutive transitions of one env. A sequence may
    run past the end of an episode: ``mask`` is 0 from the transition after the
    first ``done`` on, so nothing of the next episode reaches the loss.

    ``sample`` returns ``obs`` (the first observation, ``(B, *obs_shape)``) and,
    for every field, ``(B, length, ...)`` arrays, plus ``mask``. The sequence of
    observations a recurrent net reads is ``[obs, next_obs[:, 0], next_obs[:, 1], ...]``:
    at an episode end ``next_obs`` is that episode's true last observation.

    Args:
        capacity: transitions kept in all (split evenly between envs).
        num_envs: env slots.
        length: transitions per sampled sequence.
        fields: ``{name: (shape, dtype)}`` of one transition; must include
            ``obs``, ``next_obs`` and ``done``.
        seed: seed of the sampling generator.
    """

    _KIND = "sequence"
    _STATE = ("data", "position", "sizes")

    def __init__(self, capacity: int, num_envs: int, length: int, fields: dict, seed: int | None = None):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        self.length = int(length)
        self.per_env = max(int(capacity) // int(num_envs), self.length)
        self.data = {
            name: np.zeros((num_envs, self.per_env, *shape), dtype=dtype) for name, (shape, dtype) in fields.items()
        }
        self.position = np.zeros(num_envs, np.int64)
        self.sizes = np.zeros(num_envs, np.int64)
        self.rng = np.random.default_rng(seed)

    def _init_args(self) -> dict:
        num_envs = len(self.sizes)
        # capacity = per_env * num_envs gives back per_env exactly.
        return {
            "capacity": self.per_env * num_envs,
            "num_envs": num_envs,
            "length": self.length,
            "fields": _fields(self.data, 2),
        }

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def add(self, valid, **step) -> None:
        """Writes one vector step; rows of envs where ``valid`` is False are skipped."""
        envs = np.flatnonzero(valid)
        for name, array in self.data.items():
            array[envs, self.position[envs]] = np.asarray(step[name])[envs]
        self.position[envs] = (self.position[envs] + 1) % self.per_env
        self.sizes[envs] = np.minimum(self.sizes[envs] + 1, self.per_env)

    def can_sample(self) -> bool:
        return bool((self.sizes >= self.length).any())

    def sample(self, batch_size: int) -> dict:
        starts_per_env = np.maximum(self.sizes - self.length + 1, 0)
        if starts_per_env.sum() == 0:
            raise ValueError(f"No env has stored {self.length} transitions yet.")
        # Uniform over all valid start positions of all envs.
        env = self.rng.choice(len(self.sizes), size=batch_size, p=starts_per_env / starts_per_env.sum())
        offset = self.rng.integers(0, starts_per_env[env])
        oldest = (self.position[env] - self.sizes[env]) % self.per_env
        index = (oldest + offset)[:, None] + np.arange(self.length)
        index %= self.per_env
        batch = {name: array[env[:, None], index] for name, array in self.data.items()}
        batch["obs"] = batch["obs"][:, 0]
        done = batch.pop("done").astype(np.float32)
        # mask_t = 1 while no earlier transition of the sequence ended its episode.
        batch["mask"] = np.concatenate(
            [np.ones((batch_size, 1), np.float32), np.cumprod(1.0 - done[:, :-1], axis=1)], axis=1
        ).astype(np.float32)
        return batch


def _sampler_args(sampler) -> dict:
    return {} if sampler is None else {"priority_alpha": sampler.alpha, "priority_eps": sampler.eps}


_KINDS = {cls._KIND: cls for cls in (ReplayBuffer, FrameReplayBuffer, SequenceReplayBuffer)}


def save_buffer(buffer, path) -> None:
    """Writes a replay buffer, contents and sampling state, to one ``.npz`` file.

    The file holds only arrays and strings (no pickle), so ``np.load(path, allow_pickle=False)`` reads it.

    Args:
        buffer: a ``ReplayBuffer``, ``FrameReplayBuffer`` or ``SequenceReplayBuffer``.
        path: file to write; ``np.savez`` appends ``.npz`` if the name lacks it.
    """
    args = json.dumps(buffer._init_args())
    np.savez(path, kind=np.array(buffer._KIND), args=np.array(args), **buffer._state())


def load_buffer(path):
    """Reads a buffer written by ``save_buffer``.

    Args:
        path: the ``.npz`` file.

    Returns:
        A buffer of the saved class equal to the saved one in every array, counter and generator state: its
        ``sample`` and ``add`` calls go on exactly as the saved buffer's would have.

    Raises:
        ValueError: if the file's buffer kind is unknown, or an array has the wrong shape or dtype.
    """
    with np.load(path, allow_pickle=False) as file:
        state = {key: file[key] for key in file.files}
    kind = state.pop("kind").item()
    if kind not in _KINDS:
        raise ValueError(f"Unknown replay buffer kind {kind!r} in {path}; expected one of {sorted(_KINDS)}.")
    return _KINDS[kind]._from_state(json.loads(state.pop("args").item()), state)
