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

Both the exponents and the statistics are products with the per-sample features
φ(x) = (1, x, upper triangle of x xᵀ), x = θ − c centred on its row's mean c (which keeps the
cancellation in the expansion of (x − μ)ᵀ P (x − μ) small): a_k = φ(x) · coef_k is one small matmul,
and Σ w r φ is another, from which S1 and S2 follow by re-centring on μ_k. The per-sample work is
then K exponentials and a sum, as for D = 1. The logsumexp shift is the cheap per-row bound of
``mdnjax.kernels.tiles`` (every a_k ≤ log π_k + log det L_k − D log(2π)/2), with a per-tile
fallback to the per-sample max when a sample underflows (``lax.cond``); ``single_pass`` does every
block at once with the per-sample max (accelerators: no tile loop, no data-dependent branch).
``nll`` has the kernels' signature and is tested against ``mdnjax.objective.reference_nll``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import mixture
from mdnjax.data import Data, row_mask
from mdnjax.kernels.tiles import HEADROOM

HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products on every backend (no TF32)
MATMUL_WIDTH = 96  # rows at least this wide use batched matmuls (measured faster on CPU from ~96 slots)


def _coefficients(logits, means, scales, centre):
    """Per y: a_k(x) = φ(x) · coef_k for x = θ − centre, and the cheap shift's bound.

    Returns:
        coef: (U, K, P) with P = 1 + D + D(D+1)/2; bound: (U,) max_k of log π_k + log det L_k − D log(2π)/2,
        which no exponent exceeds; mu: (U, K, D) the means relative to the centre; factor: (U, K, D, D).
    """
    dim = means.shape[-1]
    factor = mixture.precision_factor(scales, dim)
    const = jax.nn.log_softmax(logits, axis=-1) - 0.5 * jnp.sum(scales[..., :dim], axis=-1)
    const = const - 0.5 * dim * mixture.LOG_2PI
    mu = means - centre[:, None, :]
    prec = jnp.einsum("ukde,ukfe->ukdf", factor, factor, precision=HIGHEST)  # P = L Lᵀ
    pm = jnp.einsum("ukde,uke->ukd", prec, mu, precision=HIGHEST)
    c0 = const - 0.5 * jnp.sum(mu * pm, axis=-1)
    iu, ju = np.triu_indices(dim)
    twice = np.where(iu == ju, 1.0, 2.0).reshape(1, 1, -1)  # off-diagonal terms appear twice in xᵀ P x
    coef = jnp.concatenate([c0[..., None], pm, -0.5 * prec[..., iu, ju] * twice], axis=-1)
    return coef, jnp.max(const, axis=-1), mu, factor


def _tile_sums(coef, bound, centre, theta, row_count, weight, per_sample_max: bool):
    """The per-sample pass over rows: the loss and Σ w r φ per row and component.

    Args:
        coef: (rows, K, P), bound: (rows,), centre: (rows, D): each row's y's (``_coefficients``).
        theta: (rows, width, D); row_count: (rows,).
        weight: (rows,) per sample of the row, or (rows, width) per slot.

    Returns:
        loss: scalar; m: (rows, K, P) Σ w r φ(x); underflow: whether a real sample's density
        underflowed under the cheap shift.
    """
    dim = theta.shape[-1]
    mask = row_mask(row_count, theta.shape[1])  # (rows, width)
    x = jnp.where(mask[..., None], theta - centre[:, None, :], 0.0)  # padding never reaches exp
    iu, ju = np.triu_indices(dim)
    phi = jnp.concatenate([x, x[..., iu] * x[..., ju]], axis=-1)  # (rows, width, P − 1): φ without its 1
    c0, rest = coef[..., 0], coef[..., 1:]  # the constant term is added, not multiplied by a column of ones
    if theta.shape[1] >= MATMUL_WIDTH:  # one small matmul per row
        a = jnp.einsum("rwp,rkp->rwk", phi, rest, precision=HIGHEST) + c0[:, None, :]  # (rows, width, K)
    else:  # short rows: a matmul per row costs more than its arithmetic; unrolled products fuse
        a = c0[:, None, :] + sum(phi[:, :, None, i] * rest[:, None, :, i] for i in range(phi.shape[-1]))
    if per_sample_max:
        shift = jnp.max(a, axis=-1)  # (rows, width)
    else:
        shift = jnp.broadcast_to((bound - HEADROOM)[:, None], a.shape[:2])
    ex = jnp.exp(a - shift[..., None])
    s = jnp.sum(ex, axis=-1)
    underflow = jnp.any(mask & (s < 1e-30))
    w = jnp.where(mask, weight if weight.ndim == 2 else weight[:, None], 0.0)  # (rows, width)
    loss = -jnp.sum(w * jnp.where(mask, shift + jnp.log(s), 0.0))
    wr = ex * jnp.where(mask, w / s, 0.0)[..., None]  # (rows, width, K) weighted responsibilities
    if theta.shape[1] >= MATMUL_WIDTH:
        m = jnp.einsum("rwk,rwp->rkp", wr, phi, precision=HIGHEST)
    else:
        m = jnp.stack([jnp.sum(wr * phi[:, :, None, i], axis=1) for i in range(phi.shape[-1])], axis=-1)
    m = jnp.concatenate([jnp.sum(wr, axis=1)[..., None], m], axis=-1)  # (rows, K, P): Σ w r φ
    return loss, m, underflow


