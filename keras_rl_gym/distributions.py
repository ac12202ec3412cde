"""The policies' action distributions: categorical and diagonal Gaussian.

Each distribution is a handful of functions over its parameters, not a class:

* ``*_log_prob`` and ``*_entropy`` are written in ``keras.ops``, for the losses,
  which run compiled on every backend and are differentiated through;
* ``sample_*`` runs on the host in NumPy, from the parameters the compiled act
  returned, with the agent's own ``np.random.Generator``: random ops inside a
  jitted act cost several times the act itself, and the host generator is what
  makes a seeded run reproduce. A sampler also returns the log-probability of
  its samples (PPO stores it as ``log pi_old``), computed as the ``keras.ops``
  log-prob computes it; the tests check that the two agree.

Shapes: parameters are ``(batch, n)`` (``n`` actions, or action dimensions);
actions are ``(batch,)`` indices or ``(batch, n)`` vectors; log-probs and
entropies are ``(batch,)``. A tanh-squashed Gaussian (SAC) sits beside these
as its own functions: with ``a = tanh(u)``,
``log pi(a) = gaussian_log_prob(mean, log_std, u) - sum_i log(1 - tanh(u_i)^2)``.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


# -- categorical ------------------------------------------------------------------------
def categorical_log_prob(logits, actions):
    """Log-probability of integer ``actions`` under a categorical with ``logits``.

    ``log pi(a) = z_a - log(sum_b exp(z_b))``, the log-softmax of the logits ``z``
    at ``a``.

    Args:
        logits: ``(batch, n)`` unnormalized log-probabilities.
        actions: ``(batch,)`` indices in ``[0, n)``.

    Returns:
        ``(batch,)`` log-probabilities.
    """
    log_p = ops.log_softmax(logits, axis=-1)
    actions = ops.expand_dims(ops.cast(actions, "int32"), -1)
    return ops.take_along_axis(log_p, actions, axis=-1)[..., 0]


def categorical_entropy(logits):
    """Entropy ``H = -sum_a p_a log p_a`` of a categorical with ``logits``, ``(batch,)``."""
    log_p = ops.log_softmax(logits, axis=-1)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)


def sample_categorical(rng: np.random.Generator, logits):
    """Samples ``pi = softmax(logits)`` on the host, by the Gumbel-max trick.

    ``a = argmax_b(log p_b + g_b)`` with ``g_b = -log(-log u_b)``, ``u_b ~ U(0, 1)``,
    is distributed as ``pi`` (logits or log-probabilities give the same sample).

    Args:
        rng: the generator to draw from.
        logits: ``(batch, n)`` NumPy logits.

    Returns:
        ``(actions, log_probs)``: ``(batch,)`` indices and their
        :func:`categorical_log_prob`.
    """
    logits = np.asarray(logits)
    # log p = z - max(z) - log(sum exp(z - max(z))): the shift keeps exp from overflowing.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    actions = np.argmax(log_p - np.log(-np.log(rng.random(log_p.shape))), axis=-1)
    return actions, np.take_along_axis(log_p, actions[..., None], axis=-1)[..., 0]


# -- diagonal Gaussian --------------------------------------------------------------------
def gaussian_log_prob(mean, log_std, actions):
    """Log-density of ``actions`` under a diagonal Gaussian ``N(mean, diag(exp(log_std))^2)``.

    With ``z_i = (a_i - mu_i) / sigma_i`` the dimensions are independent, so

        log pi(a) = sum_i [-z_i^2 / 2 - log sigma_i - log(2 pi) / 2].

    Args:
        mean: ``(batch, n)`` means ``mu``.
        log_std: ``(batch, n)`` (or ``(n,)``) log standard deviations ``log sigma``.
        actions: ``(batch, n)`` actions ``a``.

    Returns:
        ``(batch,)`` log-densities.
    """
    z = (ops.cast(actions, "float32") - mean) * ops.exp(-log_std)
    return ops.sum(-0.5 * ops.square(z) - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std):
    """Entropy of a diagonal Gaussian: ``H = sum_i [log sigma_i + (1 + log(2 pi)) / 2]``.

    It does not depend on the mean. ``log_std`` is ``(batch, n)``; returns ``(batch,)``.
    """
    return ops.sum(log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)


def sample_gaussian(rng: np.random.Generator, mean, log_std):
    """Samples ``a = mu + sigma * eps``, ``eps ~ N(0, I)``, on the host.

    Args:
        rng: the generator to draw from.
        mean: ``(batch, n)`` float32 NumPy means.
        log_std: ``(batch, n)`` (or ``(n,)``) log standard deviations.

    Returns:
        ``(actions, log_probs)``: ``(batch, n)`` float32 samples (not clipped to
        any bounds) and their :func:`gaussian_log_prob`, ``(batch,)``.
    """
    mean, log_std = np.asarray(mean), np.asarray(log_std)
    actions = mean + np.exp(log_std) * rng.standard_normal(mean.shape).astype(np.float32)
    # z is recomputed from the float32 sample, as the loss will, rather than taken from eps.
    z = (actions - mean) * np.exp(-log_std)
    return actions, np.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, axis=-1)


# -- tanh-squashed diagonal Gaussian (SAC) ----------------------------------------------------
LOG_2 = math.log(2.0)


def tanh_log_det(pre_tanh):
    """``sum_i log(1 - tanh(u_i)^2)``, the log-Jacobian of ``a = tanh(u)``, in ``keras.ops``: ``(batch,)``.

    Written as ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, which stays
    finite where ``tanh(u)`` rounds to 1 (``|u|`` beyond ~9 in float32).
    """
    u = ops.cast(pre_tanh, "float32")
    return ops.sum(2.0 * (LOG_2 - u - ops.softplus(-2.0 * u)), axis=-1)


def squashed_gaussian_log_prob(mean, log_std, pre_tanh):
    """Log-density of ``a = tanh(u)``, ``u ~ N(mean, diag(exp(log_std))^2)``, given the pre-tanh ``u``.

    By the change of variables ``a = tanh(u)`` (applied per dimension),

        log pi(a) = log N(u; mu, sigma) - sum_i log(1 - tanh(u_i)^2).

    Args:
        mean: ``(batch, n)`` means of ``u``.
        log_std: ``(batch, n)`` log standard deviations of ``u``.
        pre_tanh: ``(batch, n)`` values ``u`` (not ``a``: inverting tanh near +-1 loses precision).

    Returns:
        ``(batch,)`` log-densities of the squashed actions.
    """
    return gaussian_log_prob(mean, log_std, pre_tanh) - tanh_log_det(pre_tanh)


def sample_squashed_gaussian(rng: np.random.Generator, mean, log_std):
    """Samples ``a = tanh(mu + sigma * eps)``, ``eps ~ N(0, I)``, on the host.

    Returns:
        ``(actions, log_probs)``: ``(batch, n)`` float32 actions in ``(-1, 1)``
        and their :func:`squashed_gaussian_log_prob`, ``(batch,)``.
    """
    u, log_p = sample_gaussian(rng, mean, log_std)
    log_det = np.sum(2.0 * (LOG_2 - u - np.logaddexp(0.0, -2.0 * u)), axis=-1)
    return np.tanh(u).astype(np.float32), log_p - log_det
