"""Run configs: JSON or YAML files naming an env, its wrappers, an agent and a training budget.

The shape follows the tutorial repository's configs (env name, wrappers with
params, policy params, train params), with this package's names::

    {
      "algo": "qlearning",
      "env": "CartPole-v1",
      "env_kwargs": {},
      "num_envs": 1,
      "vectorization_mode": "sync",
      "wrappers": [["DiscretizeObservation", {"n_bins": 8, "low": [-2.4, -2, -0.4, -3.5], "high": [2.4, 2, 0.4, 3.5]}]],
      "agent": {"alpha": 0.5, "alpha_decay": 0.998},
      "train": {"steps": 50000, "seed": 0, "eval_episodes": 10}
    }

Every key is checked: a typo fails at once with an error that names it, and so
does a value that would otherwise fail only after training (``eval_episodes: 0``).
Each ``agent`` value is checked against the type its constructor argument is
annotated with (``"double": "false"`` is not a bool), and an env id that does
not exist, or an agent that cannot handle the env's spaces, is a
:class:`ConfigError` too: the CLI reports each in one line and exits 2.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import numbers
import os
import re
import warnings
from pathlib import Path

import gymnasium as gym

# Algorithm name -> "module:Class". Strings, so that reading a config does not import Keras.
ALGORITHMS = {
    "qlearning": "keras_rl_gym.agents.qlearning:QLearningAgent",
    "dqn": "keras_rl_gym.agents.dqn:DQNAgent",
    "drqn": "keras_rl_gym.agents.drqn:DRQNAgent",
    "reinforce": "keras_rl_gym.agents.reinforce:ReinforceAgent",
    "actor_critic": "keras_rl_gym.agents.actor_critic:ActorCriticAgent",
    "a2c": "keras_rl_gym.agents.actor_critic:ActorCriticAgent",
    "ppo": "keras_rl_gym.agents.ppo:PPOAgent",
    "ddpg": "keras_rl_gym.agents.ddpg:DDPGAgent",
    "td3": "keras_rl_gym.agents.td3:TD3Agent",
    "sac": "keras_rl_gym.agents.sac:SACAgent",
}

# The action spaces each algorithm takes (checked against the agents by tests/test_cli.py).
ALGORITHM_SPACES = {
    "qlearning": "Discrete (with Discrete observations: discretize Box ones)",
    "dqn": "Discrete",
    "drqn": "Discrete",
    "reinforce": "Discrete, Box",
    "actor_critic": "Discrete, Box",
    "a2c": "Discrete, Box",
    "ppo": "Discrete, Box",
    "ddpg": "Box",
    "td3": "Box",
    "sac": "Box",
}

# Wrapper name -> "module:callable(env, **params)"; Gymnasium's own wrappers by their names.
WRAPPERS = {
    "TimeLimit": "gymnasium.wrappers:TimeLimit",
    "ClipReward": "gymnasium.wrappers:ClipReward",
    "RecordEpisodeStatistics": "gymnasium.wrappers:RecordEpisodeStatistics",
    "FlattenObservation": "gymnasium.wrappers:FlattenObservation",
    "RemoveVelocity": "keras_rl_gym.wrappers.partial:RemoveVelocity",
    "DiscretizeObservation": "keras_rl_gym.wrappers.discretize:discretize_observation",
    # The tutorial's name for the same wrapper.
    "DiscretizedObservationWrapper": "keras_rl_gym.wrappers.discretize:discretize_observation",
}

# Env factories that replace gymnasium.make for a whole family (e.g. Atari): "module:callable(env_id, **kwargs)".
ENV_FACTORIES = {
    "atari": "keras_rl_gym.wrappers.atari:make_atari_env",
    "atari_ram": "keras_rl_gym.wrappers.atari:make_atari_ram_env",
}

TOP_LEVEL_KEYS = {
    "description",
    "algo",
    "env",
    "env_kwargs",
    "env_factory",
    "num_envs",
    "vectorization_mode",
    "wrappers",
    "agent",
    "train",
    "name",
}
TRAIN_KEYS = {
    "steps",
    "seed",
    "log_every",
    "eval_episodes",
    "mlflow",
    "experiment",
    "run_name",
    "save_path",
    "system_metrics",
}
# What makes a config's env: saved with a trained agent, so that evaluation rebuilds the same chain.
ENV_KEYS = ("env", "env_kwargs", "env_factory", "num_envs", "vectorization_mode", "wrappers")


class ConfigError(ValueError):
    """A run config names an unknown key, algorithm or wrapper, lacks a required one or has a bad value;
    or the agent to resume from does not fit it."""


def _load_object(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _unknown(keys, allowed, where: str) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ConfigError(f"Unknown {where} key(s) {unknown}. Allowed: {sorted(allowed)}.")


def algorithm_name(cls) -> str:
    """The name an agent class is registered under (``DQNAgent`` -> ``dqn``); its class name otherwise."""
    path = f"{cls.__module__}:{cls.__name__}"
    return next((name for name, spec in ALGORITHMS.items() if spec == path), cls.__name__)


def agent_class(algo: str):
    """The agent class registered under ``algo``."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"Unknown algo {algo!r}. Available: {sorted(ALGORITHMS)}.")
    return _load_object(ALGORITHMS[algo])