def centres(theta, row_count, row_y, num_y: int):
    """(num_y, D) each y's mean draw, for data made without ``Data.centre`` (every epoch: prefer
    ``mdnjax.layout.to_data``'s, computed once)."""
    mask = row_mask(row_count, theta.shape[2])
    flat_y = row_y.reshape(-1)
    sums = jnp.sum(jnp.where(mask[..., None], theta, 0.0), axis=2).reshape(-1, theta.shape[-1])
    counts = jax.ops.segment_sum(row_count.reshape(-1).astype(theta.dtype), flat_y, num_y)
    return jax.ops.segment_sum(sums, flat_y, num_y) / jnp.maximum(counts, 1.0)[:, None]


def _stats(logits, means, scales, theta, row_count, row_y, weight, centre, single_pass: bool):
    """Loss and its gradient with respect to the per-y mixture parameters (U, K, ...).

    ``centre`` (U, D): each y's draws are expanded around it (their mean: (x − μ)ᵀ P (x − μ) then
    cancels little); any origin gives the same loss and gradient up to rounding."""
    num_y, dim = logits.shape[0], means.shape[-1]
    mask = row_mask(row_count, theta.shape[2])  # (blocks, block_rows, width)
    flat_y = row_y.reshape(-1)
    coef, bound, mu, factor = _coefficients(logits, means, scales, centre)
    xs = (coef[row_y], bound[row_y], centre[row_y], theta, row_count, weight)
    if single_pass:
        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        loss, m, _ = _tile_sums(*(flat(a) for a in xs), per_sample_max=True)
    else:

        def tile(args):
            loss, m, underflow = _tile_sums(*args, per_sample_max=False)
            return jax.lax.cond(underflow, lambda: _tile_sums(*args, per_sample_max=True)[:2], lambda: (loss, m))

        losses, m = jax.lax.map(tile, xs)
        loss = jnp.sum(losses)
    m = jax.ops.segment_sum(m.reshape((-1,) + m.shape[-2:]), flat_y, num_y)  # (U, K, P)
    if weight.ndim == 3:
        total = jnp.sum(jnp.where(mask, weight, 0.0), axis=-1)
    else:
        total = row_count.astype(weight.dtype) * weight  # (blocks, block_rows)
    total = jax.ops.segment_sum(total.reshape(-1), flat_y, num_y)  # (U,) Σ of each y's weights
    # S0, S1 = Σ w r (x − μ), S2 = Σ w r (x − μ)(x − μ)ᵀ from Σ w r φ(x)
    iu, ju = np.triu_indices(dim)
    s0, m1 = m[..., 0], m[..., 1 : 1 + dim]
    m2 = jnp.zeros(m1.shape + (dim,), m.dtype).at[..., iu, ju].set(m[..., 1 + dim :])
    m2 = m2.at[..., ju, iu].set(m[..., 1 + dim :])
    s1 = m1 - s0[..., None] * mu
    outer = lambda a, b: a[..., :, None] * b[..., None, :]  # noqa: E731
    s2 = m2 - outer(m1, mu) - outer(mu, m1) + s0[..., None, None] * outer(mu, mu)
    g_logits = jax.nn.softmax(logits, axis=-1) * total[:, None] - s0
    lt_s1 = jnp.einsum("...de,...d->...e", factor, s1, precision=HIGHEST)  # Lᵀ S1
    g_means = -jnp.einsum("...de,...e->...d", factor, lt_s1, precision=HIGHEST)  # −L Lᵀ S1
    diag = np.arange(dim)
    g_factor = jnp.einsum("...ij,...jk->...ik", s2, factor, precision=HIGHEST)  # S2 L
    g_factor = g_factor.at[..., diag, diag].add(-s0[..., None] / factor[..., diag, diag])
    rows, cols = np.tril_indices(dim, -1)
    g_scales = jnp.concatenate(
        [-0.5 * factor[..., diag, diag] * g_factor[..., diag, diag], g_factor[..., rows, cols]], axis=-1
    )
    return loss, (g_logits, g_means, g_scales)


def _make_nll(single_pass: bool):
    @jax.custom_vjp
    def y_nll(logits, means, scales, theta, row_count, row_y, weight, centre):
        """−Σ_rows weight · Σ_{first row_count slots} log q(θ) for per-y mixtures (U, K, ...)."""
        return _stats(logits, means, scales, theta, row_count, row_y, weight, centre, single_pass)[0]

    def fwd(logits, means, scales, theta, row_count, row_y, weight, centre):
        loss, grads = _stats(logits, means, scales, theta, row_count, row_y, weight, centre, single_pass)
        return loss, (grads, theta, weight, centre)

    def bwd(residuals, g):
        grads, theta, weight, centre = residuals
        zeros = (jnp.zeros_like(theta), None, None, jnp.zeros_like(weight), jnp.zeros_like(centre))
        return (*(g * x for x in grads), *zeros)

    y_nll.defvjp(fwd, bwd)
    return y_nll


y_nll = _make_nll(single_pass=False)
y_nll_single_pass = _make_nll(single_pass=True)


def nll(logits, means, scales, data: Data):
    """−Σ weight · log q(θ) over every real sample of ``data`` (θ ∈ ℝ^D), mixtures per y.

    Args:
        logits: (num_y, K); means: (num_y, K, D); scales: (num_y, K, D(D+1)/2).
        data: the layout on the device, ``data.theta`` (blocks, block_rows, width, D).

    Returns:
        Scalar loss, differentiable in the mixture parameters.
    """
    return y_nll(logits, means, scales, *_operands(logits, data))


def _operands(logits, data: Data):
    centre = (
        data.centre if data.centre is not None else centres(data.theta, data.row_count, data.row_y, logits.shape[0])
    )
    return data.theta, data.row_count, data.row_y, data.weight, jax.lax.stop_gradient(centre)


def nll_single_pass(logits, means, scales, data: Data):
    """``nll`` over every block at once (for accelerators)."""
    return y_nll_single_pass(logits, means, scales, *_operands(logits, data))
