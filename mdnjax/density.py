"""A posterior's mixture as densities on θ's own space: the fitting-space transform applied
coordinate by coordinate, each question one jit-compiled function (a handful of compiled shapes
serve every call: batches are padded to powers of two where they are flat).

Example:
    >>> import jax.numpy as jnp
    >>> from mdnjax.task import Bound
    >>> lp = log_prob(jnp.array([0.5, 2.0]), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), (Bound(0.0, 1.0),), True)
    >>> [round(float(v), 4) for v in lp]
    [0.4674, -inf]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import mixture
from mdnjax.task import Bound

BLOCK = 16_384  # draws per call of the paired densities: larger batches loop over blocks of this size


def inner_point(b: Bound) -> float:
    """A point inside the support, to keep masked-out lanes finite."""
    if b.kind == "interval":
        return 0.5 * (b.low + b.high)
    if b.kind == "lower":
        return b.low + 1.0
    if b.kind == "upper":
        return b.high - 1.0
    return 0.0


def to_fitting(theta, bounds: tuple[Bound, ...]):
    """(u, log |du/dθ| summed over coordinates, inside) for θ (..., D) (or (...,) when D = 1);
    ``inside`` is False outside the support and for NaN θ."""
    dim = len(bounds)
    cols = [theta] if dim == 1 else [theta[..., d] for d in range(dim)]
    us, jac, inside = [], 0.0, True
    for b, t in zip(bounds, cols):
        ok = b.contains(t, jnp)
        safe = jnp.where(ok, t, inner_point(b))
        us.append(b.forward(safe, jnp))
        jac = jac + b.log_abs_det_jacobian(safe, jnp)
        inside = inside & ok
    u = us[0] if dim == 1 else jnp.stack(us, axis=-1)
    return u, jac, inside


def from_fitting(u, bounds: tuple[Bound, ...]):
    """θ = f⁻¹(u), coordinate by coordinate."""
    if len(bounds) == 1:
        return bounds[0].inverse(u, jnp)
    return jnp.stack([b.inverse(u[..., d], jnp) for d, b in enumerate(bounds)], axis=-1)


@functools.partial(jax.jit, static_argnums=(4, 5))
def log_prob(theta, logits, means, scales, bounds: tuple[Bound, ...], unconstrained: bool):
    """log q(θ) of mixtures (fitting space) at θ (…, D) (θ (…) for D = 1); −inf outside the support
    and for NaN θ, in either space. Unconstrained: q(θ) = q_u(f(θ)) Π_d |f_d'(θ_d)|."""
    lp_u = mixture.log_prob if len(bounds) == 1 else mixture.mvn_log_prob
    u, jac, inside = to_fitting(theta, bounds)
    if unconstrained:
        return jnp.where(inside, lp_u(u, logits, means, scales) + jac, -jnp.inf)
    safe = jnp.where(inside[..., None] if len(bounds) > 1 else inside, theta, 0.0)
    return jnp.where(inside, lp_u(safe, logits, means, scales), -jnp.inf)


@functools.partial(jax.jit, static_argnums=(4, 5))
def marginal_cdf(theta, logits, means, scales, bound: Bound, unconstrained: bool):
    """The CDF of one coordinate's marginal mixture (logits, means, log-variances) at θ_d."""
    if not unconstrained:
        return mixture.cdf(theta, logits, means, scales)
    lo, hi = theta <= bound.low, theta >= bound.high
    u = bound.forward(jnp.where(lo | hi, inner_point(bound), theta), jnp)
    return jnp.where(lo, 0.0, jnp.where(hi, 1.0, mixture.cdf(u, logits, means, scales)))


def bucket_size(n: int) -> int:
    """The next power of two ≥ n (at least 8): the padded batch sizes compiled code sees."""
    return max(8, 1 << max(int(n) - 1, 0).bit_length())


@jax.jit
def log_prob_and_cdf(x, logits, means, log_vars):
    return mixture.log_prob(x, logits, means, log_vars), mixture.cdf(x, logits, means, log_vars)


@jax.jit
def mvn_log_prob_and_cdf(u, logits, means, scales):
    """log q_u(u) (n,) and the marginal CDFs (n, D) of paired u (n, D) and mixtures."""
    lp = mixture.mvn_log_prob(u, logits, means, scales)
    cdfs = [mixture.cdf(u[:, d], *mixture.marginal(logits, means, scales, d)) for d in range(u.shape[-1])]
    return lp, jnp.stack(cdfs, axis=-1)


@jax.jit
def _fitting_log_prob_one(u, logits, means, scales):
    lp = mixture.log_prob if u.ndim == 1 else mixture.mvn_log_prob
    return lp(u, logits, means, scales)


def in_blocks(fn, blocked, shared=()):
    """``fn(*blocks, *shared)`` over the rows of the arrays ``blocked`` (n rows each) in blocks of
    ``BLOCK``, the last zero-padded, so every n runs one compiled shape; each output's first n rows
    joined, float64 numpy (a tuple when ``fn`` returns one)."""
    n = np.shape(blocked[0])[0]
    total = -(-n // BLOCK) * BLOCK
    padded = [np.zeros((total,) + np.shape(a)[1:], np.float32) for a in blocked]
    for p, a in zip(padded, blocked):
        p[:n] = a
    parts = [fn(*(p[i : i + BLOCK] for p in padded), *shared) for i in range(0, total, BLOCK)]

    def joined(pieces):
        return np.concatenate([np.asarray(x) for x in pieces])[:n].astype(np.float64)

    if isinstance(parts[0], tuple):
        return tuple(joined([p[j] for p in parts]) for j in range(len(parts[0])))
    return joined(parts)


def fitting_log_prob_one(u: np.ndarray, logits, means, scales) -> np.ndarray:
    """log q_u(u) (n,) of many points u (n,) or (n, D) under one mixture (parameters (K,), (K,[D | T])),
    in blocks of ``BLOCK`` (one compiled shape for every n); float64 numpy."""
    return in_blocks(_fitting_log_prob_one, [np.asarray(u, np.float32)], (logits, means, scales))


DRAWS = 4096  # draws per row per compiled call: any n is drawn in chunks of this many


@jax.jit
def _chunk_nd(key, logits, means, scales):
    keys = jax.random.split(key, logits.shape[0])
    return jax.vmap(lambda k, lg, m, s: mixture.mvn_sample(k, lg, m, s, DRAWS))(keys, logits, means, scales)


@jax.jit
def _chunk(key, logits, means, log_vars):
    keys = jax.random.split(key, logits.shape[0])
    return jax.vmap(lambda k, lg, m, lv: mixture.sample(k, lg, m, lv, DRAWS))(keys, logits, means, log_vars)


def _in_chunks(chunk, key, params, n: int) -> np.ndarray:
    """``n`` draws per row as ⌈n / DRAWS⌉ calls of one compiled program (chunk i from
    ``fold_in(key, i)``), so every n shares it."""
    parts = [np.asarray(chunk(jax.random.fold_in(key, i), *params)) for i in range(-(-int(n) // DRAWS))]
    return np.concatenate(parts, axis=1)[:, :n]


def sample_rows_nd(key, logits, means, scales, n: int) -> np.ndarray:
    """``n`` draws from each row's mixture on ℝ^D, (rows, n, D)."""
    return _in_chunks(_chunk_nd, key, (logits, means, scales), n)


def sample_rows(key, logits, means, log_vars, n: int) -> np.ndarray:
    """``n`` draws from each row's mixture, (rows, n)."""
    return _in_chunks(_chunk, key, (logits, means, log_vars), n)
