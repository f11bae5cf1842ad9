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

import functools
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


# ----------------------------------------------------------------------------- θ in ℝ^D
#
# A mixture on ℝ^D is ``logits`` (..., K), ``means`` (..., K, D) and ``scales`` (..., K, T), T =
# D(D+1)/2: each component's precision is P = L Lᵀ with L lower triangular, L_dd = exp(−s_d / 2)
# from the first D entries (for D = 1, s is exactly today's log σ²) and the strictly lower entries
# (``numpy.tril_indices(D, -1)`` order) from the rest. The density is normalised with L's own
# determinant, log det P^{1/2} = Σ_d log L_dd = −Σ_d s_d / 2, so it is exact for any s.


def num_scales(dim: int) -> int:
    """T = D(D+1)/2, the scale parameters of one component."""
    return dim * (dim + 1) // 2


def dim_of_scales(t: int) -> int:
    """D from T = D(D+1)/2."""
    dim = int(round((math.sqrt(8 * t + 1) - 1) / 2))
    if num_scales(dim) != t:
        raise ValueError(f"{t} scale parameters do not make a triangular factor")
    return dim


def precision_factor(scales, dim: int | None = None):
    """L (..., D, D), lower triangular with a positive diagonal, from scales (..., T)."""
    scales = jnp.asarray(scales)
    dim = dim_of_scales(scales.shape[-1]) if dim is None else dim
    rows, cols = np.tril_indices(dim, -1)
    factor = jnp.zeros(scales.shape[:-1] + (dim, dim), scales.dtype)
    diag = np.arange(dim)
    factor = factor.at[..., diag, diag].set(jnp.exp(-0.5 * scales[..., :dim]))
    return factor.at[..., rows, cols].set(scales[..., dim:])


def scales_of_factor(factor):
    """The inverse of ``precision_factor``: (..., D, D) → (..., T)."""
    factor = jnp.asarray(factor)
    dim = factor.shape[-1]
    rows, cols = np.tril_indices(dim, -1)
    diag = np.arange(dim)
    return jnp.concatenate([-2.0 * jnp.log(factor[..., diag, diag]), factor[..., rows, cols]], axis=-1)


