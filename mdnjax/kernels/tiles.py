"""The fast CPU kernel: the mixture NLL over cache-sized tiles, with a hand-written gradient.

One pass over the samples computes the loss and, per row and component, the
responsibility-weighted statistics Σ w r, Σ w r (θ−μ), Σ w r (θ−μ)²/σ², from which the
gradients with respect to logits, means and log-variances follow in closed form
(``jax.custom_vjp``). Autodiff would keep several (rows, width, K) temporaries alive for its
backward pass. The pass runs one block of ~131k samples at a time (``lax.map``), so the (block, K)
temporaries stay near the cores.

Padded slots are masked with ``jnp.where`` before any sum, so whatever finite value they hold
changes neither the loss nor its gradient. ``nll`` has the signature of every kernel
(``mdnjax.kernels``) and is tested against ``mdnjax.objective.reference_nll``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdnjax import mixture
from mdnjax.data import Data, row_mask


def _tile_sums(const, means, prec, shift, theta, row_count, weight, per_sample_max: bool):
    """The per-sample pass over one tile: loss and responsibility-weighted sums.

    With π = softmax(logits), p_k = exp(−log_vars_k), d = θ − μ_k, q = d² p_k and
    responsibilities r_k = π_k N_k / Σ_j π_j N_j, each sample contributes
    ∂/∂logits_k = π_k − r_k,  ∂/∂μ_k = −r_k d p_k,  ∂/∂log_vars_k = (r_k − r_k q) / 2
    to the gradient of −log p(θ); so Σ w r, Σ w r d and Σ w r q per row are all the backward
    pass needs.

    Args:
        const: (rows, K) log π_k − (log 2π + log σ_k²) / 2.
        means, prec: (rows, K) μ_k and 1/σ_k².
        shift: (rows,) max_k const, the cheap logsumexp shift.
        theta: (rows, width).
        row_count: (rows,) real samples in each row, in its first slots.
        weight: (rows,) weight of each sample in the row, or (rows, width): a weight per slot
            (the binned layout's points carry their bins' counts).
        per_sample_max: shift by the max over components of each sample (always safe) instead of
            ``shift``, which saves a pass but underflows when a sample lies far (≳ 13 σ) from
            every component.

    Returns:
        loss: scalar, −Σ w log p(θ).
        sums: (Σ w r, Σ w r d, Σ w r q), each (rows, K).
        underflow: whether some real sample's density underflowed under ``shift``.
    """
    mask = row_mask(row_count, theta.shape[-1])
    theta = jnp.where(mask, theta, 0.0)  # padding can hold any finite value: never let it reach exp
    d = theta[:, :, None] - means[:, None, :]  # (rows, width, K)
    q = d * d * prec[:, None, :]  # (rows, width, K)
    a = const[:, None, :] - 0.5 * q  # (rows, width, K)
    if per_sample_max:
        sh = jnp.max(a, axis=-1)  # (rows, width)
    else:
        sh = jnp.broadcast_to(shift[:, None], theta.shape)  # (rows, width)
    e = jnp.exp(a - sh[:, :, None])  # (rows, width, K)
    s = jnp.sum(e, axis=-1)  # (rows, width)
    underflow = jnp.any(mask & (s < 1e-30))
    w = jnp.where(mask, weight if weight.ndim == 2 else weight[:, None], 0.0)  # (rows, width)
    loss = -jnp.sum(w * jnp.where(mask, sh + jnp.log(s), 0.0))
    wr = e * jnp.where(mask, w / s, 0.0)[:, :, None]  # (rows, width, K) weighted responsibilities
    sums = (jnp.sum(wr, axis=1), jnp.sum(wr * d, axis=1), jnp.sum(wr * q, axis=1))  # (rows, K) each
    return loss, sums, underflow


# The cheap shift sits HEADROOM nats below max_k const_k, an upper bound of every a_k: exp(a − shift)
# ≤ e^60 and Σ_k ≤ 64·e^60 < 10^28, so no term overflows and w / Σ stays a normal float32 for
# weights down to 1e-9; in exchange a sample may lie 69 + 60 nats below the shift before it
# underflows (≈ 16 σ from every component instead of ≈ 12 σ), which keeps the safe pass rare.
HEADROOM = 60.0


def _stats(logits, means, log_vars, theta, row_count, weight, single_pass: bool):
    """Loss and its gradient with respect to per-row mixture parameters.

    Tiled (CPU): the per-sample pass runs one cache-sized block at a time (``lax.map`` over the
    leading axis), with the cheap per-row shift; a block in which some sample underflowed is redone
    with the safe per-sample shift (``lax.cond`` per block: only the blocks that need it pay for it,
    and nothing when none does). Single pass (accelerators): every block at once with the always-safe
    per-sample shift: no loop whose every iteration launches every kernel again, no data-dependent
    branch (on a GPU a ``lax.cond`` predicate is a device-to-host sync).

    Args:
        logits, means, log_vars: (blocks, block_rows, K).
        theta: (blocks, block_rows, width).
        row_count: (blocks, block_rows).
        weight: (blocks, block_rows) or (blocks, block_rows, width).
        single_pass: which of the two.

    Returns:
        loss: scalar.
        grads: (g_logits, g_means, g_log_vars), each (blocks, block_rows, K).
    """
    log_w = jax.nn.log_softmax(logits, axis=-1)  # (blocks, block_rows, K)
    prec = jnp.exp(-log_vars)
    const = log_w - 0.5 * (mixture.LOG_2PI + log_vars)
    shift = jnp.max(const, axis=-1) - HEADROOM  # (blocks, block_rows)
    if single_pass:
        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        args = tuple(flat(a) for a in (const, means, prec, shift, theta, row_count, weight))
        loss, sums, _ = _tile_sums(*args, True)
        losses = loss[None]
        r0, r1, r2 = (r.reshape(log_w.shape) for r in sums)
    else:
        xs = (const, means, prec, shift, theta, row_count, weight)

        def tile(args):
            loss, sums, underflow = _tile_sums(*args, False)
            return jax.lax.cond(underflow, lambda: _tile_sums(*args, True)[:2], lambda: (loss, sums))

        losses, (r0, r1, r2) = jax.lax.map(tile, xs)
    if weight.ndim == 3:  # per-slot weights: Σ over the row's real slots
        total = jnp.sum(jnp.where(row_mask(row_count, weight.shape[-1]), weight, 0.0), axis=-1)
    else:
        total = row_count.astype(weight.dtype) * weight  # (blocks, block_rows) Σ of the row's weights
    grads = (jnp.exp(log_w) * total[..., None] - r0, -prec * r1, 0.5 * (r0 - r2))
    return jnp.sum(losses), grads


def _make_rows_nll(single_pass: bool):
    @jax.custom_vjp
    def rows_nll(logits, means, log_vars, theta, row_count, weight):
        """−Σ_rows weight · Σ_{first row_count slots} log p(θ), per-row mixtures (blocks, block_rows, K).

        Differentiable in ``logits``, ``means`` and ``log_vars`` through a hand-written VJP.
        """
        return _stats(logits, means, log_vars, theta, row_count, weight, single_pass)[0]

    def fwd(logits, means, log_vars, theta, row_count, weight):
        loss, grads = _stats(logits, means, log_vars, theta, row_count, weight, single_pass)
        return loss, (grads, theta, row_count, weight)

    def bwd(residuals, g):
        (g_logits, g_means, g_log_vars), theta, row_count, weight = residuals
        return (g * g_logits, g * g_means, g * g_log_vars, jnp.zeros_like(theta), None, jnp.zeros_like(weight))

    rows_nll.defvjp(fwd, bwd)
    return rows_nll


rows_nll = _make_rows_nll(single_pass=False)
rows_nll_single_pass = _make_rows_nll(single_pass=True)


def nll(logits, means, log_vars, data: Data):
    """−Σ weight · log q(θ) over every real sample of ``data``, mixture parameters per y.

    Args:
        logits, means, log_vars: (num_y, K) mixture parameters of each y (``data.x`` order).
        data: the layout on the device (``mdnjax.layout.to_data``).

    Returns:
        Scalar loss, differentiable in the mixture parameters.
    """
    r = data.row_y  # (blocks, block_rows)
    return rows_nll(logits[r], means[r], log_vars[r], data.theta, data.row_count, data.weight)


def nll_single_pass(logits, means, log_vars, data: Data):
    """``nll`` in one pass over every block, always with the per-sample shift (for accelerators)."""
    r = data.row_y
    return rows_nll_single_pass(logits[r], means[r], log_vars[r], data.theta, data.row_count, data.weight)
