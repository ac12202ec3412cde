"""The package's top level is lazy: wrappers, configs and the CLI load without Keras or a backend."""

import os
import subprocess
import sys

import keras
import pytest

HEAVY = ("keras", "tensorflow", "jax", "torch")


def loaded_after(code: str) -> list:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return eval(done.stdout.strip().splitlines()[-1])


def test_wrappers_configs_and_cli_import_without_keras():
    light = "import keras_rl_gym, keras_rl_gym.wrappers, keras_rl_gym.loop, keras_rl_gym.config, keras_rl_gym.cli"
    assert loaded_after(light) == []
    # An AsyncVectorEnv worker unpickles a wrapper factory: still no deep-learning import.
    assert loaded_after("from keras_rl_gym.wrappers.atari import make_atari_env") == []


def test_public_names_still_import_and_register_every_agent():
    code = (
        "from keras_rl_gym import DQNAgent\n"
        "import keras\n"
        "names = keras.saving.get_custom_objects()\n"
        "assert {'keras_rl_gym>DQNAgent', 'keras_rl_gym>PPOAgent', 'keras_rl_gym>DDPGAgent'} <= set(names), names"
    )
    assert "keras" in loaded_after(code)


def xla_flags_after_configure(monkeypatch, flags, cores: int):
    """``XLA_FLAGS`` after the JAX backend's import-time set-up, on a CPU of ``cores`` cores.

    ``_configure_jax`` is called here, in this process (the environment is restored after the
    test); ``test_the_jax_backend_sets_it_at_import`` checks once, in a fresh process, that
    importing the package on JAX calls it.
    """
    from keras_rl_gym import backend

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(backend, "XLA_FLAGS_BEFORE", backend.XLA_FLAGS_BEFORE)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    if flags is not None:
        monkeypatch.setenv("XLA_FLAGS", flags)
    backend._configure_jax()
    return os.environ.get("XLA_FLAGS")


def test_xla_runs_single_threaded_eigen_on_a_small_cpu_unless_the_user_says_otherwise(monkeypatch):
    single = "--xla_cpu_multi_thread_eigen=false"
    # Up to 4 cores: the flag is added after the user's own flags.
    assert xla_flags_after_configure(monkeypatch, None, 2) == single
    assert xla_flags_after_configure(monkeypatch, "--xla_dump_to=/tmp/x", 4) == f"--xla_dump_to=/tmp/x {single}"
    # The user's choice, and larger CPUs, keep XLA_FLAGS as they are.
    keep = "--xla_cpu_multi_thread_eigen=true"
    assert xla_flags_after_configure(monkeypatch, keep, 2) == keep
    assert xla_flags_after_configure(monkeypatch, None, 16) is None


def test_the_jax_backend_sets_it_at_import_and_no_other_backend_does():
    code = (
        "import os, keras\n"
        "os.cpu_count = lambda: 2\n"
        "import keras_rl_gym.backend\n"
        "print(repr(os.environ.get('XLA_FLAGS')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    on_jax = keras.backend.backend() == "jax"
    assert eval(done.stdout.strip().splitlines()[-1]) == ("--xla_cpu_multi_thread_eigen=false" if on_jax else None)


# Each public name of keras_rl_gym.wrappers, the submodule that defines it, and the optional
# dependencies of the other submodules that importing it must not load.
WRAPPER_NAMES = {
    "RemoveVelocity": "partial",
    "discretize_observation": "discretize",
    "make_atari_env": "atari",
    "make_atari_vec_env": "atari",
    "make_atari_ram_env": "atari",
    "make_envpool_atari_vec_env": "envpool_env",
}
WRAPPER_SUBMODULES = ("atari", "discretize", "envpool_env", "partial")
OPTIONAL = ("ale_py", "envpool", "cv2")


def modules_after(code: str, names) -> list:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {tuple(names)!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", sorted(WRAPPER_NAMES))
def test_each_wrapper_imports_from_the_package_and_loads_only_its_own_submodule(name):
    submodule = WRAPPER_NAMES[name]
    watched = [f"keras_rl_gym.wrappers.{m}" for m in WRAPPER_SUBMODULES] + list(OPTIONAL) + list(HEAVY)
    code = (
        f"from keras_rl_gym.wrappers import {name}\n"
        f"from keras_rl_gym.wrappers.{submodule} import {name} as defined\n"
        f"assert {name} is defined"
    )
    loaded = modules_after(code, watched)
    # envpool_env builds on atari's id check; neither imports ale-py or EnvPool before an env is made.
    own = {"keras_rl_gym.wrappers.envpool_env", "keras_rl_gym.wrappers.atari"} if submodule == "envpool_env" else set()
    assert set(loaded) == {f"keras_rl_gym.wrappers.{submodule}"} | own


@pytest.mark.backend_independent
def test_the_wrappers_package_lists_its_names_and_refuses_unknown_ones():
    code = (
        "import keras_rl_gym.wrappers as w\n"
        "assert set(w.__all__) <= set(dir(w)), w.__all__\n"
        f"assert set({sorted(WRAPPER_NAMES)!r}) <= set(w.__all__)\n"
        "for name in w.__all__:\n"
        "    getattr(w, name)\n"
        "try:\n"
        "    w.no_such_wrapper\n"
        "except AttributeError as error:\n"
        "    assert 'no_such_wrapper' in str(error)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
        "from keras_rl_gym.wrappers import *  # noqa: F403\n"
        "assert callable(RemoveVelocity)  # noqa: F405"
    )
    # Every name resolves, yet listing them imports no optional dependency and no deep-learning library.
    assert modules_after(code, list(OPTIONAL) + list(HEAVY)) == []
