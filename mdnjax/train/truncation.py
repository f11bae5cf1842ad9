"""The truncated prior of sequential rounds: the region R = {θ : log q(θ | y_o) ≥ τ} where q at
y_o exceeds its (1 − ε)-highest-density threshold τ (the ε-quantile of log q over q's own draws),
and draws of θ from the prior restricted to R.

θ comes from ``task.sample_prior``, kept when log q(θ | y_o) ≥ τ, then ``task.simulate_at`` runs
on the kept θ only. When the acceptance falls below ``floor``, the stated fallback: propose from
q(· | y_o) with every component widened ``WIDEN``-fold, keep the draws in R, and accept each with
probability p(θ) / (M g(θ)) (rejection sampling, g the widened q, M estimated from a pilot), which
leaves them exact draws of the truncated prior; it needs ``task.log_prior``. A task that draws θ
and y only together keeps the joint draws whose θ falls in R.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import density
from mdnjax.posterior import RareObservationWarning
from mdnjax.simulation import UserCodeError

EPSILON = 1e-4  # the share of q's mass outside the truncated region
FLOOR = 1e-3  # below this acceptance from the prior, the widened-q fallback
THRESHOLD_DRAWS = 100_000  # draws of q at y_o that estimate τ
BLOCK = 65_536  # θ per density call (one compiled shape)
WIDEN = 2.0  # the fallback's proposal: q's components with sd × WIDEN
MARGIN = 1.0  # the region is the (1 − ε)-HDR of q with sd × MARGIN (1: of q itself, as in TSNPE)
PILOT = 100_000  # proposals per batch; the first batch also estimates the acceptance
MAX_PROPOSALS = 10**9  # a round that would need more proposals stops with one line


class RoundError(ValueError):
    """A round cannot go on (too few draws land in the region, a failed check); one line."""


def user_call(task, what: str, fn: Callable, *args):
    """Calls a user's function; its exception becomes a ``UserCodeError`` naming it."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        raise UserCodeError(f"{task.name}: {what} ({name})", err) from err


def observed_y(post, y_o):
    """y_o as the posterior takes it: an int or float, or an (M,) array."""
    y = post.check_y(y_o)
    if post.spec.inputs == 1:
        y = y.reshape(-1)
        if y.size != 1:
            raise ValueError(f"y_o is one observation of one number, got {y.size}")
        return y[0].item()
    if y.shape != (post.spec.inputs,):
        raise ValueError(f"y_o is one observation of {post.spec.inputs} numbers, got shape {y.shape}")
    return y


def log_q(post, params, theta) -> np.ndarray:
    """log q(θ | y_o) for θ (n,) or (n, D) (θ's own space, Jacobian included), float64; the
    mixture ``params`` at y_o (``post.mixture(y_o)``, or widened); −inf outside the support."""
    theta = np.asarray(theta, np.float32)
    n = len(theta)
    out = np.empty(n)
    bounds, unconstrained = tuple(post.spec.bounds), post.unconstrained
    for lo in range(0, n, BLOCK):
        block = theta[lo : lo + BLOCK]
        m = len(block)
        if m < BLOCK:
            block = np.concatenate([block, np.repeat(block[:1], BLOCK - m, axis=0)])
        out[lo : lo + m] = np.asarray(density.log_prob(jnp.asarray(block), *params, bounds, unconstrained))[:m]
    return out


def draw_q(post, params, key, n: int) -> np.ndarray:
    """``n`` draws (n,) or (n, D) from the mixture ``params`` at y_o, in θ's space."""
    rows = density.bucket_size(1)  # the row count ``Posterior.sample`` compiles for one y
    flat = [np.repeat(np.asarray(a)[None], rows, axis=0) for a in params]
    sampler = density.sample_rows if post.dim == 1 else density.sample_rows_nd
    u = sampler(key, *flat, n)[0]
    theta = density.from_fitting(u, tuple(post.spec.bounds)) if post.unconstrained else u
    return np.asarray(theta, np.float64)


def threshold(post, params, key, epsilon: float = EPSILON, draws: int = THRESHOLD_DRAWS) -> float:
    """τ: the ε-quantile of log q(θ | y_o) over ``draws`` of q itself, so that the region
    {log q ≥ τ} holds 1 − ε of q's mass."""
    lp = log_q(post, params, draw_q(post, params, key, draws))
    lp = lp[np.isfinite(lp)]
    if lp.size < draws // 2:
        raise RoundError(f"q at y_o put {draws - lp.size:,} of {draws:,} draws outside θ's support")
    return float(np.quantile(lp, epsilon))


def widen(params, factor: float, dim: int):
    """The mixture with every component's covariance scaled by factor² (weights and means kept)."""
    logits, means, scales = params
    shift = 2.0 * math.log(factor)
    if dim == 1:
        return logits, means, scales + shift
    return logits, means, jnp.concatenate([scales[..., :dim] + shift, scales[..., dim:] / factor], axis=-1)


