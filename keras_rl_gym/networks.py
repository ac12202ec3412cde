"""Q, policy and value networks: dense, conv (the Nature DQN torso), a dueling head, a Q(s, a) critic.

Every builder returns a functional ``keras.Model``, so networks serialize with
the agent and :func:`copy_network` (``keras.models.clone_model``) makes their target copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class DuelingCombine(layers.Layer):
    """Combines a value and an advantage stream into Q-values.

    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')`` (Wang et al., 2016): the
    mean is subtracted so that V and A are identifiable.
    """

    def call(self, value, advantage):
        return value + advantage - ops.mean(advantage, axis=-1, keepdims=True)


# The Nature torso's (filters, kernel, stride); its three valid convolutions need images of at least
# 36x36 (36 -> 8 -> 3 -> 1 pixels).
_NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
_NATURE_MIN_SIZE = 36


def check_conv_shape(obs_shape: Sequence[int], who: str = "") -> None:
    """Refuses ``network='conv'`` for observations that are not HxWxC images of at least 36x36, in one line."""
    obs_shape = tuple(obs_shape)
    prefix = f"{who}: " if who else ""
    if len(obs_shape) != 3:
        raise ValueError(
            f"{prefix}network='conv' needs HxWxC image observations, got shape {obs_shape}; "
            "use network='dense' for vector observations."
        )
    if min(obs_shape[:2]) < _NATURE_MIN_SIZE:
        raise ValueError(
            f"{prefix}network='conv' (the Nature DQN torso) needs images of at least "
            f"{_NATURE_MIN_SIZE}x{_NATURE_MIN_SIZE}, got shape {obs_shape}; resize them or bring your own network."
        )


def _torso(x, network: str, hidden_sizes: Sequence[int], name: str):
    if network == "conv":
        check_conv_shape(x.shape[1:])
        # Nature DQN (Mnih et al., 2015): uint8 frames are scaled here, inside
        # the network, so the replay buffer can keep them as bytes.
        if x.dtype == "uint8":
            x = layers.Rescaling(1.0 / 255.0, name=f"{name}_scale")(x)
        for i, (filters, kernel, stride) in enumerate(_NATURE_CONVS):
            x = layers.Conv2D(filters, kernel, stride, activation="relu", name=f"{name}_conv{i}")(x)
        x = layers.Flatten(name=f"{name}_flatten")(x)
        hidden_sizes = hidden_sizes or (512,)
    elif network == "dense":
        if len(x.shape) > 2:
            x = layers.Flatten(name=f"{name}_flatten")(x)
        if x.dtype != "float32":
            x = layers.Identity(dtype="float32", name=f"{name}_cast")(x)
    else:
        raise ValueError(f"Unknown network {network!r}: expected 'dense' or 'conv'.")
    for i, units in enumerate(hidden_sizes):
        x = layers.Dense(units, activation="relu", name=f"{name}_dense{i}")(x)
    return x


def q_network(
    obs_shape: Sequence[int],
    n_actions: int,
    *,
    network: str = "dense",
    hidden_sizes: Sequence[int] = (64, 64),
    dueling: bool = False,
    obs_dtype: str = "float32",
    name: str = "q_network",
) -> keras.Model:
    """Builds a Q-network mapping observations to one value per action.

    Args:
        obs_shape: shape of one observation.
        n_actions: number of discrete actions.
        network: ``"dense"`` (an MLP) or ``"conv"`` (the Nature DQN torso).
        hidden_sizes: widths of the dense layers after the torso.
        dueling: split the head into value and advantage streams.
        obs_dtype: dtype of the observations (``"uint8"`` frames are scaled by 1/255).
        name: model name.
    """
    inputs = keras.Input(shape=tuple(obs_shape), dtype=obs_dtype, name=f"{name}_obs")
    hidden = _torso(inputs, network, hidden_sizes, name)
    return keras.Model(inputs, _q_head(hidden, n_actions, dueling, name), name=name)


def _q_head(x, n_actions: int, dueling: bool, name: str):
    """One Q-value per action from features ``x``: a linear layer, or dueling value and advantage streams."""
    if dueling:
        value = layers.Dense(1, name=f"{name}_value")(x)
        advantage = layers.Dense(n_actions, name=f"{name}_advantage")(x)
        return DuelingCombine(name=f"{name}_dueling")(value, advantage)
    return layers.Dense(n_actions, name=f"{name}_q")(x)


def recurrent_q_network(
    obs_shape: Sequence[int],
    n_actions: int,
    *,
    hidden_sizes: Sequence[int] = (64,),
    lstm_size: int = 64,
    dueling: bool = False,
    obs_dtype: str = "float32",
    name: str = "q_network",
) -> keras.Model:
    """A recurrent Q-network (DRQN, Hausknecht and Stone, 2015): dense layers, an LSTM, a Q head.

    Inputs ``[obs_sequence (batch, time, *obs_shape), h (batch, lstm_size), c (batch, lstm_size)]``;
    outputs ``[q_sequence (batch, time, n_actions), h, c]``. Acting feeds one step
    (``time=1``) with the carried state; training feeds whole sequences.
    """
    obs = keras.Input(shape=(None, *obs_shape), dtype=obs_dtype, name=f"{name}_obs")
    h0 = keras.Input(shape=(lstm_size,), name=f"{name}_h")
    c0 = keras.Input(shape=(lstm_size,), name=f"{name}_c")
    x = obs
    if x.dtype == "uint8":  # bytes (Atari RAM): scaled to [0, 1]
        x = layers.Rescaling(1.0 / 255.0, name=f"{name}_scale")(x)
    elif x.dtype != "float32":
        x = layers.Identity(dtype="float32", name=f"{name}_cast")(x)
    if len(obs_shape) > 1:
        x = layers.Reshape((-1, int(np.prod(obs_shape))), name=f"{name}_flatten")(x)
    for i, units in enumerate(hidden_sizes):
        x = layers.Dense(units, activation="relu", name=f"{name}_dense{i}")(x)
    x, h, c = layers.LSTM(lstm_size, return_sequences=True, return_state=True, name=f"{name}_lstm")(
        x, initial_state=[h0, c0]
    )
    return keras.Model([obs, h0, c0], [_q_head(x, n_actions, dueling, name), h, c], name=name)


def mlp(
    input_shape: Sequence[int],
    hidden_sizes: Sequence[int],
    output_size: int,
    *,
    output_activation=None,
    obs_dtype: str = "float32",
    network: str = "dense",
    name: str = "mlp",
) -> keras.Model:
    """Builds a network with ``hidden_sizes`` ReLU layers and a linear (or given) output."""
    inputs = keras.Input(shape=tuple(input_shape), dtype=obs_dtype, name=f"{name}_input")
    hidden = _torso(inputs, network, hidden_sizes, name)
    outputs = layers.Dense(output_size, activation=output_activation, name=f"{name}_out")(hidden)
    return keras.Model(inputs, outputs, name=name)


def state_action_value(
    obs_shape: Sequence[int],
    action_dim: int,
    hidden_sizes: Sequence[int] = (64, 64),
    *,
    obs_dtype: str = "float32",
    name: str = "critic",
) -> keras.Model:
    """Builds a critic ``Q(s, a)``: observation and action in, one value out.

    The (flattened) observation and the action vector are concatenated and
    go through ``hidden_sizes`` ReLU layers to a linear output of shape ``(batch, 1)``.

    Args:
        obs_shape: shape of one observation.
        action_dim: length of the action vector.
        hidden_sizes: widths of the dense layers.
        obs_dtype: dtype of the observations.
        name: model name.
    """
    obs = keras.Input(shape=tuple(obs_shape), dtype=obs_dtype, name=f"{name}_obs")
    action = keras.Input(shape=(int(action_dim),), dtype="float32", name=f"{name}_action")
    x = layers.Concatenate(name=f"{name}_concat")([_torso(obs, "dense", (), name), action])
    for i, units in enumerate(hidden_sizes):
        x = layers.Dense(units, activation="relu", name=f"{name}_dense{i}")(x)
    q = layers.Dense(1, name=f"{name}_q")(x)
    return keras.Model([obs, action], q, name=name)


def update_target(target: keras.Model, online: keras.Model, tau: float) -> None:
    """Moves ``target``'s weights toward ``online``'s: ``target <- tau * online + (1 - tau) * target``.

    ``tau=1`` is the hard copy. Uses ``variable.assign``, so it runs inside the
    backends' compiled target updates.
    """
    for t, o in zip(target.weights, online.weights):
        t.assign(o if tau == 1.0 else t + tau * (o - t))


def _copy_layer(layer: layers.Layer) -> layers.Layer:
    """A new layer like ``layer`` (fresh weights): from its config, a ``Lambda`` with its own function object.

    A ``Lambda``'s config holds its function as bytecode, which Keras's safe mode
    refuses to load, and which would lose the module globals the function reads.
    The model being copied is a live object of this process (the user's own), so
    the copy takes the function itself: no code is deserialized, and safe mode
    stays on for everything else (files above all).
    """
    if isinstance(layer, layers.Lambda):
        config = layer.get_config()
        # output_shape may be a function too: the live one (None when Keras infers it).
        config.update(
            function=layer.function,
            output_shape=getattr(layer, "_output_shape", None),
            mask=layer.mask,
            arguments=layer.arguments,
        )
        return type(layer)(**config)
    return layer.__class__.from_config(layer.get_config())


def copy_network(model: keras.Model) -> keras.Model:
    """``keras.models.clone_model(model)`` (same architecture, fresh weights) for a model of this process.

    Layers are rebuilt from their configs, in nested models too, except a
    ``Lambda``, which keeps its live function (see ``_copy_layer``).
    """
    return keras.models.clone_model(model, clone_function=_copy_layer, recursive=True)


def target_copy(model: keras.Model, name: str | None = None) -> keras.Model:
    """A frozen copy of ``model`` with the same weights: a target network.

    ``trainable = False`` makes its weights non-trainable variables of the
    agent, so no optimizer ever sees them and no gradient reaches them.
    """
    target = copy_network(model)
    target.name = name or f"{model.name}_target"
    target.set_weights(model.get_weights())
    target.trainable = False
    return target


def user_network(spec, observation_space, action_space, *, inputs, output_shape, role: str, agent: str) -> keras.Model:
    """A network the user brings for ``role``, checked against what the agent feeds it and needs from it.

    Args:
        spec: a ``keras.Model``, or a function ``(observation_space, action_space) -> keras.Model``.
        observation_space, action_space: the agent's spaces, given to a function ``spec``.
        inputs: ``[(shape, dtype), ...]``, one per input of the network (per example, no batch axis).
        output_shape: the output's shape per example that the agent reads (a list of them for several outputs).
        role: the agent's argument that took it (``"network"``, ``"critic_network"``...), for errors.
        agent: the agent's class name, for errors.

    Raises:
        TypeError: ``spec`` is neither a model nor a function returning one.
        ValueError: the model does not take the inputs, or gives another output shape.
    """
    model = spec if isinstance(spec, keras.Model) else spec(observation_space, action_space) if callable(spec) else spec
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{agent}: {role} must be a network kind, a keras.Model or a function "
            f"(observation_space, action_space) -> keras.Model; got {type(model).__name__}."
        )
    # A batch of two zero examples: the check builds the model, as the agent's first step would.
    batch = [np.zeros((2, *shape), dtype) for shape, dtype in inputs]
    expected = ", ".join(f"{tuple(shape)} {np.dtype(dtype).name}" for shape, dtype in inputs)
    try:
        out = model(batch[0] if len(batch) == 1 else batch)
    except Exception as error:  # noqa: BLE001 - any failure here means the model does not fit the spaces
        raise ValueError(
            f"{agent}: {role} {model.name!r} cannot take this agent's input(s) [{expected}] per example: {error}"
        ) from None
    # One output shape, or a list of them for a network of several outputs (DRQN's q, h, c).
    several = isinstance(output_shape, list)
    outs = list(out) if several and isinstance(out, (list, tuple)) else [out]
    got = [tuple(getattr(o, "shape", ()))[1:] for o in outs]
    wanted = [tuple(o) for o in output_shape] if several else [tuple(output_shape)]
    if got != wanted:
        show = (lambda shapes: shapes if several else shapes[0]) if len(got) == len(wanted) else (lambda x: x)
        raise ValueError(
            f"{agent}: {role} {model.name!r} outputs shape {show(got)} per example for input(s) [{expected}]; "
            f"{agent} needs {show(wanted)} (action space {action_space})."
        )
    return model