def agent_annotations(cls) -> dict[str, object]:
    """The keyword arguments an agent class accepts (besides the spaces), each with its annotation or ``None``.

    The most derived class's annotation wins (``PPOAgent``'s ``learning_rate``, not ``PolicyAgent``'s).
    """
    annotations = {}
    for klass in cls.__mro__:
        if klass.__module__.startswith("keras."):
            break
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self" and name not in annotations:
                annotations[name] = None if p.annotation is p.empty else p.annotation
    for name in ("observation_space", "action_space", *getattr(cls, "_derived_hyperparameters", ())):
        annotations.pop(name, None)
    annotations.setdefault("name", None)  # keras.Model's
    return annotations


def agent_parameters(cls) -> set[str]:
    """The keyword arguments an agent class accepts (besides the spaces)."""
    return set(agent_annotations(cls))


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def _is_int(value) -> bool:
    # bool is an int in Python, but `batch_size: true` is a mistake; NumPy integers are fine.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_float(value) -> bool:
    # An int is a fine float (`learning_rate: 1`), a bool is not (np.bool_ is no numbers.Real either).
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_str(value) -> bool:
    return isinstance(value, str)


# The simple annotation forms checked: name -> (check, what a config must give).
_SCALARS = {
    "bool": (_is_bool, "true or false"),
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a number"),
    "str": (_is_str, "a string"),
    "None": (lambda value: value is None, "null"),
    # Found by class name: this module must not import Keras.
    "LearningRateSchedule": (
        lambda value: any(k.__name__ == "LearningRateSchedule" for k in type(value).__mro__),
        "a keras.optimizers.schedules.LearningRateSchedule",
    ),
    "Model": (lambda value: any(k.__name__ == "Model" for k in type(value).__mro__), "a keras.Model"),
    "Callable": (callable, "a function"),
}
_SEQUENCE = re.compile(r"^(?:Sequence|list|tuple|List|Tuple)\[(\w+)(?:, \.\.\.)?\]$")
_PLURAL = {"bool": "booleans", "int": "integers", "float": "numbers", "str": "strings"}
# PyYAML (YAML 1.1) reads `1e-3` as a string; `1.0e-3` is a float.
_YAML_EXPONENT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


def _annotation_text(annotation) -> str:
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return re.sub(r"\b(?:typing|collections\.abc|builtins|keras\.optimizers\.schedules|keras)\.", "", text).strip()