@functools.cache
def _triangle(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(pick (D, T'), add (T', D)) for the T' = D(D−1)/2 entries below the diagonal, in
    ``precision_factor``'s order: δ @ pick lists δ_row of each entry, (·) @ add sums each into its column."""
    rows, cols = np.tril_indices(dim, -1)
    pick = np.zeros((dim, rows.size), np.float32)
    pick[rows, np.arange(rows.size)] = 1.0
    add = np.zeros((rows.size, dim), np.float32)
    add[np.arange(rows.size), cols] = 1.0
    return pick, add


def mvn_component_log_prob(theta, means, scales):
    """log N(θ | μ_k, (L_k L_kᵀ)⁻¹) for every component.

    Args:
        theta: (..., D).
        means: (..., K, D); scales: (..., K, T).

    Returns:
        (..., K).
    """
    dim = means.shape[-1]
    theta = jnp.asarray(theta)[..., None, :]  # (..., 1, D)
    ndim = max(theta.ndim, jnp.ndim(means))
    theta, means, scales = _lift(theta, ndim), _lift(means, ndim), _lift(scales, ndim)
    delta = theta - means  # (..., K, D)
    # z = Lᵀ δ without building L: z_e = L_ee δ_e + Σ_{d>e} L_de δ_d. The off-diagonal entries are
    # gathered and summed by two constant 0/1 matrices (dense matmuls, exact sums); a scatter into
    # (..., K, D, D) and its gradient cost 2× the whole network's step at D = 10 on XLA:CPU.
    pick, add = (jnp.asarray(m, delta.dtype) for m in _triangle(dim))
    hi = jax.lax.Precision.HIGHEST
    off = jnp.matmul(jnp.matmul(delta, pick, precision=hi) * scales[..., dim:], add, precision=hi)
    z = delta * jnp.exp(-0.5 * scales[..., :dim]) + off
    log_det = -0.5 * jnp.sum(scales[..., :dim], axis=-1)
    return -0.5 * dim * LOG_2PI + log_det - 0.5 * jnp.sum(z * z, axis=-1)


def mvn_log_prob(theta, logits, means, scales):
    """log Σ_k π_k N(θ | μ_k, Σ_k); θ (..., D) against parameters (..., K[, D | T]); returns (...)."""
    comp = mvn_component_log_prob(theta, means, scales)
    return jax.nn.logsumexp(_lift(jax.nn.log_softmax(logits, axis=-1), comp.ndim) + comp, axis=-1)


@functools.partial(jax.jit, static_argnums=1)
def mvn_covariances(scales, dim: int | None = None):
    """Σ_k = (L_k L_kᵀ)⁻¹ = L_k⁻ᵀ L_k⁻¹, (..., K, D, D)."""
    factor = precision_factor(scales, dim)
    eye = jnp.broadcast_to(jnp.eye(factor.shape[-1], dtype=factor.dtype), factor.shape)
    inv = jax.scipy.linalg.solve_triangular(factor, eye, lower=True)  # L⁻¹
    return jnp.einsum("...ji,...jk->...ik", inv, inv, precision=jax.lax.Precision.HIGHEST)


def mvn_mean(logits, means, scales):
    """Mixture mean Σ_k π_k μ_k, (..., D)."""
    del scales
    return jnp.sum(jax.nn.softmax(logits, axis=-1)[..., None] * means, axis=-2)


def mvn_cov(logits, means, scales):
    """Mixture covariance Σ_k π_k (Σ_k + (μ_k − m)(μ_k − m)ᵀ), (..., D, D)."""
    w = jax.nn.softmax(logits, axis=-1)[..., None, None]
    d = means - mvn_mean(logits, means, scales)[..., None, :]
    outer = d[..., :, None] * d[..., None, :]
    return jnp.sum(w * (mvn_covariances(scales, means.shape[-1]) + outer), axis=-3)


@functools.partial(jax.jit, static_argnums=3)
def marginal(logits, means, scales, d: int):
    """The 1-D mixture (logits, means, log_vars) of coordinate d: N(μ_kd, Σ_k,dd) per component."""
    cov = mvn_covariances(scales, means.shape[-1])
    return logits, means[..., d], jnp.log(cov[..., d, d])


def mvn_sample(key, logits, means, scales, num: int):
    """``num`` draws (num, D) from one mixture (parameters (K,), (K, D), (K, T)): μ + L⁻ᵀ ε."""
    k_comp, k_norm = jax.random.split(key)
    comp = jax.random.categorical(k_comp, logits, shape=(num,))
    eps = jax.random.normal(k_norm, (num, means.shape[-1]), dtype=means.dtype)
    factor = precision_factor(scales, means.shape[-1])[comp]  # (num, D, D)
    step = jax.scipy.linalg.solve_triangular(factor, eps[..., None], lower=True, trans="T")[..., 0]
    return means[comp] + step


def quantile(q, logits, means, log_vars, iters: int = 80) -> np.ndarray:
    """The q-quantiles of 1-D mixtures by bisection on the CDF, float64 numpy.

    Args:
        q: (Q,) levels in (0, 1).
        logits, means, log_vars: (..., K).

    Returns:
        (..., Q).
    """
    q = np.asarray(q, np.float64)
    w = special.softmax(np.asarray(logits, np.float64), axis=-1)[..., None, :]  # (..., 1, K)
    m = np.asarray(means, np.float64)[..., None, :]
    sd = np.exp(0.5 * np.asarray(log_vars, np.float64))[..., None, :]
    lo = np.broadcast_to(np.min(m - 40 * sd, axis=-1), m.shape[:-2] + q.shape).copy()
    hi = np.broadcast_to(np.max(m + 40 * sd, axis=-1), m.shape[:-2] + q.shape).copy()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = np.sum(w * special.ndtr((mid[..., None] - m) / sd), axis=-1) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def transformed_moments_nd(inverse, logits, means, covs, nodes: int | None = None):
    """Mean (D,) and covariance (D, D) of θ = inverse(u), u a Gaussian mixture on ℝ^D (parameters
    (K,), (K, D), component covariances (K, D, D)), by a tensor Gauss–Hermite rule, float64.

    ``inverse`` maps (..., D) → (..., D). ``nodes`` per coordinate default to about 2·10^5 in all.
    """
    w = special.softmax(np.asarray(logits, np.float64))
    means, covs = np.asarray(means, np.float64), np.asarray(covs, np.float64)
    dim = means.shape[-1]
    nodes = nodes or max(3, min(80, int(round(2e5 ** (1.0 / dim)))))
    x, wx = np.polynomial.hermite.hermgauss(nodes)
    grid = np.stack(np.meshgrid(*([x] * dim), indexing="ij"), axis=-1).reshape(-1, dim)  # (G, D)
    weights = np.prod(np.stack(np.meshgrid(*([wx] * dim), indexing="ij"), axis=-1).reshape(-1, dim), axis=-1)
    weights = weights / np.pi ** (dim / 2)
    m1, m2 = np.zeros(dim), np.zeros((dim, dim))
    for k in range(w.size):
        chol = np.linalg.cholesky(covs[k])
        theta = inverse(means[k] + np.sqrt(2.0) * grid @ chol.T)  # (G, D)
        m1 += w[k] * (weights @ theta)
        m2 += w[k] * np.einsum("g,gi,gj->ij", weights, theta, theta)
    return m1, m2 - np.outer(m1, m1)


def affine(logits, means, scales, shift, scale):
    """The mixture of u = shift + scale ⊙ z given the mixture of z (per-coordinate shift and
    scale > 0, each (D,)): means move and stretch; the log-variances (D = 1) or the precision
    factor's log-diagonal gain 2 log scale, and row i of the factor's off-diagonal divides by
    scale_i (the precision of u is S⁻¹ L Lᵀ S⁻¹, S = diag(scale)). Logits are unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> _, m, lv = affine(jnp.zeros(1), jnp.ones(1), jnp.zeros(1), jnp.array([2.0]), jnp.array([3.0]))
        >>> float(m[0]), round(float(jnp.exp(lv[0])), 4)
        (5.0, 9.0)
    """
    shift, scale = jnp.asarray(shift), jnp.asarray(scale)
    dim = shift.shape[-1]
    log_scale = jnp.log(scale)
    if means.ndim == logits.ndim:  # D = 1: (..., K)
        return logits, means * scale[0] + shift[0], scales + 2.0 * log_scale[0]
    rows, _ = np.tril_indices(dim, -1)
    lift = lambda a: _lift(a, means.ndim)  # noqa: E731
    diag = scales[..., :dim] + lift(2.0 * log_scale)
    off = scales[..., dim:] / lift(scale[rows])
    return logits, means * lift(scale) + lift(shift), jnp.concatenate([diag, off], axis=-1)
