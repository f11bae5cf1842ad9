"""A reference posterior by quadrature, for tasks with ``log_prior`` and ``log_likelihood``.

When a task has no closed-form posterior but can evaluate its prior density and its likelihood,
p(θ | y) ∝ p(θ) p(y | θ) is tabulated in float64 on a grid in the fitting space u = f(θ), where
densities stay finite even if p(θ) diverges at a bound. The grid brackets the bucket's own draws
and is widened until the density has fallen 40 nats below its peak at both ends, then refined
over that range. ``GridPosterior`` answers like a frozen ``scipy.stats`` distribution (``logpdf``,
``pdf``, ``cdf``, ``ppf``, ``isf``, ``mean``, ``std``), so every exact metric applies unchanged.

Example:
    >>> import numpy as np
    >>> from mdnjax import tasks
    >>> task = tasks.BetaBinomial()
    >>> ref = grid_posterior(task, 30, -1.0, -0.5)
    >>> round(ref.mean(), 6), round(float(task.exact_posterior(30).mean()), 6)
    (0.299065, 0.299065)
"""

from __future__ import annotations

import numpy as np

GRID = 8001
DROP = 40.0  # nats below the peak at which the tails are cut


class GridPosterior:
    """A 1-D density tabulated on a grid in the fitting space u = f(θ).

    Args:
        bound: θ's support (``mdnjax.task.Bound``).
        u: (G,) increasing grid.
        log_density_u: (G,) unnormalised log density of u.
    """

    def __init__(self, bound, u: np.ndarray, log_density_u: np.ndarray):
        self.bound = bound
        self.u = u
        log_density_u = np.where(np.isfinite(log_density_u), log_density_u, -np.inf)
        peak = np.max(log_density_u)
        w = np.exp(log_density_u - peak)
        log_norm = peak + np.log(np.trapezoid(w, u))
        self.log_pu = log_density_u - log_norm  # normalised in u
        pu = np.exp(self.log_pu)
        self.cdf_u = np.concatenate([[0.0], np.cumsum(0.5 * (pu[1:] + pu[:-1]) * np.diff(u))])
        self.cdf_u /= self.cdf_u[-1]
        theta = self._theta(u)
        self._mean = float(np.trapezoid(theta * pu, u))
        self._var = float(np.trapezoid((theta - self._mean) ** 2 * pu, u))

    def _theta(self, u):
        return self.bound.interior(self.bound.inverse(np.asarray(u, np.float64)))[0]

    def _u(self, theta):
        return self.bound.forward(self.bound.interior(np.asarray(theta, np.float64))[0])

    def logpdf(self, theta):
        """log p(θ | y) (θ-space density, with the Jacobian); −inf outside the grid."""
        theta = np.asarray(theta, np.float64)
        u = self._u(theta)
        inside = (u >= self.u[0]) & (u <= self.u[-1])
        lp = np.interp(u, self.u, self.log_pu) + self.bound.log_abs_det_jacobian(self.bound.interior(theta)[0])
        return np.where(inside, lp, -np.inf)

    def pdf(self, theta):
        return np.exp(self.logpdf(theta))

    def cdf(self, theta):
        return np.interp(self._u(theta), self.u, self.cdf_u, left=0.0, right=1.0)

    def ppf(self, q):
        return self._theta(np.interp(q, self.cdf_u, self.u))

    def isf(self, q):
        return self.ppf(1.0 - np.asarray(q))

    def mean(self) -> float:
        return self._mean

    def var(self) -> float:
        return self._var

    def std(self) -> float:
        return float(np.sqrt(self._var))

    def entropy(self) -> float:
        """Differential entropy of θ (nats): −E[log p(θ | y)]."""
        pu = np.exp(self.log_pu)
        theta = self._theta(self.u)
        log_p = self.log_pu + self.bound.log_abs_det_jacobian(theta)
        return float(-np.trapezoid(pu * log_p, self.u))