def _parse_annotation(text: str):
    """``[(check, description), ...]`` for a simple annotation (one of them must hold), or ``None`` for any other."""
    optional = re.fullmatch(r"Optional\[(.+)\]", text)
    parts = [optional.group(1), "None"] if optional else [part.strip() for part in text.split("|")]
    alternatives = []
    for part in parts:
        if part in _SCALARS:
            alternatives.append(_SCALARS[part])
            continue
        sequence = _SEQUENCE.match(part)
        if not sequence or sequence.group(1) not in _PLURAL:
            return None  # not a simple form (a dict, a callable, a class...): unchecked
        item = _SCALARS[sequence.group(1)][0]

        def is_sequence(value, item=item) -> bool:
            # A string is a sequence in Python, but `hidden_sizes: "64"` is a mistake.
            return isinstance(value, (list, tuple)) and all(item(v) for v in value)

        alternatives.append((is_sequence, f"a list of {_PLURAL[sequence.group(1)]}"))
    return alternatives


def check_type(key: str, value, annotation) -> None:
    """Raises a one-line :class:`ConfigError` when ``value`` does not fit ``annotation``.

    The simple forms are checked: ``bool``, ``int``, ``float``, ``str``,
    ``Sequence[int]`` (and ``list``/``tuple`` of a scalar), ``X | None`` and
    ``Optional[X]``; an annotation may be a string (``from __future__ import
    annotations``) or a type. A ``float`` takes an int but not a bool, an
    ``int`` takes neither a bool nor a float, a ``bool`` takes only true or
    false, a sequence takes a list but neither a scalar nor a string. Any
    other annotation, or none, lets the value pass unchecked.

    Example:
        >>> check_type("agent.gamma", 1, "float")
        >>> check_type("agent.double", "false", "bool")
        Traceback (most recent call last):
        ...
        keras_rl_gym.config.ConfigError: agent.double must be true or false (bool), got 'false' (str).
    """
    if annotation is None:
        return
    text = _annotation_text(annotation)
    alternatives = _parse_annotation(text)
    if alternatives is None or any(check(value) for check, _ in alternatives):
        return
    expected = " or ".join(description for _, description in alternatives)
    hint = ""
    if isinstance(value, str) and _YAML_EXPONENT.match(value):
        hint = f"; YAML 1.1 reads {value} as a string: write it with a point, as {value.lower().replace('e', '.0e', 1)}"
    raise ConfigError(f"{key} must be {expected} ({text}), got {value!r} ({type(value).__name__}{hint}).")


def check_agent_values(cls, params: dict, where: str = "agent") -> None:
    """Checks each value of an ``agent`` mapping against ``cls``'s constructor annotations (see :func:`check_type`)."""
    annotations = agent_annotations(cls)
    for key, value in params.items():
        check_type(f"{where}.{key}", value, annotations.get(key))


# The configs shipped with the package (package data; the repository's configs/ points here).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """The shipped configs by name (``dqn-cartpole``: its file)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*")) if p.suffix in (".json", ".yaml", ".yml")}


def find_config(name) -> Path:
    """A config file's path: ``name`` itself if it is a file, else the shipped config of that name."""
    path = Path(name)
    if path.exists():
        return path
    shipped = shipped_configs()
    stem = path.name.rsplit(".", 1)[0] if path.suffix in (".json", ".yaml", ".yml") else path.name
    if stem in shipped and path.parent == Path("."):
        return shipped[stem]
    raise ConfigError(
        f"Config file {name} does not exist, nor is it a shipped config (keras-rl-gym list shows them: "
        f"{', '.join(shipped)})."
    )


def load_config(path) -> dict:
    """Reads a JSON or YAML config file, or a shipped config by name (``dqn-cartpole``), and validates it."""
    return validate_config(read_config(path))


