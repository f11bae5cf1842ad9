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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import buckets, mixture, model


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


class Data(NamedTuple):
    """Device arrays of a bucket layout, rows grouped in blocks for cache-sized tiles.

    Each row's samples fill its first ``row_count`` slots. Rows are padded to
    ``blocks × block_rows`` with empty rows (row_count 0, weight 0).
    """

    x: jax.Array  # (num_y,) network inputs y / n
    theta: jax.Array  # (blocks, block_rows, width)
    row_count: jax.Array  # (blocks, block_rows) real samples in each row
    row_y: jax.Array  # (blocks, block_rows) index of each row's y in x
    weight: jax.Array  # (blocks, block_rows) weight of each sample of the row: 1 / n_y or 1 / N

    @property
    def mask(self) -> jax.Array:
        """(blocks, block_rows, width) True where a slot holds a real sample."""
        return _mask(self.row_count, self.theta.shape[-1])


def _mask(row_count, width: int):
    """(..., width) True in the first ``row_count`` slots of each row."""
    return jax.lax.broadcasted_iota(jnp.int32, row_count.shape + (width,), row_count.ndim) < row_count[..., None]


BLOCK = 131_072  # samples per tile: 4 MiB per (width, K) float32 temporary (measured faster than 32k–256k)


def tile_shape(rows: int, width: int, block: int | None = BLOCK, shards: int = 1) -> tuple[int, int]:
    """``(blocks, block_rows)`` of ``to_data``'s tiles for a layout of ``rows`` rows.

    ``ceil(rows·width / block)`` blocks of equal row counts, a multiple of ``shards``
    (``block=None``: a single block).
    """
    blocks = 1 if block is None else max(1, -(-rows * width // block))
    block_rows = -(-rows // blocks)
    block_rows += (-block_rows) % shards
    return blocks, block_rows


def spare_rows(block: int | None = BLOCK, shards: int = 1):
    """``f(rows, width)``: the empty rows ``to_data`` appends, for ``buckets.bucket_streamed``."""

    def f(rows: int, width: int) -> int:
        blocks, block_rows = tile_shape(rows, width, block, shards)
        return blocks * block_rows - rows

    return f


def to_data(
    b, trials: int, dtype=jnp.float32, block: int | None = BLOCK, weighting: str = "per-y", shards: int = 1
) -> Data:
    """Moves a ``buckets.Buckets`` layout to the device, with the objective's sample weights.

    Without a copy where possible: a float32 layout that already ends with the empty rows the
    tiles need (``buckets.bucket_streamed(spare_rows=...)``) goes to a CPU device in place; the
    device array then shares the memory of ``b.theta``, which must not be modified afterwards.

    Args:
        b: the bucket layout.
        trials: n, to form the inputs x = y / n.
        dtype: float dtype of θ, x and the weights.
        block: samples per tile; rows are grouped into ``ceil(rows·width / block)`` blocks
            (``None``: a single block, as the padded reference expects).
        weighting: ``"per-y"``: weight 1 / n_y, so the loss is Σ_y of each y's mean NLL (the
            notebook's); ``"per-sample"``: weight 1 / N, the mean NLL over all samples.
        shards: devices the rows of each block will be split over; ``block_rows`` is padded to a
            multiple of it with empty rows (row_count 0, weight 0).

    Returns:
        ``Data`` with a leading block axis.
    """
    if weighting not in ("per-y", "per-sample"):
        raise ValueError(f"unknown weighting {weighting!r}")
    total, width = b.theta.shape
    used = int(np.flatnonzero(b.row_count)[-1]) + 1 if total else 0  # rows before the trailing empty ones
    blocks, block_rows = tile_shape(used, width, block, shards)
    rows = blocks * block_rows
    theta, row_count, row_y = b.theta[:rows], b.row_count[:rows], b.row_y[:rows]
    if rows > total:  # one host copy with the empty rows appended
        theta = buckets.aligned_empty((rows, width), np.dtype(dtype))
        theta[:total], theta[total:] = b.theta, 0.0
        row_count = np.pad(b.row_count, (0, rows - total))
        row_y = np.pad(b.row_y, (0, rows - total))
    if weighting == "per-y":
        weight = 1.0 / b.counts[row_y].astype(np.float64)
    else:
        weight = np.full(rows, 1.0 / b.num_samples)
    weight = np.where(row_count > 0, weight, 0.0)
    shape = (blocks, block_rows)
    # device_put of arrays already in their final dtype: no copy of an aligned float32 θ on CPU
    put = lambda a, dt=None: jax.device_put(np.asarray(a, dt))  # noqa: E731
    return Data(
        x=put(b.y_values / trials, dtype),
        theta=put(theta.reshape(shape + (width,)), dtype),
        row_count=put(row_count.reshape(shape), np.int32),
        row_y=put(row_y.reshape(shape), np.int32),
        weight=put(weight.reshape(shape), dtype),
    )


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
        weight: (rows,) weight of each sample in the row.
        per_sample_max: shift by the max over components of each sample (always safe) instead of
            ``shift``, which saves a pass but underflows when a sample lies far (≳ 13 σ) from
            every component.

    Returns:
        loss: scalar, −Σ w log p(θ).
        sums: (Σ w r, Σ w r d, Σ w r q), each (rows, K).
        underflow: whether some real sample's density underflowed under ``shift``.
    """
    mask = _mask(row_count, theta.shape[-1])
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
    w = jnp.where(mask, weight[:, None], 0.0)  # (rows, width)
    loss = -jnp.sum(w * jnp.where(mask, sh + jnp.log(s), 0.0))
    wr = e * jnp.where(mask, w / s, 0.0)[:, :, None]  # (rows, width, K) weighted responsibilities
    sums = (jnp.sum(wr, axis=1), jnp.sum(wr * d, axis=1), jnp.sum(wr * q, axis=1))  # (rows, K) each
    return loss, sums, underflow


def _tiled_stats(logits, means, log_vars, theta, row_count, weight):
    """Loss and its gradient with respect to per-row mixture parameters.

    The per-sample pass runs one cache-sized block at a time (``lax.map`` over the leading
    axis), with the cheap per-row shift; if any sample underflowed, the whole pass is redone with
    the safe per-sample shift (``lax.cond``: the safe pass costs nothing when not taken).

    Args:
        logits, means, log_vars: (blocks, block_rows, K).
        theta: (blocks, block_rows, width).
        row_count, weight: (blocks, block_rows).

    Returns:
        loss: scalar.
        grads: (g_logits, g_means, g_log_vars), each (blocks, block_rows, K).
    """
    log_w = jax.nn.log_softmax(logits, axis=-1)  # (blocks, block_rows, K)
    prec = jnp.exp(-log_vars)
    const = log_w - 0.5 * (mixture.LOG_2PI + log_vars)
    shift = jnp.max(const, axis=-1)  # (blocks, block_rows)
    xs = (const, means, prec, shift, theta, row_count, weight)
    losses, sums, underflow = jax.lax.map(lambda args: _tile_sums(*args, False), xs)
    losses, (r0, r1, r2) = jax.lax.cond(
        jnp.any(underflow),
        lambda: jax.lax.map(lambda args: _tile_sums(*args, True)[:2], xs),
        lambda: (losses, sums),
    )
    total = row_count.astype(weight.dtype) * weight  # (blocks, block_rows) Σ of the row's weights
    grads = (jnp.exp(log_w) * total[..., None] - r0, -prec * r1, 0.5 * (r0 - r2))
    return jnp.sum(losses), grads


@jax.custom_vjp
def rows_nll(logits, means, log_vars, theta, row_count, weight):
    """−Σ_rows weight · Σ_{first row_count slots} log p(θ), per-row mixtures (blocks, block_rows, K).

    Differentiable in ``logits``, ``means`` and ``log_vars`` through a hand-written VJP.
    """
    return _tiled_stats(logits, means, log_vars, theta, row_count, weight)[0]


def _rows_nll_fwd(logits, means, log_vars, theta, row_count, weight):
    loss, grads = _tiled_stats(logits, means, log_vars, theta, row_count, weight)
    return loss, (grads, theta, row_count, weight)


def _rows_nll_bwd(residuals, g):
    (g_logits, g_means, g_log_vars), theta, row_count, weight = residuals
    return (g * g_logits, g * g_means, g * g_log_vars, jnp.zeros_like(theta), None, jnp.zeros_like(weight))


rows_nll.defvjp(_rows_nll_fwd, _rows_nll_bwd)


def rows_loss(params, graphdef, data: Data):
    """The objective on any row layout (packed or padded), with the fast hand-written gradient.

    Args:
        params: MDN parameters.
        graphdef: MDN graph definition.
        data: the layout on the device (``to_data``).

    Returns:
        Scalar loss.
    """
    logits, means, log_vars = model.apply(graphdef, params, data.x)  # (num_y, K)
    r = data.row_y  # (blocks, block_rows)
    return rows_nll(logits[r], means[r], log_vars[r], data.theta, data.row_count, data.weight)
