"""Action distributions: keras.ops log-probs and entropies against closed forms, host samplers against their laws."""

import math

import numpy as np
import pytest
from keras import ops

from keras_rl_gym.distributions import (
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    sample_categorical,
    sample_gaussian,
)

# Row 2 has logits large enough that a naive exp overflows float32.
LOGITS = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [1000.0, 999.0, -50.0]], np.float32)
MEAN = np.array([[0.0, 1.0], [-2.0, 0.5]], np.float32)
LOG_STD = np.array([[0.1, -0.3], [0.7, -1.2]], np.float32)


def _numpy(x):
    return ops.convert_to_numpy(x)


def _log_softmax64(logits):
    # log p_a = z_a - log sum_b exp(z_b), in float64 and shifted by max(z).
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_categorical_log_prob_and_entropy_match_numpy():
    log_p = _log_softmax64(LOGITS)
    for action in ([1, 2, 0], [0, 1, 2]):
        got = _numpy(categorical_log_prob(LOGITS, np.array(action)))
        np.testing.assert_allclose(got, log_p[[0, 1, 2], action], rtol=1e-5, atol=1e-6)
    entropy = _numpy(categorical_entropy(LOGITS))
    np.testing.assert_allclose(entropy, -np.sum(np.exp(log_p) * log_p, -1), rtol=1e-5, atol=1e-6)
    # Uniform over 3 actions: H = log 3. The large logits give a finite entropy too.
    assert np.all(np.isfinite(entropy))
    assert entropy[1] == pytest.approx(math.log(3), rel=1e-6)


def test_gaussian_log_prob_and_entropy_match_the_closed_form():
    actions = np.array([[0.5, 0.2], [-1.0, 3.0]], np.float32)
    std = np.exp(LOG_STD.astype(np.float64))
    # The product of 1-D normal densities exp(-(a - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi)).
    density = np.exp(-((actions - MEAN) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(_numpy(gaussian_log_prob(MEAN, LOG_STD, actions)), np.log(density.prod(-1)), rtol=1e-5)
    # H = sum_i log(sigma_i sqrt(2 pi e)).
    np.testing.assert_allclose(
        _numpy(gaussian_entropy(LOG_STD)), np.sum(np.log(std * math.sqrt(2 * math.pi * math.e)), -1), rtol=1e-5
    )


def test_samplers_follow_their_distribution():
    n = 40_000
    rng = np.random.default_rng(0)
    logits = np.repeat(LOGITS[:1], n, axis=0)
    actions, _ = sample_categorical(rng, logits)
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / n, np.exp(_log_softmax64(LOGITS[0])), atol=0.01)
    # Logits of 1000 (exp overflows) still sample their softmax: p = (0.73, 0.27, e^-1050).
    actions, log_probs = sample_categorical(rng, np.repeat(LOGITS[2:], 4000, axis=0))
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / 4000, np.exp(_log_softmax64(LOGITS[2])), atol=0.03)
    assert np.all(np.isfinite(log_probs))

    mean, log_std = np.repeat(MEAN[1:], n, axis=0), np.repeat(LOG_STD[1:], n, axis=0)
    samples, _ = sample_gaussian(rng, mean, log_std)
    assert samples.dtype == np.float32 and samples.shape == (n, 2)
    np.testing.assert_allclose(samples.mean(0), MEAN[1], atol=0.03)
    np.testing.assert_allclose(samples.std(0), np.exp(LOG_STD[1]), rtol=0.02)
    # A state-independent (n,) log_std broadcasts over the batch.
    samples, _ = sample_gaussian(rng, mean, LOG_STD[1])
    np.testing.assert_allclose(samples.std(0), np.exp(LOG_STD[1]), rtol=0.02)


def test_the_samplers_log_probs_are_the_losses_log_probs():
    # PPO's old log-probs come from the host sampler, its new ones from the keras.ops
    # function in the loss: at unchanged weights the ratio pi / pi_old must be 1.
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(64, 5)).astype(np.float32)
    actions, log_probs = sample_categorical(rng, logits)
    np.testing.assert_allclose(log_probs, _numpy(categorical_log_prob(logits, actions)), rtol=1e-5, atol=1e-6)

    mean = rng.normal(size=(64, 3)).astype(np.float32)
    log_std = np.broadcast_to(np.array([-1.0, 0.0, 0.5], np.float32), mean.shape)
    actions, log_probs = sample_gaussian(rng, mean, log_std)
    np.testing.assert_allclose(log_probs, _numpy(gaussian_log_prob(mean, log_std, actions)), rtol=1e-5, atol=1e-5)


def test_entropy_is_the_mean_negative_log_prob_of_samples():
    # H = E_{a ~ pi}[-log pi(a)]: ties each entropy to its log-prob and sampler.
    n = 40_000
    rng = np.random.default_rng(2)
    logits = np.repeat(LOGITS[:1], n, axis=0)
    _, log_probs = sample_categorical(rng, logits)
    assert -log_probs.mean() == pytest.approx(float(_numpy(categorical_entropy(LOGITS[:1]))[0]), rel=0.01)
    mean, log_std = np.repeat(MEAN[:1], n, axis=0), np.repeat(LOG_STD[:1], n, axis=0)
    _, log_probs = sample_gaussian(rng, mean, log_std)
    assert -log_probs.mean() == pytest.approx(float(_numpy(gaussian_entropy(LOG_STD[:1]))[0]), rel=0.01)


def test_samplers_reproduce_from_the_seed():
    for sample, args in ((sample_categorical, (LOGITS,)), (sample_gaussian, (MEAN, LOG_STD))):
        first, second, other = (sample(np.random.default_rng(seed), *args)[0] for seed in (7, 7, 8))
        np.testing.assert_array_equal(first, second)
        if sample is sample_gaussian:  # three categorical draws can coincide by chance; Gaussian ones cannot
            assert not np.array_equal(first, other)
