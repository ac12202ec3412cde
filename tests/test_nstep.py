"""n-step returns: the host-side accumulator (NumPy) on a hand-computed two-env trajectory."""

import numpy as np
import pytest

from keras_rl_gym.buffers import NStepAccumulator

# Gymnasium, NumPy and host code only: nothing here depends on KERAS_BACKEND, so `make test` runs it once.
pytestmark = pytest.mark.backend_independent

G = 0.5


def test_nstep_two_envs_termination_truncation_autoreset():
    acc = NStepAccumulator(3, G, num_envs=2)
    out = []
    # obs of env e at its t-th step is 10 * e + t; rewards are 1, 2, 4, ... per env.
    # env 0: 4 steps, terminated at its 4th; then a NEXT_STEP autoreset step (invalid).
    # env 1: 2 steps, truncated at its 2nd (final next_obs 99); autoreset; then 2 more steps.
    script = [
        # (reward0, term0, trunc0, valid0), (reward1, term1, trunc1, valid1), next_obs1 override
        ((1, False, False, True), (1, False, False, True), None),
        ((2, False, False, True), (2, False, True, True), 99),
        ((4, False, False, True), (0, False, False, False), None),
        ((8, True, False, True), (3, False, False, True), None),
        ((0, False, False, False), (5, False, False, True), None),
    ]
    t = [0, 0]
    for s0, s1, final1 in script:
        obs = np.array([[0 * 10 + t[0]], [10 + t[1]]], float)
        rows = (s0, s1)
        next_obs = obs + 1
        if final1 is not None:
            next_obs[1] = final1
        step = acc.add(
            obs,
            np.array([7, 8]),
            np.array([r[0] for r in rows], float),
            next_obs,
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]),
            np.array([r[3] for r in rows]),
        )
        if step is not None:
            out += [dict(zip(step, v)) for v in zip(*step.values())]
        for e in range(2):
            t[e] = 0 if (rows[e][1] or rows[e][2]) else t[e] + rows[e][3]
        if not s1[3]:
            t[1] = 0
    got = sorted(
        (float(o["obs"][0]), o["reward"], float(o["next_obs"][0]), o["terminated"], o["discount"]) for o in out
    )
    expected = sorted(
        [
            (0.0, 1 + G * 2 + G**2 * 4, 3.0, 0.0, G**3),  # env 0, full window
            (1.0, 2 + G * 4 + G**2 * 8, 4.0, 1.0, G**3),  # cut at the termination
            (2.0, 4 + G * 8, 4.0, 1.0, G**2),
            (3.0, 8.0, 4.0, 1.0, G),
            (10.0, 1 + G * 2, 99.0, 0.0, G**2),  # truncation: bootstrap from the final next_obs
            (11.0, 2.0, 99.0, 0.0, G),
        ]
    )
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e)
    # env 1's new episode (2 steps of a 3-step window) is still open: nothing of it came out.
    assert len(acc.windows[1]) == 2 and acc.windows[0] == []


def test_nstep_one_is_the_identity():
    acc = NStepAccumulator(1, G, num_envs=1)
    step = acc.add(np.ones((1, 2)), np.array([1]), np.array([3.0]), np.zeros((1, 2)), [False], [False])
    assert step["reward"].tolist() == [3.0] and step["discount"].tolist() == [G]


def test_nstep_rejects_bad_n():
    with pytest.raises(ValueError, match="n_step"):
        NStepAccumulator(0, G, 1)
