"""The notebook's objective over all buckets at once.

    L(params) = Σ_y  (1/n_y) Σ_{i: y_i = y}  −log Σ_k π_k(y) N(θ_i | μ_k(y), σ_k²(y))

Two implementations compute the same number:

* ``padded_loss`` — the reference design: a vmapped, masked logsumexp NLL per bucket row,
  differentiated by autodiff. Independent of the fast path, used to check it.
* ``rows_loss`` — the fast path, for any row layout (packed or padded). Each row carries a
  per-sample weight (1/n_y for the notebook's per-y weighting), and the mixture NLL has a
  hand-written gradient (``jax.custom_vjp``): one pass over the samples computes the loss and
  the responsibility-weighted statistics Σ w r, Σ w r (θ−μ), Σ w r (θ−μ)²/σ², from which the
  gradients with respect to logits, means and log-variances follow in closed form. Autodiff
  would keep several (rows, width, K) temporaries alive for its backward pass.

Padded slots are masked with ``jnp.where`` before any sum, so whatever finite value they hold
changes neither the loss nor its gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdnjax import mixture, model


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


def padded_loss(params, graphdef, x, theta, mask):
    """The reference objective on the padded (num_y, max_n) layout, one row per y.

    Args:
        params: MDN parameters (pure dict).
        graphdef: MDN graph definition.
        x: (num_y,) network inputs y / n.
        theta, mask: (num_y, max_n) bucketed samples and their mask.

    Returns:
        Scalar loss Σ_y mean_i NLL.
    """
    logits, means, log_vars = model.apply(graphdef, params, x)  # (num_y, K) each
    return jnp.sum(jax.vmap(bucket_nll)(theta, mask, logits, means, log_vars))


def _rows_stats(logits, means, log_vars, theta, mask, weight):
    """Loss and its gradient with respect to per-row mixture parameters.

    Args:
        logits, means, log_vars: (rows, K).
        theta, mask: (rows, width).
        weight: (rows,) weight of each sample in the row.

    Returns:
        loss: scalar.
        grads: (g_logits, g_means, g_log_vars), each (rows, K).
    """
    theta = jnp.where(mask, theta, 0.0)  # padding can hold any finite value: never let it reach exp
    log_w = jax.nn.log_softmax(logits, axis=-1)  # (rows, K)
    prec = jnp.exp(-log_vars)  # (rows, K)
    const = log_w - 0.5 * (mixture.LOG_2PI + log_vars)  # (rows, K)
    d = theta[:, :, None] - means[:, None, :]  # (rows, width, K)
    q = d * d * prec[:, None, :]  # (rows, width, K)
    a = const[:, None, :] - 0.5 * q  # (rows, width, K)
    m = jnp.max(a, axis=-1, keepdims=True)  # (rows, width, 1)
    e = jnp.exp(a - m)  # (rows, width, K)
    s = jnp.sum(e, axis=-1, keepdims=True)  # (rows, width, 1)
    ll = (m + jnp.log(s))[..., 0]  # (rows, width)
    w = jnp.where(mask, weight[:, None], 0.0)  # (rows, width)
    loss = -jnp.sum(w * jnp.where(mask, ll, 0.0))
    wr = e * (w[..., None] / s)  # (rows, width, K): weighted responsibilities
    r0 = jnp.sum(wr, axis=1)  # (rows, K)
    r1 = jnp.sum(wr * d, axis=1)  # (rows, K)
    r2 = jnp.sum(wr * q, axis=1)  # (rows, K)
    total = jnp.sum(w, axis=1)  # (rows,)
    g_logits = jnp.exp(log_w) * total[:, None] - r0
    g_means = -prec * r1
    g_log_vars = 0.5 * (r0 - r2)
    return loss, (g_logits, g_means, g_log_vars)


@jax.custom_vjp
def rows_nll(logits, means, log_vars, theta, mask, weight):
    """−Σ_rows weight · Σ_width mask · log p(θ) with per-row mixtures (rows, K).

    Differentiable in ``logits``, ``means`` and ``log_vars`` through a hand-written VJP.
    """
    return _rows_stats(logits, means, log_vars, theta, mask, weight)[0]


def _rows_nll_fwd(logits, means, log_vars, theta, mask, weight):
    loss, grads = _rows_stats(logits, means, log_vars, theta, mask, weight)
    return loss, (grads, theta, mask, weight)


def _rows_nll_bwd(residuals, g):
    (g_logits, g_means, g_log_vars), theta, mask, weight = residuals
    return (
        g * g_logits,
        g * g_means,
        g * g_log_vars,
        jnp.zeros_like(theta),
        None,
        jnp.zeros_like(weight),
    )


rows_nll.defvjp(_rows_nll_fwd, _rows_nll_bwd)


def rows_loss(params, graphdef, x, theta, mask, row_y, weight):
    """The objective on any row layout (packed or padded), with the fast hand-written gradient.

    Args:
        params: MDN parameters.
        graphdef: MDN graph definition.
        x: (num_y,) network inputs y / n.
        theta, mask: (rows, width) samples and mask.
        row_y: (rows,) index of each row's y in ``x``.
        weight: (rows,) weight of each sample of a row (1/n_y for the per-y objective).

    Returns:
        Scalar loss.
    """
    logits, means, log_vars = model.apply(graphdef, params, x)  # (num_y, K)
    return rows_nll(logits[row_y], means[row_y], log_vars[row_y], theta, mask, weight)
