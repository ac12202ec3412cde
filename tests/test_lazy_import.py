"""The package's top level is lazy: wrappers, configs and the CLI load without Keras or a backend."""

import os
import subprocess
import sys

import keras

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