def read_config(path):
    """A config file's contents as they are, unchecked (see :func:`load_config`)."""
    path = find_config(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"Cannot read the config file {path}: {error}") from error
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            # PyYAML's message spans several lines; its mark is 0-based.
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or " ".join(str(error).split())
            raise ConfigError(f"{path}{where}: invalid YAML: {problem}.") from error
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path}, line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}."
            ) from error
    return config


def validate_config(config: dict) -> dict:
    """Checks every key of a config; returns it with defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError(f"A config is a mapping, got {type(config).__name__}.")
    _unknown(config, TOP_LEVEL_KEYS, "config")
    for key in ("algo", "env"):
        if key not in config:
            raise ConfigError(f"The config needs an {key!r} key.")
        if not isinstance(config[key], str):
            raise ConfigError(f"{key} must be a string, got {config[key]!r}.")
    cls = agent_class(config["algo"])
    for key in ("agent", "train", "env_kwargs"):
        if not isinstance(config.get(key, {}), dict):
            raise ConfigError(f"{key} must be a mapping, got {type(config[key]).__name__}.")
    _unknown(config.get("agent", {}), agent_parameters(cls), f"agent ({cls.__name__})")
    check_agent_values(cls, config.get("agent", {}))
    _unknown(config.get("train", {}), TRAIN_KEYS, "train")
    for entry in config.get("wrappers", []):
        name = entry[0] if isinstance(entry, (list, tuple)) else entry
        if name not in WRAPPERS:
            raise ConfigError(f"Unknown wrapper {name!r}. Available: {sorted(WRAPPERS)}.")
    if config.get("env_factory") and config["env_factory"] not in ENV_FACTORIES:
        raise ConfigError(f"Unknown env_factory {config['env_factory']!r}. Available: {sorted(ENV_FACTORIES)}.")
    mode = config.get("vectorization_mode", "sync")
    if mode not in ("sync", "async"):
        raise ConfigError(f"vectorization_mode must be 'sync' or 'async', got {mode!r}.")
    train = config.get("train", {})
    # Values that would otherwise fail only late: eval_episodes after the whole training.
    _check_positive_int(train.get("steps", 1), "train.steps")
    _check_positive_int(train.get("eval_episodes", 10), "train.eval_episodes")
    _check_positive_int(train.get("log_every", 1000), "train.log_every")
    _check_positive_int(config.get("num_envs", 1), "num_envs")
    seed = train.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"train.seed must be an integer or null, got {seed!r}.")
    for key, kind in (
        ("mlflow", bool),
        ("system_metrics", bool),
        ("experiment", str),
        ("run_name", str),
        ("save_path", str),
    ):
        if key in train and not isinstance(train[key], kind):
            what = "true or false" if kind is bool else "a string"
            raise ConfigError(f"train.{key} must be {what}, got {train[key]!r}.")
    return config


def _check_positive_int(value, key: str) -> None:
    # bool is an int in Python, but `eval_episodes: true` is a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}.")


def _wrap(env, wrappers):
    for entry in wrappers:
        name, params = (
            (entry[0], entry[1] if len(entry) > 1 else {}) if isinstance(entry, (list, tuple)) else (entry, {})
        )
        if not isinstance(params, dict):
            raise ConfigError(f"Wrapper {name!r}: its parameters must be a mapping, got {params!r}.")
        try:
            env = _load_object(WRAPPERS[name])(env, **params)
        except (TypeError, ValueError) as error:
            # A parameter it does not take (TypeError), or a value it refuses, for this env.
            raise ConfigError(
                f"Wrapper {name!r} refuses {_refused(error, params, 'the parameter')}: {error}"
            ) from error
    return env


def _refused(error: Exception, params: dict, what: str) -> str:
    """``what 'key'`` for the key an "unexpected keyword argument" error names, else all of ``params``."""
    found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    return f"{what} {found.group(1)!r}" if found else f"{what}s {params}"


def make_env(config: dict, *, num_envs: int | None = None, training: bool = True, **env_kwargs):
    """Builds the env a config describes: one env, or a vector env when ``num_envs > 1``.

    ``env_kwargs`` (``render_mode="rgb_array"``) go to each env's ``gymnasium.make`` or factory
    besides the config's own ``env_kwargs``.
    """
    num_envs = config.get("num_envs", 1) if num_envs is None else num_envs
    kwargs = {**config.get("env_kwargs", {}), **env_kwargs}
    wrappers = config.get("wrappers", [])
    factory = config.get("env_factory")

    def make_one():
        # Only making the env is mapped to a ConfigError: what the config names does not exist or does not fit.
        # A wrapper's or the env's own failure later on stays what it is.
        if factory:
            try:
                env = _load_object(ENV_FACTORIES[factory])(config["env"], training=training, **kwargs)
            except TypeError as error:
                raise ConfigError(
                    f"env {config['env']!r} refuses {_refused(error, kwargs, 'env_kwargs key')}: {error}"
                ) from error
            except (ValueError, gym.error.Error) as error:
                # make_atari_env raises ValueError for a non-Atari id such as CartPole-v1.
                raise ConfigError(f"env_factory {factory!r} cannot make env {config['env']!r}: {error}") from error
        else:
            try:
                env = gym.make(config["env"], **kwargs)
            except gym.error.Error as error:
                # NameNotFound, VersionNotFound, NamespaceNotFound, DependencyNotInstalled...
                raise ConfigError(f"Cannot make env {config['env']!r}: {error}") from error
            except TypeError as error:
                # An env_kwargs key its constructor does not take: CartPoleEnv.__init__() got an unexpected...
                raise ConfigError(
                    f"env {config['env']!r} refuses {_refused(error, kwargs, 'env_kwargs key')}: {error}"
                ) from error
        return _wrap(env, wrappers)

    if num_envs == 1:
        return make_one()
    vector_cls = gym.vector.AsyncVectorEnv if config.get("vectorization_mode") == "async" else gym.vector.SyncVectorEnv
    return vector_cls([make_one for _ in range(num_envs)])


def make_agent(config: dict, env):
    """Builds the config's agent for ``env``'s spaces."""
    from keras_rl_gym.spaces import env_spaces

    cls = agent_class(config["algo"])
    obs_space, act_space = env_spaces(env)
    params = dict(config.get("agent", {}))
    params.setdefault("seed", config.get("train", {}).get("seed"))
    try:
        return cls(obs_space, act_space, **params)
    except (TypeError, ValueError) as error:
        # The agents check their spaces and arguments up front and raise these naming the problem
        # (DQN on Pendulum-v1's Box actions, tau: 2.0): the config asks for what cannot be built.
        raise ConfigError(f"{cls.__name__} cannot be built for env {config['env']!r}: {error}") from error


def failure_path(config: dict) -> str:
    """Where ``run`` saves the agent when training fails or is interrupted.

    ``train.save_path`` when the config has one, else
    ``<run name, config name or algo-env>-interrupted.keras`` in the working directory.
    """
    train = config.get("train", {})
    if train.get("save_path"):
        return os.fspath(train["save_path"])
    name = train.get("run_name") or config.get("name") or f"{config['algo']}-{config['env']}"
    # Env ids such as ALE/Pong-v5 hold characters that do not belong in a file name.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) + "-interrupted.keras"


def error_cause(error: BaseException) -> str:
    """The innermost error of a chain, in one line.

    Keras reports an error in a loading hook (``load_assets``, ``load_own_variables``) as
    "A total of N objects could not be loaded. Example error message for object X:", then the
    hook's own message in the next paragraph: that paragraph is the cause.
    """
    seen = set()
    while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    text = str(error)
    if "Example error message for object" in text:
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) > 1:
            return " ".join(paragraphs[1].split())
    lines = text.strip().splitlines()
    return " ".join(f"{type(error).__name__}: {lines[0]}".split()) if lines else type(error).__name__


def load_agent(path, config: dict, env, *, safe_mode: bool = True):
    """Loads a saved agent to resume ``config``'s training; checks its class and spaces against the config's."""
    import keras

    from keras_rl_gym.spaces import env_spaces

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"The agent to resume from, {path}, does not exist.")
    cls = agent_class(config["algo"])
    try:
        agent = keras.saving.load_model(path, safe_mode=safe_mode)
    except Exception as error:
        raise ConfigError(f"Cannot load the agent to resume from {path}: {error_cause(error)}") from error
    if type(agent) is not cls:
        raise ConfigError(
            f"{path} holds a {type(agent).__name__}, but the config's algo {config['algo']!r} is a {cls.__name__}."
        )
    obs_space, act_space = env_spaces(env)
    # Exact equality (Box bounds, Discrete start), not just shapes: a policy for other bounds is another policy.
    for what, theirs, ours in (
        ("observation", agent.observation_space, obs_space),
        ("action", agent.action_space, act_space),
    ):
        if theirs != ours:
            raise ConfigError(
                f"The agent in {path} was trained on the {what} space {theirs}, "
                f"but the config's env {config['env']!r} has {ours}."
            )
    return agent


def run(
    config: dict,
    *,
    verbose: int = 1,
    callbacks=None,
    resume=None,
    checkpoint_path=None,
    runners=None,
    safe_mode: bool = True,
):
    """Trains the agent of ``config``, evaluates it and logs to MLflow when enabled.

    Every failure after the agent exists (an exception, ``KeyboardInterrupt``,
    SIGTERM turned into one by the CLI) keeps the agent: ``fit`` saves it,
    or ``run`` itself when the failure came after ``fit``, to ``checkpoint_path``;
    the MLflow run ends ``FAILED``, or ``KILLED`` on a ``KeyboardInterrupt``,
    never ``FINISHED``; and the error is re-raised with a ``checkpoint_path``
    attribute naming the saved file (``None`` if saving failed too).

    Args:
        config: a run config (validated here).
        verbose: 1 shows a progress bar, 0 is silent.
        callbacks: more ``fit`` callbacks.
        resume: a ``.keras`` agent to continue training (one a failed or
            interrupted run saved, or a finished one): it trains on up to
            ``train.steps`` env steps in all, with its own hyperparameters and
            schedules; if it has reached them already, it is only evaluated.
        checkpoint_path: where to save the agent on a failure; defaults to :func:`failure_path`.
        runners: ``keras_rl_gym.distributed.RayRunners`` to step the config's envs in Ray
            actors (each makes its own, with ``make_env``); ``None`` steps them here.
        safe_mode: Keras's ``safe_mode`` for loading ``resume``: ``False`` only for a file you
            trust whose network holds Python code (a ``keras.layers.Lambda``); the CLI's ``--unsafe``.

    Returns:
        ``(agent, history, evaluation)``.
    """
    import keras

    from keras_rl_gym.callbacks import MLflowLogger, output_path_fault, prepare_tracking_store, save_agent

    config = validate_config(config)
    train = config.get("train", {})
    steps = train.get("steps", 50_000)
    path = os.fspath(checkpoint_path or failure_path(config))
    # Where the agent goes, checked now: not found unwritable after the whole run has trained.
    for what, target in (("train.save_path", train.get("save_path")), ("checkpoint_path", checkpoint_path)):
        fault = None if target is None else output_path_fault(target)
        if fault:
            raise ConfigError(f"{what} {os.fspath(target)} cannot be written: {fault}.")
    # Saved with the agent: `keras-rl-gym evaluate` rebuilds the env chain from it.
    env_config = {key: config[key] for key in ENV_KEYS if key in config}
    # A resumed fit derives its reset seed from the agent's seed and env steps: no replay of the first episodes.
    seed = None if resume else train.get("seed")
    # With Ray runners, one env here gives the agent its spaces; each runner makes its own.
    env = make_env(config, num_envs=1 if runners is not None else None)
    eval_env = None
    try:
        if resume:
            agent = load_agent(resume, config, env, safe_mode=safe_mode)
        else:
            agent = make_agent(config, env)
        if train.get("mlflow", True):
            try:
                # In seconds, once the config has built its agent (a config error is reported alone):
                # an unreachable server or an unwritable sqlite file, before anything trains.
                prepare_tracking_store()
            except ConnectionError as error:
                raise ConfigError(str(error)) from None
        agent.env_config = {"config": env_config}
        remaining = steps - agent.env_steps
        if resume and verbose:
            print(
                f"Resuming {resume} at env step {agent.env_steps} of {steps}"
                + (": nothing left to train, evaluating it." if remaining <= 0 else ".")
            )
        callbacks = list(callbacks or [])
        logger = None
        if train.get("mlflow", True) and remaining > 0:
            extra = {"config." + k: v for k, v in _flatten(config).items()}
            if resume:
                extra.update(resumed_from=os.path.abspath(resume), resumed_at_env_step=agent.env_steps)
            logger = MLflowLogger(
                experiment_name=train.get("experiment", "keras-rl-gym"),
                run_name=train.get("run_name"),
                extra_params=extra,
                end_run=False,
                log_system_metrics=bool(train.get("system_metrics", False)),
            )
            callbacks.append(logger)
        in_fit = True
        try:
            if remaining > 0:
                history = agent.fit(
                    env if runners is None else functools.partial(make_env, config, num_envs=1),
                    steps=remaining,
                    callbacks=callbacks,
                    verbose=verbose,
                    log_every=train.get("log_every", 1000),
                    seed=seed,
                    checkpoint_path=path,
                    # The horizon schedules span: the whole run's, also when this fit is its second part.
                    total_steps=steps,
                    runners=runners,
                )
            else:
                history = keras.callbacks.History()
            in_fit = False
            eval_env = make_env(config, num_envs=1, training=False)
            # Logged into the fit's MLflow run (eval/*), which the logger left open (end_run=False).
            evaluation = agent.evaluate(
                eval_env, episodes=train.get("eval_episodes", 10), seed=(train.get("seed") or 0) + 10_000
            )
            if train.get("save_path"):
                # Elsewhere (the working or temporary directory, with a warning) where the path fails.
                save_agent(agent, train["save_path"])
        except BaseException as error:
            _keep_failed_run(error, agent, logger, path, in_fit)
            raise
        if logger is not None:
            logger.end(status="FINISHED")
    finally:
        for e in (env, eval_env):
            if e is not None:
                e.close()
    return agent, history, evaluation


def _keep_failed_run(error: BaseException, agent, logger, path: str, in_fit: bool) -> None:
    """Saves the agent unless ``fit`` did, and ends the MLflow run FAILED or KILLED.

    Nothing here may hide ``error``: each step that fails only warns.
    """
    # fit saves on a failure inside its loop; a failure before that loop, or after fit, is saved here.
    saved = getattr(agent, "last_checkpoint", None) if in_fit else None
    if saved is None:
        from keras_rl_gym.callbacks import save_agent

        saved = save_agent(agent, path)  # elsewhere, with a warning, where the path fails
    if logger is not None and logger.run_id is not None:
        try:
            # Still open when the failure came after fit: no on_fit_error heard it yet. The
            # logger's own path tags the error, logs the checkpoint and ends the run FAILED/KILLED.
            if logger.client.get_run(logger.run_id).info.status == "RUNNING":
                logger.on_fit_error(error, {"checkpoint_path": saved})
        except Exception as mlflow_error:
            warnings.warn(f"Could not end the MLflow run {logger.run_id}: {mlflow_error}", stacklevel=3)
    try:
        error.checkpoint_path = saved
    except AttributeError:
        pass


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
