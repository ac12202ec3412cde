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

Every key is checked: a typo fails at once with an error that names it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path

import gymnasium as gym

# Algorithm name -> "module:Class". Strings, so that reading a config does not import Keras.
ALGORITHMS = {
    "qlearning": "keras_rl_gym.agents.qlearning:QLearningAgent",
    "dqn": "keras_rl_gym.agents.dqn:DQNAgent",
    "reinforce": "keras_rl_gym.agents.reinforce:ReinforceAgent",
    "actor_critic": "keras_rl_gym.agents.actor_critic:ActorCriticAgent",
    "a2c": "keras_rl_gym.agents.actor_critic:ActorCriticAgent",
    "ppo": "keras_rl_gym.agents.ppo:PPOAgent",
    "ddpg": "keras_rl_gym.agents.ddpg:DDPGAgent",
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
TRAIN_KEYS = {"steps", "seed", "log_every", "eval_episodes", "mlflow", "experiment", "run_name", "save_path"}


class ConfigError(ValueError):
    """A run config names an unknown key, algorithm or wrapper, or lacks a required one."""


def _load_object(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _unknown(keys, allowed, where: str) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ConfigError(f"Unknown {where} key(s) {unknown}. Allowed: {sorted(allowed)}.")


def agent_class(algo: str):
    """The agent class registered under ``algo``."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"Unknown algo {algo!r}. Available: {sorted(ALGORITHMS)}.")
    return _load_object(ALGORITHMS[algo])


def agent_parameters(cls) -> set[str]:
    """The keyword arguments an agent class accepts (besides the spaces)."""
    names = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("keras."):
            break
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in ("self",):
                names.add(name)
    return names - {"observation_space", "action_space"} | {"name"}


def load_config(path) -> dict:
    """Reads a JSON or YAML config file and validates it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        config = yaml.safe_load(text)
    else:
        config = json.loads(text)
    return validate_config(config)


def validate_config(config: dict) -> dict:
    """Checks every key of a config; returns it with defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError(f"A config is a mapping, got {type(config).__name__}.")
    _unknown(config, TOP_LEVEL_KEYS, "config")
    for key in ("algo", "env"):
        if key not in config:
            raise ConfigError(f"The config needs an {key!r} key.")
    cls = agent_class(config["algo"])
    _unknown(config.get("agent", {}), agent_parameters(cls), f"agent ({cls.__name__})")
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
    steps = config.get("train", {}).get("steps", 1)
    if not isinstance(steps, int) or steps <= 0:
        raise ConfigError(f"train.steps must be a positive integer, got {steps!r}.")
    return config


def _wrap(env, wrappers):
    for entry in wrappers:
        name, params = (
            (entry[0], entry[1] if len(entry) > 1 else {}) if isinstance(entry, (list, tuple)) else (entry, {})
        )
        env = _load_object(WRAPPERS[name])(env, **params)
    return env


def make_env(config: dict, *, num_envs: int | None = None, training: bool = True):
    """Builds the env a config describes: one env, or a vector env when ``num_envs > 1``."""
    num_envs = config.get("num_envs", 1) if num_envs is None else num_envs
    kwargs = dict(config.get("env_kwargs", {}))
    wrappers = config.get("wrappers", [])
    factory = config.get("env_factory")

    def make_one():
        if factory:
            env = _load_object(ENV_FACTORIES[factory])(config["env"], training=training, **kwargs)
        else:
            env = gym.make(config["env"], **kwargs)
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
    return cls(obs_space, act_space, **params)


def run(config: dict, *, verbose: int = 1, callbacks=None):
    """Trains the agent of ``config``, evaluates it and logs to MLflow when enabled.

    Returns ``(agent, history, evaluation)``.
    """
    from keras_rl_gym.callbacks import MLflowLogger

    config = validate_config(config)
    train = config.get("train", {})
    env = make_env(config)
    agent = make_agent(config, env)
    callbacks = list(callbacks or [])
    logger = None
    if train.get("mlflow", True):
        logger = MLflowLogger(
            experiment_name=train.get("experiment", "keras-rl-gym"),
            run_name=train.get("run_name") or config.get("name"),
            extra_params={"config." + k: v for k, v in _flatten(config).items()},
            end_run=False,
        )
        callbacks.append(logger)
    try:
        history = agent.fit(
            env,
            steps=train.get("steps", 50_000),
            callbacks=callbacks,
            verbose=verbose,
            log_every=train.get("log_every", 1000),
            seed=train.get("seed"),
        )
        eval_env = make_env(config, num_envs=1, training=False)
        evaluation = agent.evaluate(
            eval_env, episodes=train.get("eval_episodes", 10), seed=(train.get("seed") or 0) + 10_000
        )
        if logger is not None:
            logger.log_evaluation(evaluation)
        if train.get("save_path"):
            agent.save(os.fspath(train["save_path"]))
    finally:
        if logger is not None:
            logger.end()
    return agent, history, evaluation


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
