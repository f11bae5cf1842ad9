"""One-dimensional Gaussian-mixture math in log space.

A mixture is three arrays with a trailing component axis K: ``logits`` (unnormalized log
weights), ``means`` and ``log_vars`` (log σ²). Leading axes broadcast against θ.

Example:
    >>> import jax.numpy as jnp
    >>> logits, means, log_vars = jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.zeros(2)
    >>> float(mean(logits, means, log_vars)), round(float(std(logits, means, log_vars)), 4)
    (0.0, 1.4142)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

LOG_2PI = math.log(2.0 * math.pi)


def _lift(a, ndim: int):
    """Prepends unit axes so that ``a`` has ``ndim`` axes (explicit, rank-promotion-safe broadcasting)."""
    a = jnp.asarray(a)
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def component_log_prob(theta, means, log_vars):
    """log N(θ | μ_k, σ_k²) for every component.

    Args:
        theta: (...,) values; broadcast against the component axis.
        means, log_vars: (..., K).

    Returns:
        (..., K) log densities.
    """
    theta = jnp.asarray(theta)[..., None]  # (..., 1)
    ndim = max(theta.ndim, jnp.ndim(means))
    theta, means, log_vars = _lift(theta, ndim), _lift(means, ndim), _lift(log_vars, ndim)
    return -0.5 * (LOG_2PI + log_vars + (theta - means) ** 2 * jnp.exp(-log_vars))


def log_prob(theta, logits, means, log_vars):
    """log Σ_k π_k N(θ | μ_k, σ_k²), with π = softmax(logits).

    Args:
        theta: (...,) values.
        logits, means, log_vars: (..., K) mixture parameters (broadcast against θ).

    Returns:
        (...,) log densities.
    """
    comp = component_log_prob(theta, means, log_vars)  # (..., K)
    log_w = _lift(jax.nn.log_softmax(logits, axis=-1), comp.ndim)
    return jax.nn.logsumexp(log_w + comp, axis=-1)


def cdf(theta, logits, means, log_vars):
    """Σ_k π_k Φ((θ − μ_k)/σ_k): the mixture's cumulative distribution function."""
    w = jax.nn.softmax(logits, axis=-1)
    theta = jnp.asarray(theta)[..., None]
    ndim = max(theta.ndim, jnp.ndim(means))
    z = (_lift(theta, ndim) - _lift(means, ndim)) * _lift(jnp.exp(-0.5 * log_vars), ndim)
    return jnp.sum(_lift(w, ndim) * jax.scipy.stats.norm.cdf(z), axis=-1)


def mean(logits, means, log_vars):
    """Mixture mean Σ_k π_k μ_k, shape (...,)."""
    del log_vars
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * means, axis=-1)


def std(logits, means, log_vars):
    """Mixture standard deviation √(Σ_k π_k (σ_k² + μ_k²) − mean²), shape (...,)."""
    w = jax.nn.softmax(logits, axis=-1)
    m = jnp.sum(w * means, axis=-1)
    second = jnp.sum(w * (jnp.exp(log_vars) + (means - m[..., None]) ** 2), axis=-1)
    return jnp.sqrt(second)


def sample(key, logits, means, log_vars, num: int):
    """Draws ``num`` samples from one mixture (parameters of shape (K,)).

    Args:
        key: a ``jax.random`` key.
        logits, means, log_vars: (K,).
        num: number of samples.

    Returns:
        (num,) samples.
    """
    k_comp, k_norm = jax.random.split(key)
    comp = jax.random.categorical(k_comp, logits, shape=(num,))  # (num,)
    eps = jax.random.normal(k_norm, (num,), dtype=means.dtype)
    return means[comp] + jnp.exp(0.5 * log_vars[comp]) * eps


# ----------------------------------------------------------------------------- float64 numpy


_GH_X, _GH_W = np.polynomial.hermite.hermgauss(80)


def moments(logits, means, log_vars) -> tuple[float, float]:
    """Mean and standard deviation of one mixture (parameters (K,)), float64 numpy."""
    w = special.softmax(np.asarray(logits, np.float64))
    means = np.asarray(means, np.float64)
    m = float(w @ means)
    var = float(w @ (np.exp(np.asarray(log_vars, np.float64)) + (means - m) ** 2))
    return m, float(np.sqrt(var))


def transformed_moments(transform, logits, means, log_vars) -> tuple[float, float]:
    """Mean and sd of θ = transform(u), u one Gaussian mixture (Gauss–Hermite, 80 nodes per component)."""
    w = special.softmax(np.asarray(logits, np.float64))
    sd = np.exp(0.5 * np.asarray(log_vars, np.float64))
    nodes = np.asarray(means, np.float64)[:, None] + np.sqrt(2.0) * sd[:, None] * _GH_X  # (K, 80)
    theta = transform(nodes)
    m1 = float(w @ (theta @ _GH_W) / np.sqrt(np.pi))
    m2 = float(w @ ((theta**2) @ _GH_W) / np.sqrt(np.pi))
    return m1, float(np.sqrt(max(m2 - m1 * m1, 0.0)))
