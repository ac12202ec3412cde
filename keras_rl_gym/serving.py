"""Export and MLflow serving of an agent's greedy policy: observations in, the env's actions out.

Both build on ``Agent.greedy_graph`` (the argmax and a ``Discrete`` space's
``start``, the scaling of a tanh to ``Box`` bounds, any observation
normalization), so an exported or served policy acts exactly as ``agent.act``.

* :func:`export_policy` (``agent.export``): a TF SavedModel or an ONNX file, through Keras's own export.
* :func:`log_model`: an MLflow pyfunc model (:class:`AgentModel`) that ``mlflow.pyfunc.load_model``
  loads and ``mlflow models serve`` serves in a process that never imported keras-rl-gym.

This module imports neither Keras nor a backend when it is imported: a logged model's code
imports it, and :class:`AgentModel` picks the Keras backend before Keras is imported.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import sys
import tempfile

import mlflow.pyfunc
import numpy as np

FORMATS = ("tf_saved_model", "onnx")

# The package each backend's ONNX export runs through (Keras imports it when exporting).
_ONNX_CONVERTERS = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnx"}


def export_policy(agent, filepath, format: str = "tf_saved_model", verbose: bool | None = None, **kwargs) -> None:
    """Exports ``agent``'s greedy policy (observations in, the env's actions out) with Keras's ``Model.export``.

    What is exported is :func:`greedy_policy`: a small ``keras.Model`` calling
    ``agent.greedy_graph``, so the argmax (plus a ``Discrete`` space's ``start``),
    the scaling of a tanh to the ``Box`` action bounds and any observation
    normalization are in the artifact, not only the network. Its input is a batch
    of observations of any size, in the observation space's shape and dtype; its
    output the actions as ``agent.act`` gives them (int for ``Discrete``, the
    action space's dtype for ``Box``).

    What each backend exports, measured with Keras 3.15, TensorFlow 2.21, JAX 0.10,
    torch 2.13 (CPU), tf2onnx 1.17, jax2onnx 0.17, onnx 1.23, ONNX Runtime 1.32:

    ==============  =======================  ========================  ==============================
    format          tensorflow               jax                       torch
    ==============  =======================  ========================  ==============================
    tf_saved_model  yes                      yes (jax2tf)              raises NotImplementedError
    onnx            yes (needs ``tf2onnx``)  yes (needs ``jax2onnx``)  yes (``torch.onnx``, ``onnx``)
    ==============  =======================  ========================  ==============================

    On torch, Keras builds a SavedModel only through ``torch_xla`` (and its
    ``torch.export`` of a dynamic batch fails): export ONNX there, or load the
    ``.keras`` agent on the tensorflow or jax backend and export it from there.

    Args:
        agent: a trained ``keras_rl_gym`` agent (any but ``DRQNAgent``, whose policy carries an LSTM state).
        filepath: where to write: a folder for ``"tf_saved_model"``, a ``.onnx`` file for ``"onnx"``.
        format: ``"tf_saved_model"`` or ``"onnx"``, as Keras names them.
        verbose: Keras's: print where the artifact was written (``None``: Keras's default).
        **kwargs: passed on to ``keras.Model.export`` (``opset_version``, ``input_signature``...).

    Raises:
        ValueError: ``format`` is neither of the two.
        NotImplementedError: the agent has no stateless policy (DRQN), or the backend cannot export ``format``.
        ImportError: the converter ONNX export needs on this backend is not installed.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> agent.export("policy.onnx", format="onnx", verbose=False)
        >>> import onnxruntime
        >>> session = onnxruntime.InferenceSession("policy.onnx")
        >>> obs = np.stack([env.observation_space.sample() for _ in range(8)])
        >>> actions = session.run(None, {"observations": obs})[0]
        >>> bool((actions == agent.act(obs)).all())
        True
    """
    import keras

    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}: {type(agent).__name__}.export takes one of {FORMATS}.")
    policy = greedy_policy(agent)
    backend = keras.backend.backend()
    if format == "tf_saved_model" and backend == "torch":
        raise NotImplementedError(
            "format='tf_saved_model' is not exported on the torch backend (Keras converts torch to a SavedModel "
            "only through torch_xla): export format='onnx' on torch, or load the .keras agent with "
            "KERAS_BACKEND=tensorflow or jax and export the SavedModel there."
        )
    if format == "onnx" and importlib.util.find_spec(_ONNX_CONVERTERS[backend]) is None:
        raise ImportError(
            f"ONNX export on the {backend} backend runs through {_ONNX_CONVERTERS[backend]}, which is not "
            f"installed: pip install {_ONNX_CONVERTERS[backend]}."
        )
    space = agent.observation_space
    # A batch of any size; an ONNX file names its input "observations" on every backend.
    kwargs.setdefault(
        "input_signature", [keras.InputSpec(shape=(None, *space.shape), dtype=str(space.dtype), name="observations")]
    )
    policy.export(os.fspath(filepath), format=format, verbose=verbose, **kwargs)


def greedy_policy(agent):
    """``agent``'s greedy policy as a ``keras.Model``, called once: observations in, the env's actions out.

    Keras exports only a model that has been called, and an agent that never was
    (or whose ``call`` gives Q-values, not actions) is not that model: this one
    calls ``agent.greedy_graph`` and tracks the agent's variables (the agent is its
    sublayer), so it exports and serves what ``agent.act(obs)`` computes.

    Raises:
        NotImplementedError: the agent has no stateless greedy policy (``DRQNAgent``).

    Example:
        >>> import keras
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> policy = greedy_policy(agent)
        >>> obs = np.stack([env.observation_space.sample() for _ in range(4)])
        >>> bool((keras.ops.convert_to_numpy(policy(obs)) == agent.act(obs)).all())
        True
    """
    agent.sync_weights()  # a JAX fit holds the newest weights outside the Keras variables
    sample = _samples(agent.observation_space, 2)
    # Directly, not through a model's __call__ (which would add lines to the message): DRQN raises here.
    agent.greedy_graph(sample)
    policy = _greedy_policy_class()(agent)
    policy(sample)
    return policy


def _samples(space, n: int) -> np.ndarray:
    """``n`` observations from ``space``, from a copy: the space's own random stream (the user's) is left alone."""
    space = copy.deepcopy(space)
    return np.stack([space.sample() for _ in range(n)])


@functools.cache
def _greedy_policy_class():
    # Defined on first use: this module must not import Keras when it is imported (see the module docstring).
    import keras

    class GreedyPolicy(keras.Model):
        def __init__(self, agent, **kwargs):
            super().__init__(name=f"{agent.name}_greedy_policy", **kwargs)
            self.agent = agent

        def call(self, obs):
            return self.agent.greedy_graph(obs)

    return GreedyPolicy


# -- MLflow ---------------------------------------------------------------------------------


class AgentModel(mlflow.pyfunc.PythonModel):
    """An agent as an MLflow pyfunc model: a batch of observations in, the greedy actions out.

    ``predict`` takes a NumPy array (or a pandas DataFrame) of observations, each
    flattened to one row, in the observation space's dtype: what ``mlflow models
    serve`` makes of a JSON ``inputs`` or ``dataframe_split`` request. It returns
    what ``agent.act`` gives: int64 actions for ``Discrete``, an ``(n, *action_shape)``
    array for ``Box``; with ``params={"output": "values"}``, the network outputs
    instead (Q-values or logits: Keras's ``agent.predict``). The agent is loaded
    from the model's ``agent`` artifact (a ``.keras`` file), with the Keras backend
    named by the model config's ``keras_backend`` unless ``KERAS_BACKEND`` is set.
    Log one with :func:`log_model`.
    """

    OUTPUTS = ("actions", "values")

    def load_context(self, context):
        # Before the first import of Keras, which reads it; a process that imported Keras keeps its backend.
        backend = (context.model_config or {}).get("keras_backend")
        if backend:
            os.environ.setdefault("KERAS_BACKEND", backend)
        import keras

        import keras_rl_gym.agents  # noqa: F401 - registers the agent classes with keras.saving

        self.agent = keras.saving.load_model(context.artifacts["agent"])
        self.policy = greedy_policy(self.agent)

    # np.ndarray is the input MLflow hands over under the tensor signature of log_model (it turns a
    # DataFrame into one), and a hint MLflow takes as is, without inferring a schema from it.
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        import gymnasium as gym
        import keras

        output = (params or {}).get("output", "actions")
        if output not in self.OUTPUTS:
            raise ValueError(f"params['output'] must be one of {self.OUTPUTS}, got {output!r}.")
        obs = observations(self.agent.observation_space, model_input)
        if output == "values":
            return np.asarray(self.agent.predict(obs, verbose=0))
        actions = keras.ops.convert_to_numpy(self.policy(obs))
        # int64 whatever the backend's argmax gives (JAX: int32), as the signature declares.
        return actions.astype(np.int64) if isinstance(self.agent.action_space, gym.spaces.Discrete) else actions


# The model's code, as MLflow's "models from code" takes it (no pickled object to trust): it makes the model.
_MODEL_CODE = """\
# keras-rl-gym's MLflow model: the agent is the model's "agent" artifact, loaded by AgentModel.load_context.
import mlflow

from keras_rl_gym.serving import AgentModel

mlflow.models.set_model(AgentModel())
"""


def observations(space, model_input) -> np.ndarray:
    """A batch of flattened observations (NumPy array, DataFrame or nested list) as ``space`` shapes them.

    Example:
        >>> import gymnasium as gym
        >>> observations(gym.spaces.Box(0, 1, (2, 2)), [[0, 1, 2, 3]]).shape
        (1, 2, 2)
    """
    values = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    size = int(np.prod(space.shape))
    if values.size % max(size, 1) or (values.ndim > 1 and values[0].size != size):
        raise ValueError(
            f"Expected observations of {size} values each (the observation space {space}, flattened), "
            f"got an input of shape {values.shape}."
        )
    return values.reshape(-1, *space.shape).astype(space.dtype, copy=False)


def signature(agent):
    """The MLflow signature of :func:`log_model`'s model: flattened observations in, actions out, ``output`` param."""
    import gymnasium as gym
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    obs, act = agent.observation_space, agent.action_space
    if isinstance(act, gym.spaces.Discrete):
        actions = TensorSpec(np.dtype(np.int64), (-1,))
    else:
        actions = TensorSpec(np.dtype(act.dtype), (-1, *act.shape))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(obs.dtype), (-1, int(np.prod(obs.shape))))]),
        outputs=Schema([actions]),
        # Declared, so that `mlflow models serve` takes {"params": {"output": "values"}} in a request.
        params=ParamSchema([ParamSpec("output", "string", "actions")]),
    )


