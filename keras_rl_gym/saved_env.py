"""Rebuilding the env a saved agent was trained on, from data that cannot run code.

A ``.keras`` file carries the env it was trained on as JSON (``Agent.env_config``), so
that ``keras-rl-gym evaluate agent.keras`` needs no ``--env``. That JSON comes from a
file, and a file may come from anyone. Gymnasium rebuilds an env from its spec by
importing whatever ``module:attr`` the spec names and calling it with the spec's
arguments (an ``entry_point`` of ``os:system`` with ``{"command": ...}`` runs a command),
and ``gymnasium.make("some.module:Env")`` imports ``some.module``. So a saved env is
rebuilt here only from what is safe by construction:

- an env id in Gymnasium's registry (no ``module:`` prefix), made with the entry point
  the registry holds for it, never one the file names;
- the package's own env factories and wrappers (``config.ENV_FACTORIES``,
  ``config.WRAPPERS``) and Gymnasium's own wrappers, each with parameters its
  constructor takes, given as JSON values.

Anything else is refused with one line that says how to go on: ``--env ID`` (the
user names the env), or ``trust=True`` / ``--trust-env``, which rebuilds the saved spec
as Gymnasium would, the way Keras's ``safe_mode=False`` opts into unsafe model configs.
"""

from __future__ import annotations

import importlib
import inspect

import gymnasium as gym

from keras_rl_gym.config import ENV_FACTORIES, ENV_KEYS, WRAPPERS, ConfigError, make_env

# Gymnasium's wrappers that a rebuilt spec may name: they transform data only. A wrapper that
# writes files (RecordVideo) or opens windows (HumanRendering) is not rebuilt from a file.
_GYMNASIUM_WRAPPERS = frozenset(
    {
        "AtariPreprocessing",
        "ClipAction",
        "ClipReward",
        "DtypeObservation",
        "FlattenObservation",
        "FrameStackObservation",
        "GrayscaleObservation",
        "MaxAndSkipObservation",
        "NormalizeObservation",
        "NormalizeReward",
        "OrderEnforcing",
        "PassiveEnvChecker",
        "RecordEpisodeStatistics",
        "RescaleAction",
        "RescaleObservation",
        "ReshapeObservation",
        "ResizeObservation",
        "StickyAction",
        "TimeAwareObservation",
        "TimeLimit",
    }
)

HOW_TO_PROCEED = "give the env with --env ID (evaluation_env(agent, env_id)), or opt in with --trust-env (trust=True)"


class UnsafeEnvError(ConfigError):
    """The saved env names code that is not the registry's or the package's own."""


def rebuild_env(saved: dict | None, *, trust: bool = False, source: str = "the saved agent", **make_kwargs):
    """The env ``saved`` (an agent's ``env_config``) describes, built only from registered ids and the
    package's factories and wrappers unless ``trust``.

    Args:
        saved: ``{"config": a run config's env keys}``, or ``{"env": id, "spec": EnvSpec JSON}``.
        trust: rebuild a saved spec exactly as Gymnasium would, importing what it names.
        source: the file it was read from, for messages.
        **make_kwargs: more keyword arguments for the env (``render_mode``).

    Raises:
        UnsafeEnvError: ``saved`` names code outside Gymnasium's registry and the package.
        ConfigError: ``saved`` does not say which env, or is malformed.

    Example:
        >>> env = rebuild_env({"env": "CartPole-v1"})
        >>> env.spec.id
        'CartPole-v1'
        >>> rebuild_env({"env": "os:system"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_rl_gym.saved_env.UnsafeEnvError: the saved agent names env 'os:system', ...
    """
    saved = saved or {}
    if not isinstance(saved, dict):
        raise ConfigError(f"{source}: its saved env is not a mapping; give the env with --env ID.")
    if "config" in saved:
        config = saved["config"]
        if not trust:
            check_env_config(config, source)
        return make_env(config, num_envs=1, training=False, **make_kwargs)
    if saved.get("spec"):
        spec = gym.envs.registration.EnvSpec.from_json(saved["spec"])
        if not trust:
            spec = _checked_spec(spec, source)
        return gym.make(spec, **make_kwargs)
    if saved.get("env"):
        if not trust:
            registered_id(saved["env"], source)
        return gym.make(saved["env"], **make_kwargs)
    raise ConfigError(f"{source} does not say which env it was trained on: give one with --env ID.")


