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
            elif name in state:
                setattr(buffer, name, restored(name, current))
        buffer.rng.bit_generator.state = json.loads(state["rng"].item())
        return buffer


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
    _STATE = ("data", "position", "size", "_random", "_next", "written")

    def __init__(self, capacity: int, fields: dict, seed: int | None = None):
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

    def _init_args(self) -> dict:
        # No seed: the saved generator state replaces the seeded one.
        return {"capacity": self.capacity, "fields": _fields(self.data, 1)}

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
        self.position = (start + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.written += n

    def sample(self, batch_size: int) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement."""
        index = self.sample_index(batch_size)
        return {name: array.take(index, axis=0) for name, array in self.data.items()}

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

    def __init__(
        self,
        capacity: int,
        frame_shape=(84, 84),
        stack: int = 4,
        seed: int | None = None,
        num_envs: int = 1,
        frame_capacity: int | None = None,
        dtype=np.uint8,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}.")
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
        self._reset_envs(int(num_envs))

    def _reset_envs(self, num_envs: int) -> None:
        # The last next_obs of each env: its frame numbers, a copy, and whether its episode goes on.
        self.num_envs = num_envs
        self._last_frames = np.zeros((num_envs, self.stack), dtype=np.int64)
        self._last_obs = np.zeros((num_envs, *self.frame_shape, self.stack), dtype=self.frames.dtype)
        self._open = np.zeros(num_envs, dtype=bool)

    def _init_args(self) -> dict:
        # The current num_envs (an add of another size changes it), so the per-env arrays have the saved shapes.
        return {
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "num_envs": self.num_envs,
            "frame_capacity": self.frame_capacity,
            "dtype": self.frames.dtype.str,
        }

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.frames, self.obs_slots, self.next_slots, self.oldest, self.action, self.reward, self.terminated)
        return int(sum(a.nbytes for a in arrays)) + self._last_obs.nbytes

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
        terminated = np.asarray(terminated, dtype=bool).reshape(n)
        done = terminated if truncated is None else terminated | np.asarray(truncated, dtype=bool).reshape(n)
        rows = range(n) if valid is None else np.flatnonzero(valid)
        for i in rows:
            # Continue the env's episode only if obs is exactly its last next_obs, still stored.
            last = self._last_frames[i]
            if not (self._open[i] and self._kept(last[0]) and np.array_equal(obs[i], self._last_obs[i])):
                last = self._write_stack(obs[i])
            if self._shifted(obs[i], next_obs[i]):
                # The usual case: next_obs is obs shifted by one new frame.
                new = np.empty_like(last)
                new[:-1] = last[1:]
                new[-1] = self._write(next_obs[i, ..., -1])
            else:
                new = self._write_stack(next_obs[i])
            p = self.position
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
        return self.oldest[index] >= self.frames_written - self.frame_capacity

    def sample(self, batch_size: int) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement among those whose frames are kept.

        Returns:
            ``{"obs", "next_obs"}``: ``(B, H, W, C)`` frames; ``"action"`` int32,
            ``"reward"`` and ``"terminated"`` float32, each ``(B,)``.
        """
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        index = self.rng.integers(0, self.size, size=batch_size)
        bad = ~self._sampleable(index)
        for _ in range(8):
            # Rejection: redraw the few transitions whose oldest frames are gone.
            if not bad.any():
                break
            index[bad] = self.rng.integers(0, self.size, size=int(bad.sum()))
            bad = ~self._sampleable(index)
        if bad.any():
            candidates = np.flatnonzero(self._sampleable(np.arange(self.size)))
            if candidates.size == 0:
                raise ValueError("No transition in the replay buffer still has all its frames; raise frame_capacity.")
            index[bad] = self.rng.choice(candidates, size=int(bad.sum()))
        return {
            "obs": self._stacks(self.obs_slots[index]),
            "action": self.action[index],
            "reward": self.reward[index],
            "next_obs": self._stacks(self.next_slots[index]),
            "terminated": self.terminated[index].astype(np.float32),
        }

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