def requirements() -> list[str]:
    """What the logged model needs pip to install: its packages at the versions installed here.

    Keras, the backend's package, Gymnasium, NumPy and MLflow; keras-rl-gym itself
    travels as the model's code, so no pin of it has to resolve on an index. A local
    version label is dropped (``torch 2.13.0+cpu`` gives ``torch==2.13.0``, which PyPI resolves).
    """
    from importlib import metadata

    import keras

    backend = {"tensorflow": ["tensorflow-cpu", "tensorflow"], "jax": ["jax"], "torch": ["torch"]}
    wanted = [["keras"], backend[keras.backend.backend()], ["gymnasium"], ["numpy"], ["mlflow"]]
    pins = []
    for names in wanted:
        for name in names:  # the first of these that is installed
            try:
                pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pins


def log_model(agent, name: str = "model", **kwargs):
    """Logs ``agent`` to the active MLflow run as a pyfunc model serving its greedy actions (:class:`AgentModel`).

    The model is an MLflow "model from code" (a three-line script making an
    :class:`AgentModel`; nothing pickled) with the agent as a ``.keras`` artifact,
    the keras-rl-gym package as its ``code_paths`` (a process or ``mlflow models
    serve`` loads it without keras-rl-gym installed), the Keras backend in its
    model config, :func:`requirements` as its pip requirements, a signature
    (flattened observations in, actions out, an ``output`` param) and an input
    example. ``MLflowLogger`` calls this at the end of ``fit``.

    Args:
        agent: a ``keras_rl_gym`` agent, any but ``DRQNAgent``.
        name: the model's name in the run: load it as ``runs:/<run_id>/<name>``.
        **kwargs: passed on to ``mlflow.pyfunc.log_model`` (``registered_model_name``...).

    Returns:
        MLflow's ``ModelInfo`` of the logged model.

    Raises:
        NotImplementedError: the agent has no stateless policy to serve (``DRQNAgent``).

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> with mlflow.start_run() as run:
        ...     info = log_model(agent)
        >>> model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        >>> obs = np.stack([env.observation_space.sample() for _ in range(4)])
        >>> bool((model.predict(obs) == agent.act(obs)).all())
        True
        >>> q_values = model.predict(obs, params={"output": "values"})
    """
    import keras

    import keras_rl_gym

    greedy_policy(agent)  # DRQN refuses here, before anything is logged
    example = _samples(agent.observation_space, 2).reshape(2, -1)
    model_config = {"keras_backend": keras.backend.backend(), **kwargs.pop("model_config", {})}
    with tempfile.TemporaryDirectory(prefix="keras-rl-gym-model-") as folder:
        path = os.path.join(folder, "agent.keras")
        agent.save(path)
        code = os.path.join(folder, "keras_rl_gym")
        shutil.copytree(os.path.dirname(keras_rl_gym.__file__), code, ignore=shutil.ignore_patterns("__pycache__"))
        model_code = os.path.join(folder, "agent_model.py")
        with open(model_code, "w") as f:
            f.write(_MODEL_CODE)
        # MLflow checks the input example by loading the model here, which puts its (temporary) code
        # folder in front of sys.path for good: this process keeps the keras-rl-gym it has.
        sys_path = list(sys.path)
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=model_code,
                artifacts={"agent": path},
                code_paths=[code],
                model_config=model_config,
                pip_requirements=requirements(),
                signature=signature(agent),
                input_example=example,
                **kwargs,
            )
        finally:
            sys.path[:] = sys_path
