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

from mdnjax.simulation import UserCodeError

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


def log_joint(task, theta: np.ndarray, y) -> np.ndarray:
    """log p(θ) + log p(y | θ) from the task's own functions, checked: an exception names the
    function (``UserCodeError``, the user's frames kept), a result of the wrong shape or with NaN
    is one line naming the function; −inf (outside the support, y impossible) is fine.

    Args:
        theta: (...) for one parameter, (..., D) for D.
    """
    batch = theta.shape if len(task.support) == 1 else theta.shape[:-1]
    total = np.zeros(batch)
    for name, call in (
        ("log_prior", lambda: task.log_prior(theta)),
        ("log_likelihood", lambda: task.log_likelihood(theta, y)),
    ):
        fn = getattr(task, name)
        label = f"{task.name}: {name} ({getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))})"
        try:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out = np.asarray(call(), np.float64)
        except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
            raise UserCodeError(label, err) from err
        if out.shape != batch:
            raise ValueError(f"{label} returned shape {out.shape} for θ of shape {theta.shape}; expected {batch}")
        if np.isnan(out).any():
            at = np.unravel_index(int(np.argmax(np.isnan(out))), batch)
            raise ValueError(
                f"{label} returned NaN at {int(np.isnan(out).sum())} of {out.size} points (e.g. θ = {theta[at]})"
            )
        total = total + out
    return total


