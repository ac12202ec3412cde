"""Callbacks for ``Agent.fit``: progress bar, MLflow logging, evaluation, checkpoints.

They are ``keras.callbacks.Callback``s with three RL hooks added, which
``fit`` calls on any callback that defines them:

* ``on_episode_end(episode, logs)``: ``logs`` has ``episode_return``, ``episode_length``, ``env_steps``;
* ``on_progress(step, logs)``: after every env step (keep it cheap);
* ``on_fit_error(error)``: before ``fit`` raises, e.g. on a non-finite loss.
"""

from __future__ import annotations

import math
import time

import keras


class ProgressBar(keras.callbacks.Callback):
    """A progress bar over env steps: episodes, recent mean return, steps/s.

    Redrawn at most ``interval`` seconds apart, so it costs nothing per step.
    """

    def __init__(self, interval: float = 0.5):
        super().__init__()
        self.interval = interval

    def on_train_begin(self, logs=None):
        self.bar = keras.utils.Progbar(self.params["steps"], unit_name="step", stateful_metrics=None)
        self.start = self.last = time.perf_counter()

    def on_progress(self, step, logs):
        now = time.perf_counter()
        if now - self.last < self.interval and step < logs["steps"]:
            return
        self.last = now
        values = [("episodes", logs["episodes"]), ("steps/s", step / max(now - self.start, 1e-9))]
        if not math.isnan(logs["recent_return"]):
            values.insert(1, ("return", logs["recent_return"]))
        self.bar.update(min(step, logs["steps"]), values=values, finalize=step >= logs["steps"])