def _log_density_u(task, y, u: np.ndarray) -> np.ndarray:
    (bound,) = task.support
    theta = bound.interior(bound.inverse(u))[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = task.log_prior(theta) + task.log_likelihood(theta, y) - bound.log_abs_det_jacobian(theta)
    return np.where(np.isfinite(out), out, -np.inf)


def _u_range(bound) -> tuple[float, float]:
    """The fitting-space image of the float64 interior of the support (±inf where unbounded)."""
    lo = bound.forward(np.nextafter(bound.low, np.inf)) if np.isfinite(bound.low) else -np.inf
    hi = bound.forward(np.nextafter(bound.high, -np.inf)) if np.isfinite(bound.high) else np.inf
    return float(lo), float(hi)


def grid_posterior(task, y, low: float, high: float, size: int = GRID) -> GridPosterior:
    """The reference posterior at y, on a grid bracketing [low, high] (fitting-space draws of y).

    Raises:
        ValueError: the task lacks ``log_prior`` or ``log_likelihood``, or p(θ | y) vanishes on the grid.
    """
    if task.log_prior is None or task.log_likelihood is None:
        raise ValueError(f"the {task.name} task has no log_prior/log_likelihood: no quadrature reference")
    low, high = float(low), float(high)
    span = max(high - low, 1e-3)
    u_min, u_max = _u_range(task.support[0])
    lo, hi = max(low - span, u_min), min(high + span, u_max)
    for _ in range(30):  # widen until both ends are DROP nats below the peak (or reach the support's end)
        u = np.linspace(lo, hi, 2001)
        lp = _log_density_u(task, y, u)
        peak = lp.max()
        if not np.isfinite(peak):
            raise ValueError(f"p(θ | y = {y}) vanishes between u = {lo:g} and {hi:g}")
        grow = hi - lo
        left, right = lp[0] > peak - DROP and lo > u_min, lp[-1] > peak - DROP and hi < u_max
        if not (left or right):
            break
        lo, hi = max(lo - grow * left, u_min), min(hi + grow * right, u_max)
    keep = np.flatnonzero(lp > peak - DROP)
    lo, hi = u[max(keep[0] - 1, 0)], u[min(keep[-1] + 1, u.size - 1)]
    u = np.linspace(lo, hi, size)
    return GridPosterior(task.support[0], u, _log_density_u(task, y, u))


def grid_posteriors(task, ys, lows, highs, size: int = 16001) -> dict:
    """Reference posteriors for many y from one shared grid (the likelihood is evaluated on the
    same θ for every y, which a task may cache); a y whose posterior covers too few grid points
    gets a grid of its own.

    Returns:
        {y: GridPosterior}
    """
    if task.log_prior is None or task.log_likelihood is None:
        raise ValueError(f"the {task.name} task has no log_prior/log_likelihood: no quadrature reference")
    lows, highs = np.asarray(lows, np.float64), np.asarray(highs, np.float64)
    span = max(float(highs.max() - lows.min()), 1e-3)
    u_min, u_max = _u_range(task.support[0])
    u = np.linspace(max(lows.min() - span, u_min), min(highs.max() + span, u_max), size)
    out = {}
    for y, low, high in zip(ys, lows, highs):
        lp = _log_density_u(task, int(y), u)
        peak = lp.max()
        keep = np.flatnonzero(lp > peak - DROP) if np.isfinite(peak) else np.zeros(0, int)
        edge = keep.size == 0 or (keep[0] == 0 and u[0] > u_min) or (keep[-1] == u.size - 1 and u[-1] < u_max)
        if keep.size >= 400 and not edge:
            sl = slice(max(keep[0] - 1, 0), keep[-1] + 2)
            out[int(y)] = GridPosterior(task.support[0], u[sl], lp[sl])
        else:
            out[int(y)] = grid_posterior(task, int(y), low, high)
    return out
