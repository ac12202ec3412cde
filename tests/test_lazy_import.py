"""The package's top level is lazy: wrappers, configs and the CLI load without Keras or a backend."""

import subprocess
import sys

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