def _prior_rejection(task, post, params, tau, n, rng, floor):
    """θ from the prior kept in the region: (θ, proposals, kept), θ None below the floor."""
    kept, proposals, found = [], 0, 0
    while found < n:
        batch = max(PILOT, min(4 * (n - found) * max(proposals, 1) // max(found, 1), 4_000_000))
        theta = np.asarray(user_call(task, "sample_prior", task.sample_prior, rng, batch), np.float64)
        theta = theta.reshape(batch) if post.dim == 1 else theta.reshape(batch, post.dim)
        proposals += batch
        keep = log_q(post, params, theta) >= tau
        kept.append(theta[keep])
        found += int(keep.sum())
        if found < floor * proposals:
            return None, proposals, found
        if proposals > MAX_PROPOSALS:
            raise RoundError(f"{proposals:,} prior draws gave {found:,} of the {n:,} needed in the region")
    return np.concatenate(kept)[:n], proposals, found


def _widened_rejection(task, post, params, tau, n, key, rng):
    """Exact draws of the truncated prior by rejection from the widened q: (θ, proposals, accepted,
    log M)."""
    wide = widen(params, WIDEN, post.dim)
    kept, proposals, found, log_m = [], 0, 0, None
    while found < n:
        key, sub = jax.random.split(key)
        theta = draw_q(post, wide, sub, PILOT)
        proposals += PILOT
        log_g = log_q(post, wide, theta)  # the proposal's density, once per draw
        inside = (log_q(post, params, theta) >= tau) & np.isfinite(log_g)
        theta, log_g = theta[inside], log_g[inside]
        log_w = np.asarray(user_call(task, "log_prior", task.log_prior, theta), np.float64) - log_g
        ok = np.isfinite(log_w)
        theta, log_w = theta[ok], log_w[ok]
        if log_m is None:  # the envelope from the pilot, with room to spare
            if not log_w.size:
                raise RoundError("the widened q put none of its draws in the region")
            log_m = float(np.max(log_w)) + math.log(1.5)
        log_m = max(log_m, float(np.max(log_w, initial=-np.inf)))
        accept = rng.random(len(theta)) < np.exp(log_w - log_m)
        kept.append(theta[accept])
        found += int(accept.sum())
        if proposals > MAX_PROPOSALS:
            raise RoundError(f"{proposals:,} widened-q draws gave {found:,} of the {n:,} needed")
    return np.concatenate(kept)[:n], proposals, found, log_m


def _joint_rejection(task, post, params, tau, n, rng, floor):
    """A task without ``sample_prior``/``simulate_at``: joint draws whose θ falls in the region:
    (θ, y, proposals, kept)."""
    thetas, ys, proposals, found = [], [], 0, 0
    while found < n:
        batch = max(1_000, min(2 * (n - found) * max(proposals, 1) // max(found, 1), 1_000_000))
        theta, y = user_call(task, "simulate", task.simulate, rng, batch)
        theta = np.asarray(theta, np.float64)
        theta = theta.reshape(batch) if post.dim == 1 else theta.reshape(batch, post.dim)
        proposals += batch
        keep = log_q(post, params, theta) >= tau
        thetas.append(theta[keep])
        ys.append(np.asarray(y)[keep])
        found += int(keep.sum())
        if found < floor * proposals:
            raise RoundError(
                f"{found:,} of {proposals:,} simulations fell in the truncated region (acceptance below {floor:g}) "
                "and the task draws θ and y only together: give it sample_prior and simulate_at (and log_prior) "
                "so that rounds draw θ first"
            )
    return np.concatenate(thetas)[:n], np.concatenate(ys)[:n], proposals, found


def propose(task, post, y_o, n: int, rng, key, epsilon: float = EPSILON, floor: float = FLOOR, margin: float = MARGIN):
    """``n`` simulations (θ, y) from the prior truncated to q's (1 − ε)-highest-density region at
    y_o (q's components widened ``margin``-fold first), and a record: threshold, proposals,
    acceptance, method."""
    with warnings.catch_warnings():  # few training samples at y_o is why rounds are run
        warnings.simplefilter("ignore", RareObservationWarning)
        params = post.mixture(observed_y(post, y_o))
    if margin != 1.0:
        params = widen(params, margin, post.dim)
    k_tau, k_wide = jax.random.split(key)
    tau = threshold(post, params, k_tau, epsilon)
    info = {"threshold": tau}
    if not task.separable:
        theta, y, proposals, found = _joint_rejection(task, post, params, tau, n, rng, floor)
        return theta, y, {**info, "method": "joint rejection", "proposals": proposals, "acceptance": found / proposals}
    theta, proposals, found = _prior_rejection(task, post, params, tau, n, rng, floor)
    if theta is not None:
        info.update(method="truncated prior", proposals=proposals, acceptance=found / proposals)
    else:
        if not callable(task.log_prior):
            raise RoundError(
                f"only {100 * floor:g}% or fewer of the prior's draws fall in the truncated region and the task "
                "has no log_prior for the widened-q fallback: give it log_prior, or lower --floor"
            )
        theta, wide, accepted, log_m = _widened_rejection(task, post, params, tau, n, k_wide, rng)
        info.update(
            method="widened q",
            prior_proposals=proposals,
            prior_acceptance=found / proposals,
            proposals=wide,
            acceptance=accepted / wide,
            log_envelope=log_m,
        )
    y = user_call(task, "simulate_at", task.simulate_at, rng, theta)
    return theta, np.asarray(y), info
