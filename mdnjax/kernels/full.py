"""The fused kernel for θ ∈ ℝ^D: full-covariance mixtures, one pass, a hand-written gradient.

Each component k of a row's mixture has a mean μ_k ∈ ℝ^D and a lower-triangular precision factor
L_k (P_k = L_k L_kᵀ, ``mdnjax.mixture.precision_factor``). One pass over the samples computes the
loss and, per row and component, the responsibility-weighted statistics

    S0_k = Σ w r_k,    S1_k = Σ w r_k δ_k  (D),    S2_k = Σ w r_k δ_k δ_kᵀ  (D × D),   δ_k = θ − μ_k,

from which the gradient of −Σ w log Σ_k π_k N(θ | μ_k, P_k⁻¹) follows in closed form:

    ∂/∂logits_k = π_k Σ w − S0_k,    ∂/∂μ_k = −P_k S1_k,
    ∂/∂L_k = −(S0_k diag(1/L_k,dd) − S2_k L_k)   (lower triangle),

and ∂/∂s_d = −½ L_dd ∂/∂L_dd for the diagonal's log parameters. The residuals of the backward
pass are these (rows, K, D, D) sums, not the (samples, K) temporaries autodiff would keep.

The coordinates are unrolled (D is small): every per-sample quantity is a (rows, width, K) array
and XLA fuses the whole pass. The shift of the logsumexp is per sample (always safe). On CPU the
pass runs one cache-sized block at a time (``lax.map``); ``single_pass`` does every block at once
(accelerators). ``nll`` has the kernels' signature and is tested against
``mdnjax.objective.reference_nll``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import mixture
from mdnjax.layout import Data, row_mask


def _tile_sums(logits, means, scales, theta, row_count, weight):
    """The per-sample pass over rows: loss and S0 (rows, K), S1 (rows, K, D), S2 (rows, K, D, D).

    Args:
        logits: (rows, K); means: (rows, K, D); scales: (rows, K, T).
        theta: (rows, width, D); row_count: (rows,).
        weight: (rows,) per sample of the row, or (rows, width) per slot.
    """
    dim = means.shape[-1]
    width = theta.shape[1]
    mask = row_mask(row_count, width)  # (rows, width)
    factor = mixture.precision_factor(scales, dim)  # (rows, K, D, D)
    const = jax.nn.log_softmax(logits, axis=-1) - 0.5 * jnp.sum(scales[..., :dim], axis=-1) - 0.5 * dim * mixture.LOG_2PI
    theta = jnp.where(mask[..., None], theta, 0.0)  # padding never reaches exp
    delta = [theta[:, :, None, d] - means[:, None, :, d] for d in range(dim)]  # D × (rows, width, K)
    quad = 0.0
    for e in range(dim):  # z_e = (Lᵀ δ)_e = Σ_{d ≥ e} L_de δ_d
        z = sum(factor[:, None, :, d, e] * delta[d] for d in range(e, dim))
        quad = quad + z * z
    a = const[:, None, :] - 0.5 * quad  # (rows, width, K)
    shift = jnp.max(a, axis=-1)  # (rows, width)
    ex = jnp.exp(a - shift[..., None])
    s = jnp.sum(ex, axis=-1)
    w = jnp.where(mask, weight if weight.ndim == 2 else weight[:, None], 0.0)  # (rows, width)
    loss = -jnp.sum(w * jnp.where(mask, shift + jnp.log(s), 0.0))
    wr = ex * jnp.where(mask, w / s, 0.0)[..., None]  # (rows, width, K)
    s0 = jnp.sum(wr, axis=1)
    wd = [wr * delta[d] for d in range(dim)]
    s1 = jnp.stack([jnp.sum(x, axis=1) for x in wd], axis=-1)  # (rows, K, D)
    s2 = [[None] * dim for _ in range(dim)]
    for d in range(dim):
        for e in range(d + 1):
            s2[d][e] = s2[e][d] = jnp.sum(wd[d] * delta[e], axis=1)
    s2 = jnp.stack([jnp.stack(row, axis=-1) for row in s2], axis=-2)  # (rows, K, D, D)
    return loss, (s0, s1, s2)


def _stats(logits, means, scales, theta, row_count, weight, single_pass: bool):
    """Loss and its gradient with respect to per-row mixture parameters (blocks, block_rows, ...)."""
    if single_pass:
        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        loss, sums = _tile_sums(*(flat(a) for a in (logits, means, scales, theta, row_count, weight)))
        s0, s1, s2 = (x.reshape(logits.shape[:2] + x.shape[1:]) for x in sums)
    else:
        losses, (s0, s1, s2) = jax.lax.map(
            lambda args: _tile_sums(*args), (logits, means, scales, theta, row_count, weight)
        )
        loss = jnp.sum(losses)
    dim = means.shape[-1]
    if weight.ndim == 3:
        total = jnp.sum(jnp.where(row_mask(row_count, weight.shape[-1]), weight, 0.0), axis=-1)
    else:
        total = row_count.astype(weight.dtype) * weight  # (blocks, block_rows)
    factor = mixture.precision_factor(scales, dim)  # (..., K, D, D)
    hi = jax.lax.Precision.HIGHEST
    g_logits = jax.nn.softmax(logits, axis=-1) * total[..., None] - s0
    lt_s1 = jnp.einsum("...de,...d->...e", factor, s1, precision=hi)  # Lᵀ S1
    g_means = -jnp.einsum("...de,...e->...d", factor, lt_s1, precision=hi)  # −L Lᵀ S1
    diag = np.arange(dim)
    g_factor = jnp.einsum("...ij,...jk->...ik", s2, factor, precision=hi)  # S2 L
    g_factor = g_factor.at[..., diag, diag].add(-s0[..., None] / factor[..., diag, diag])
    rows, cols = np.tril_indices(dim, -1)
    g_scales = jnp.concatenate(
        [-0.5 * factor[..., diag, diag] * g_factor[..., diag, diag], g_factor[..., rows, cols]], axis=-1
    )
    return loss, (g_logits, g_means, g_scales)


def _make_rows_nll(single_pass: bool):
    @jax.custom_vjp
    def rows_nll(logits, means, scales, theta, row_count, weight):
        """−Σ_rows weight · Σ_{first row_count slots} log q(θ) for per-row mixtures."""
        return _stats(logits, means, scales, theta, row_count, weight, single_pass)[0]

    def fwd(logits, means, scales, theta, row_count, weight):
        loss, grads = _stats(logits, means, scales, theta, row_count, weight, single_pass)
        return loss, (grads, theta, weight)

    def bwd(residuals, g):
        grads, theta, weight = residuals
        return (*(g * x for x in grads), jnp.zeros_like(theta), None, jnp.zeros_like(weight))

    rows_nll.defvjp(fwd, bwd)
    return rows_nll


rows_nll = _make_rows_nll(single_pass=False)
rows_nll_single_pass = _make_rows_nll(single_pass=True)


def nll(logits, means, scales, data: Data):
    """−Σ weight · log q(θ) over every real sample of ``data`` (θ ∈ ℝ^D), mixtures per y.

    Args:
        logits: (num_y, K); means: (num_y, K, D); scales: (num_y, K, D(D+1)/2).
        data: the layout on the device, ``data.theta`` (blocks, block_rows, width, D).

    Returns:
        Scalar loss, differentiable in the mixture parameters.
    """
    r = data.row_y
    return rows_nll(logits[r], means[r], scales[r], data.theta, data.row_count, data.weight)


def nll_single_pass(logits, means, scales, data: Data):
    """``nll`` over every block at once (for accelerators)."""
    r = data.row_y
    return rows_nll_single_pass(logits[r], means[r], scales[r], data.theta, data.row_count, data.weight)
