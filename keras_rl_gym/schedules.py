"""Schedules for values annealed over training (epsilon, exploration noise).

They are evaluated on the host, from the env step count, so they never freeze
into a compiled graph. Learning-rate decay uses Keras's own
``keras.optimizers.schedules``, which the optimizer evaluates from its
iteration counter inside the compiled update.
"""

from __future__ import annotations

import math

import keras


def linear_schedule(start: float, end: float, duration: int):
    """``start`` moving linearly to ``end`` over ``duration`` steps, then ``end``."""
    duration = max(int(duration), 1)

    def value(step: int) -> float:
        fraction = min(step / duration, 1.0)
        return start + fraction * (end - start)

    return value


def exponential_schedule(start: float, end: float, duration: int):
    """``start`` decaying geometrically to reach ``end`` at ``duration`` steps.

    ``value(t) = start * (end / start) ** (t / duration)``, clamped at ``end``.
    """
    duration = max(int(duration), 1)
    if start <= 0 or end <= 0:
        raise ValueError("An exponential schedule needs start > 0 and end > 0.")
    log_ratio = math.log(end / start)

    def value(step: int) -> float:
        return start * math.exp(log_ratio * min(step / duration, 1.0))

    return value


SCHEDULES = {"linear": linear_schedule, "exponential": exponential_schedule}


def make_schedule(kind: str, start: float, end: float, duration: int):
    """Returns the host-side schedule ``kind`` (``"linear"`` or ``"exponential"``)."""
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}: expected one of {sorted(SCHEDULES)}.")
    return SCHEDULES[kind](start, end, duration)


def learning_rate(value: float, decay: float | None = None, decay_steps: int = 1000):
    """A learning rate, decayed by ``decay`` every ``decay_steps`` updates if given.

    The tutorial multiplies its learning rate by ``lr_decay`` per episode; here
    the decay counts optimizer updates, which is what the optimizer can see
    inside a compiled step. ``value`` may also be a Keras
    ``LearningRateSchedule``, used as it is (then ``decay`` must be unset).
    """
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        if decay not in (None, 1.0):
            raise ValueError(
                f"learning_rate_decay={decay} cannot be combined with a learning-rate schedule "
                f"({type(value).__name__}); build the decay into the schedule instead."
            )
        return value
    if decay is None or decay == 1.0:
        return float(value)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"learning_rate_decay must be in (0, 1], got {decay}.")
    return keras.optimizers.schedules.ExponentialDecay(
        float(value), decay_steps=int(decay_steps), decay_rate=float(decay)
    )


def current_learning_rate(lr, iterations: int) -> float:
    """The value of a float or Keras schedule after ``iterations`` updates."""
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(lr(iterations)))
    return float(lr)


def optimizer_learning_rate(optimizer, iterations: int) -> float:
    """The rate ``optimizer`` applies at update ``iterations``: its schedule's value, or its rate variable.

    Read from the optimizer itself, so a rate set by a callback (Keras's
    ``LearningRateScheduler``) is the one logged. ``iterations`` is passed in because
    during ``fit`` a backend may hold the optimizer's counter outside its Keras variable.
    """
    rate = optimizer._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(rate(iterations)))
    return float(keras.ops.convert_to_numpy(rate))