def _log_density_u(task, y, u: np.ndarray) -> np.ndarray:
    (bound,) = task.support
    theta = bound.interior(bound.inverse(u))[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = log_joint(task, theta, y) - bound.log_abs_det_jacobian(theta)
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


# ----------------------------------------------------------------------------- θ ∈ ℝ^2


class GridPosterior2D:
    """A 2-D density tabulated on a product grid in the fitting space u = (f_0(θ_0), f_1(θ_1)).

    Args:
        bounds: θ's support, one ``Bound`` per coordinate.
        u0, u1: (G0,), (G1,) increasing, evenly spaced grids.
        log_density_u: (G0, G1) unnormalised log density of u.
    """

    def __init__(self, bounds, u0: np.ndarray, u1: np.ndarray, log_density_u: np.ndarray):
        self.bounds, self.u0, self.u1 = tuple(bounds), u0, u1
        self.cell = float((u0[1] - u0[0]) * (u1[1] - u1[0]))
        lp = np.where(np.isfinite(log_density_u), log_density_u, -np.inf)
        peak = lp.max()
        self.log_pu = lp - (peak + np.log(np.sum(np.exp(lp - peak)) * self.cell))  # Σ p · cell = 1
        self.p = np.exp(self.log_pu) * self.cell  # (G0, G1) probability of each cell
        self.theta = np.stack(
            [b.interior(b.inverse(g))[0] for b, g in zip(self.bounds, np.meshgrid(u0, u1, indexing="ij"))], axis=-1
        )  # (G0, G1, 2)

    @property
    def points_u(self) -> np.ndarray:
        """(G0·G1, 2) every grid point in the fitting space."""
        return np.stack(np.meshgrid(self.u0, self.u1, indexing="ij"), axis=-1).reshape(-1, 2)

    def mean(self) -> np.ndarray:
        return np.einsum("ij,ijd->d", self.p, self.theta)

    def cov(self) -> np.ndarray:
        d = self.theta - self.mean()
        return np.einsum("ij,ijd,ije->de", self.p, d, d)

    def kl(self, log_q_u: np.ndarray) -> float:
        """KL(p ‖ q) from q's fitting-space log density at ``points_u`` (bijection-invariant)."""
        log_q = np.asarray(log_q_u, np.float64).reshape(self.p.shape)
        live = self.p > 0
        return float(np.sum(self.p[live] * (self.log_pu[live] - log_q[live])))

    def marginal(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(θ_d grid, CDF at each of its cells' upper edges) of coordinate d."""
        mass = self.p.sum(axis=1 - d)
        grid = self.u0 if d == 0 else self.u1
        step = grid[1] - grid[0]
        edges = self.bounds[d].interior(self.bounds[d].inverse(grid + 0.5 * step))[0]
        return edges, np.cumsum(mass)

    def summary(self, fn) -> dict:
        """Mean, median and 95% interval of a scalar function of θ under p (weighted quantiles)."""
        values = np.asarray(fn(self.theta.reshape(-1, 2)), np.float64)
        return weighted_summary(values, self.p.reshape(-1))


def weighted_summary(values: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Mean, median, 2.5% and 97.5% quantiles of ``values`` (weighted or not)."""
    values = np.asarray(values, np.float64).reshape(-1)
    weights = np.ones(values.size) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    ok = np.isfinite(values) & (weights > 0)
    values, weights = values[ok], weights[ok]
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cum = np.cumsum(weights) / weights.sum()
    quantile = lambda q: float(values[min(np.searchsorted(cum, q), values.size - 1)])  # noqa: E731
    return {
        "mean": float(weights @ values / weights.sum()),
        "median": quantile(0.5),
        "q025": quantile(0.025),
        "q975": quantile(0.975),
    }


def _log_density_u_nd(task, y, u: np.ndarray) -> np.ndarray:
    cols = [b.interior(b.inverse(u[..., d]))[0] for d, b in enumerate(task.support)]
    theta = np.stack(cols, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = log_joint(task, theta, np.asarray(y))
        out = out - sum(b.log_abs_det_jacobian(c) for b, c in zip(task.support, cols))
    return np.where(np.isfinite(out), out, -np.inf)


def grid_posterior_2d(task, y, lows, highs, size: int = 801) -> GridPosterior2D:
    """The reference posterior at y for a two-parameter task, on a size × size grid in the fitting
    space that brackets [lows, highs] (the bucket's draws), widened until the density has fallen
    ``DROP`` nats below its peak on every edge, then cut to that region.

    Raises:
        ValueError: no ``log_prior``/``log_likelihood``, D ≠ 2, or p(θ | y) vanishes on the grid.
    """
    if getattr(task, "log_prior", None) is None or getattr(task, "log_likelihood", None) is None:
        raise ValueError(f"the {task.name} task has no log_prior/log_likelihood: no quadrature reference")
    if len(task.support) != 2:
        raise ValueError(f"the grid reference covers two parameters, the {task.name} task has {len(task.support)}")
    lows, highs = np.asarray(lows, np.float64), np.asarray(highs, np.float64)
    span = np.maximum(highs - lows, 1e-3)
    ranges = np.array([_u_range(b) for b in task.support])  # (2, 2)
    lo, hi = np.maximum(lows - span, ranges[:, 0]), np.minimum(highs + span, ranges[:, 1])
    for _ in range(30):
        g = [np.linspace(lo[d], hi[d], 201) for d in range(2)]
        lp = _log_density_u_nd(task, y, np.stack(np.meshgrid(*g, indexing="ij"), axis=-1))
        peak = lp.max()
        if not np.isfinite(peak):
            raise ValueError(f"p(θ | y = {[int(v) for v in np.ravel(y)]}) vanishes on the grid")
        live = lp > peak - DROP
        grow = hi - lo
        low_edge = np.array([live[0].any(), live[:, 0].any()]) & (lo > ranges[:, 0])
        high_edge = np.array([live[-1].any(), live[:, -1].any()]) & (hi < ranges[:, 1])
        if not (low_edge.any() or high_edge.any()):
            break
        lo = np.maximum(lo - grow * low_edge, ranges[:, 0])
        hi = np.minimum(hi + grow * high_edge, ranges[:, 1])
    rows, cols = np.flatnonzero(live.any(axis=1)), np.flatnonzero(live.any(axis=0))
    new_lo = [g[0][max(rows[0] - 1, 0)], g[1][max(cols[0] - 1, 0)]]
    new_hi = [g[0][min(rows[-1] + 1, 200)], g[1][min(cols[-1] + 1, 200)]]
    u0, u1 = (np.linspace(new_lo[d], new_hi[d], size) for d in range(2))
    lp = _log_density_u_nd(task, y, np.stack(np.meshgrid(u0, u1, indexing="ij"), axis=-1))
    return GridPosterior2D(task.support, u0, u1, lp)