def registered_id(env_id, source: str) -> gym.envs.registration.EnvSpec:
    """The registry's spec of ``env_id``; an :class:`UnsafeEnvError` for a ``module:`` id or an unregistered one."""
    if not isinstance(env_id, str) or ":" in env_id:
        raise UnsafeEnvError(
            f"{source} names env {env_id!r}, which would import a module to make it; {HOW_TO_PROCEED}."
        )
    _register_known_namespaces(env_id)
    spec = gym.registry.get(env_id)
    if spec is None:
        raise UnsafeEnvError(f"{source} names env {env_id!r}, which is not in Gymnasium's registry; {HOW_TO_PROCEED}.")
    return spec


def check_env_config(config, source: str) -> None:
    """Checks a run config's env keys: a registered id, the package's own factory and wrappers, JSON parameters."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: its saved env config is not a mapping; give the env with --env ID.")
    unknown = sorted(set(config) - set(ENV_KEYS))
    if unknown:
        raise UnsafeEnvError(f"{source}: unknown saved env key(s) {unknown}; {HOW_TO_PROCEED}.")
    factory = config.get("env_factory")
    if factory is not None and factory not in ENV_FACTORIES:
        raise UnsafeEnvError(f"{source} names env_factory {factory!r}, not one of {sorted(ENV_FACTORIES)}.")
    if factory is None:
        registered_id(config.get("env"), source)
    elif not isinstance(config.get("env"), str) or ":" in config["env"]:
        raise UnsafeEnvError(f"{source} names env {config.get('env')!r}; {HOW_TO_PROCEED}.")
    _check_json(config.get("env_kwargs", {}), f"{source}: env_kwargs")
    wrappers = config.get("wrappers", [])
    if not isinstance(wrappers, list):
        raise ConfigError(f"{source}: its saved wrappers are not a list.")
    for entry in wrappers:
        name, params = (entry[0], entry[1] if len(entry) > 1 else {}) if isinstance(entry, list) else (entry, {})
        if name not in WRAPPERS:
            raise UnsafeEnvError(f"{source} names wrapper {name!r}, not one of {sorted(WRAPPERS)}; {HOW_TO_PROCEED}.")
        module, _, attr = WRAPPERS[name].partition(":")
        _check_parameters(getattr(importlib.import_module(module), attr), params, f"{source}: wrapper {name}")


def _checked_spec(spec, source: str):
    """``spec`` with the registry's own entry point, or an error if it names another, or a wrapper not allowed."""
    registered = registered_id(spec.id, source)
    if spec.entry_point != registered.entry_point:
        raise UnsafeEnvError(
            f"{source} names entry point {spec.entry_point!r} for {spec.id!r}, whose registered one is "
            f"{registered.entry_point!r}; {HOW_TO_PROCEED}."
        )
    _check_json(spec.kwargs, f"{source}: kwargs of {spec.id}")
    for wrapper in spec.additional_wrappers:
        entry = wrapper.entry_point
        module, _, name = entry.partition(":")
        ours = entry in WRAPPERS.values()
        theirs = module.startswith("gymnasium.wrappers") and name in _GYMNASIUM_WRAPPERS
        if not (ours or theirs):
            raise UnsafeEnvError(f"{source} names wrapper {entry!r}, which is not allowed; {HOW_TO_PROCEED}.")
        _check_parameters(getattr(importlib.import_module(module), name), wrapper.kwargs or {}, f"{source}: {entry}")
    return spec


def _check_parameters(factory, params, where: str) -> None:
    """Parameters a wrapper's constructor names, with JSON values (no callables can be given this way)."""
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: parameters must be a mapping, got {params!r}.")
    _check_json(params, where)
    signature = inspect.signature(factory)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(signature.parameters) - {"env"})
    if unknown and not takes_any:
        raise ConfigError(f"{where}: unknown parameter(s) {unknown}.")


def _check_json(value, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json(item, where)
        return
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        for item in value.values():
            _check_json(item, where)
        return
    raise ConfigError(f"{where}: {value!r} is not plain JSON data.")


def _register_known_namespaces(env_id: str) -> None:
    """Atari ids live in ale_py's namespace, registered on import: the package's Atari factory imports it too."""
    if env_id.startswith("ALE/") and env_id not in gym.registry:
        try:
            import ale_py
        except ImportError:
            return
        gym.register_envs(ale_py)
