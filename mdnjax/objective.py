"""The objectives: over buckets (and its reference implementation, the oracle every fast kernel is
tested against) and over single pairs (``sample_nll``, the per-sample layout).

    L(params) = Σ_rows weight_row · Σ_{i in row} −log Σ_k π_k(y) N(θ_i | μ_k(y), σ_k²(y))

With weight 1/n_y this is the notebook's Σ_y mean NLL; with 1/N the mean NLL over all pairs.
``reference_nll`` is a vmapped, masked logsumexp differentiated by autodiff, independent of the
hand-written gradient in ``mdnjax.kernels.tiles``.

Example:
    >>> import jax.numpy as jnp
    >>> theta, mask = jnp.array([0.0, 1.0, 9.0]), jnp.array([True, True, False])
    >>> round(float(bucket_nll(theta, mask, jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))), 4)
    1.1689
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdnjax import mixture, model
from mdnjax.data import Data


def bucket_nll(theta, mask, logits, means, log_vars):
    """Mean NLL of one bucket's samples under one mixture.

    Args:
        theta: (max_n,) samples, padded.
        mask: (max_n,) True for real samples.
        logits, means, log_vars: (K,) mixture parameters.

    Returns:
        Scalar: −(1/n) Σ_i mask_i log p(θ_i).
    """
    theta = jnp.where(mask, theta, 0.0)  # padding can hold any finite value: never let it reach exp
    ll = mixture.log_prob(theta, logits, means, log_vars)  # (max_n,)
    ll = jnp.where(mask, ll, 0.0)
    return -jnp.sum(ll) / jnp.sum(mask).astype(ll.dtype)


def reference_nll(logits, means, log_vars, data: Data):
    """The kernel signature's reference: −Σ weight · log q(θ), by vmapped logsumexp and autodiff.

    Args:
        logits, means, log_vars: (num_y, K) mixture parameters of each y; for θ ∈ ℝ^D means
            (num_y, K, D) and the scales (num_y, K, D(D+1)/2) (``mdnjax.mixture``).
        data: any row layout on the device.

    Returns:
        Scalar loss.
    """
    r = data.row_y.reshape(-1)  # (rows,)
    if means.ndim == 3:  # θ ∈ ℝ^D: data.theta is (blocks, block_rows, width, D)
        dim = means.shape[-1]
        theta = data.theta.reshape(r.shape[0], -1, dim)  # (rows, width, D)
        mask = data.mask.reshape(theta.shape[:2])
        theta = jnp.where(mask[..., None], theta, 0.0)
        ll = jax.vmap(mixture.mvn_log_prob, in_axes=(0, None, None, None))(
            jnp.swapaxes(theta, 0, 1), logits[r], means[r], log_vars[r]
        ).T  # (rows, width)
    else:
        theta = data.theta.reshape(-1, data.theta.shape[-1])  # (rows, width)
        mask = data.mask.reshape(theta.shape)  # (rows, width)
        theta = jnp.where(mask, theta, 0.0)
        ll = jax.vmap(mixture.log_prob)(theta, logits[r], means[r], log_vars[r])  # (rows, width)
    ll = jnp.where(mask, ll, 0.0)
    if data.weight.ndim == 3:  # a weight per slot (the binned layout)
        return -jnp.sum(data.weight.reshape(mask.shape) * ll)
    return -jnp.sum(data.weight.reshape(-1) * jnp.sum(ll, axis=-1))


def loss(params, graphdef, data: Data, kernel=reference_nll):
    """The objective of the MDN's parameters: the network once per distinct y, then ``kernel``.

    Args:
        params: MDN parameters (pure dict).
        graphdef: MDN graph definition.
        data: the layout on the device.
        kernel: ``nll(logits, means, log_vars, data)`` (``mdnjax.kernels``).

    Returns:
        Scalar loss.
    """
    logits, means, log_vars = model.apply(graphdef, params, data.x)  # (num_y, K) each
    return kernel(logits, means, log_vars, data)


def sample_nll(params, graphdef, x, theta):
    """The per-sample objective: mean over pairs of −log q(θ_i | y_i), one mixture per pair.

    Args:
        params: MDN parameters (pure dict).
        graphdef: MDN graph definition.
        x: (B,) or (B, M) network inputs, one per pair.
        theta: (B,) or (B, D) the pairs' θ (the network's space).

    Returns:
        Scalar loss.
    """
    logits, means, scales = model.apply(graphdef, params, x)
    lp = mixture.log_prob if means.ndim == logits.ndim else mixture.mvn_log_prob
    return -jnp.mean(lp(theta, logits, means, scales))
