"""What a task is: a prior and simulator of (θ, y), θ's support, and optionally an exact posterior.

A ``Task`` is data and plain functions; the library never branches on its name. The built-in
tasks (``mdnjax.tasks``) are small subclasses that override ``simulate`` and ``exact_posterior``.

The support of θ is one ``Bound`` per parameter. It fixes the *fitting space*: the mixture is
fitted to u = f(θ), with f an increasing bijection from the support onto ℝ,

* (a, b)  → u = log(θ − a) − log(b − θ)      (a logit scaled to the interval)
* (a, ∞)  → u = log(θ − a)
* (−∞, b) → u = −log(b − θ)                  (increasing, so CDFs and ranks keep their order)
* ℝ       → u = θ

and densities come back with the Jacobian: q(θ) = q_u(f(θ)) |f'(θ)|. Transforms run in float64;
a draw that lies on a bound (or rounds onto it) is moved to the nearest interior float64 value
and counted, so the fitting space never holds ±inf or NaN.

Example:
    >>> import numpy as np
    >>> b = Bound(0.0, 1.0)
    >>> u = b.forward(np.array([0.25, 0.5]))
    >>> u.round(4).tolist(), b.inverse(u).tolist()
    ([-1.0986, 0.0], [0.25, 0.5])
    >>> def simulate(rng, n):
    ...     theta = rng.beta(2.0, 5.0, size=n)
    ...     return theta, rng.binomial(20, theta)
    >>> task = Task("my-model", simulate, support=[(0.0, 1.0)])
    >>> task.support[0].kind
    'interval'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

JAX_BLOCK = 8192  # draws per call of a JAX simulator: one compiled shape for every n


class Bound(NamedTuple):
    """The support (low, high) of one parameter; ``-inf``/``inf`` for an open side.

    Each method takes ``xp`` (``numpy`` or ``jax.numpy``) so the same transform serves the host
    (float64) and compiled code.
    """

    low: float = -math.inf
    high: float = math.inf

    @property
    def kind(self) -> str:
        """``"interval"``, ``"lower"`` (a, ∞), ``"upper"`` (−∞, b) or ``"real"``."""
        lo, hi = math.isfinite(self.low), math.isfinite(self.high)
        return {(True, True): "interval", (True, False): "lower", (False, True): "upper"}.get((lo, hi), "real")

    def forward(self, theta, xp=np):
        """u = f(θ), the fitting space (see the module docstring)."""
        theta = xp.asarray(theta)
        kind = self.kind
        if kind == "interval":
            return xp.log(theta - self.low) - xp.log(self.high - theta)
        if kind == "lower":
            return xp.log(theta - self.low)
        if kind == "upper":
            return -xp.log(self.high - theta)
        return theta

    def inverse(self, u, xp=np):
        """θ = f⁻¹(u)."""
        u = xp.asarray(u)
        kind = self.kind
        if kind == "interval":
            return self.low + (self.high - self.low) / (1.0 + xp.exp(-u))
        if kind == "lower":
            return self.low + xp.exp(u)
        if kind == "upper":
            return self.high - xp.exp(-u)
        return u

    def log_abs_det_jacobian(self, theta, xp=np):
        """log |du/dθ| at θ (inside the support)."""
        theta = xp.asarray(theta)
        kind = self.kind
        if kind == "interval":
            return math.log(self.high - self.low) - xp.log(theta - self.low) - xp.log(self.high - theta)
        if kind == "lower":
            return -xp.log(theta - self.low)
        if kind == "upper":
            return -xp.log(self.high - theta)
        return xp.zeros_like(theta)

    def contains(self, theta, xp=np):
        """True strictly inside the support (open bounds)."""
        theta = xp.asarray(theta)
        return (theta > self.low) & (theta < self.high)

    def interior(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        """θ (float64) with draws on a finite bound moved to the nearest interior value.

        Returns:
            The adjusted copy and the number of draws moved.
        """
        theta = np.array(theta, np.float64)
        moved = 0
        if math.isfinite(self.low):
            at = theta <= self.low
            moved += int(at.sum())
            theta[at] = np.nextafter(self.low, math.inf)
        if math.isfinite(self.high):
            at = theta >= self.high
            moved += int(at.sum())
            theta[at] = np.nextafter(self.high, -math.inf)
        return theta, moved

    def describe(self) -> str:
        return f"({self.low:g}, {self.high:g})"


class Probability(NamedTuple):
    """A task summary that is the probability of an event: ``indicator(θ)`` is 1 where the event
    holds, 0 elsewhere. Reports give its probability (the indicator's mean under each posterior),
    not a median or an interval, which mean nothing for an indicator.

    Example:
        >>> p = Probability(lambda t: (t[..., 1] > t[..., 0]).astype(float))
        >>> p(np.array([[0.0, 1.0], [1.0, 0.0]])).tolist()
        [1.0, 0.0]
    """

    indicator: Callable

    def __call__(self, theta):
        return self.indicator(theta)


def as_bounds(support) -> tuple[Bound, ...]:
    """Normalises a support declaration: one (low, high) pair or a sequence of them."""
    if isinstance(support, Bound):
        return (support,)
    pairs = list(support)
    if len(pairs) == 2 and all(isinstance(v, (int, float)) for v in pairs):
        pairs = [tuple(pairs)]
    bounds = []
    for pair in pairs:
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"support must be (low, high) pairs, got {pair!r}") from None
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"support bound {pair!r} must have low < high")
        bounds.append(Bound(low, high))
    if not bounds:
        raise ValueError("support needs one (low, high) pair per parameter")
    return tuple(bounds)


class Task:
    """A simulation model: θ ~ p(θ), y ~ p(y | θ); y integer counts or continuous numbers.

    Args:
        name: a short name for runs and figures.
        simulate: ``simulate(rng: np.random.Generator, n: int) -> (theta, y)``: θ float, (n,) or
            (n, D) for D parameters; y integer or float, (n,) or (n, M) for an observation of M numbers.
        support: (low, high) per parameter (D pairs), ``-inf``/``inf`` allowed; each coordinate
            gets its own transform to the fitting space.
        log_prior: optional ``θ -> log p(θ)`` (float64 numpy, vectorized; θ (..., D) for D > 1).
        sample_prior: optional ``(rng, n) -> θ``, the prior alone, and
        simulate_at: optional ``(rng, θ) -> y``, the simulator at given θ. Together they let
            sequential rounds (``mdnjax.fit_rounds``) draw θ from a truncated prior and simulate
            only the draws kept; without them a round keeps the joint draws whose θ falls in the
            region (each rejected draw costs a simulation).
        log_likelihood: optional ``(θ, y) -> log p(y | θ)`` for one observation y (an int, or a
            length-M array), vectorized in θ.
        plot_y: optional observations to report and plot (ints, or length-M sequences; default:
            chosen from the simulations).
        y_range: optional (low, high) of the possible observations, inclusive.
        simulator: ``"numpy"`` (default: ``simulate(rng, n)`` with a ``np.random.Generator``; the
            fastest on CPU) or ``"jax"``: ``simulate(key, n)`` with ``jax.random``, jit-compiled
            with n static and called in blocks of ``JAX_BLOCK`` (what runs fast on an accelerator).
        y_kind: ``"counts"`` (integer y), ``"continuous"`` (float y, trained per sample) or None
            (default: integer or float, as the simulator returns).
        y_shape: the shape of one observation: ``()`` for a count, ``(M,)`` for M counts. Declared,
            it is checked against every simulation and lets ``--plot-y``/``--observed`` be checked
            before anything runs; left out, a few draws tell it.

    A subclass may override ``simulate`` and ``exact_posterior`` instead of passing functions.
    """

    name: str = "task"
    support: tuple[Bound, ...] = (Bound(),)
    log_prior: Callable | None = None
    log_likelihood: Callable | None = None
    sample_prior: Callable | None = None
    simulate_at: Callable | None = None
    plot_y: tuple | None = None
    y_range: tuple[float, float] = (-math.inf, math.inf)
    #: settings this task recommends per recipe (``{"notebook": {"lr": 1e-2}}``); see ``Config``.
    recommended: dict = {}
    #: a label for the exact posterior in figures (``"exact Beta posterior"``)
    reference_label: str = "exact posterior"
    simulator: str = "numpy"
    #: the kind of observation, ``"counts"`` (integers: every layout) or ``"continuous"`` (floats:
    #: the per-sample layout), and its shape: () or (M,); None: learnt from draws
    y_kind: str | None = "counts"
    y_shape: tuple[int, ...] | None = None

    def __init__(
        self,
        name: str,
        simulate: Callable,
        support,
        log_prior: Callable | None = None,
        log_likelihood: Callable | None = None,
        plot_y: Sequence[int] | None = None,
        y_range: tuple[float, float] | None = None,
        simulator: str = "numpy",
        y_shape: Sequence[int] | None = None,
        y_kind: str | None = None,
        sample_prior: Callable | None = None,
        simulate_at: Callable | None = None,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError(f"Task name must be a non-empty string, got {name!r}")
        if not callable(simulate):
            raise ValueError(f"Task simulate must be a function (rng, n) -> (theta, y), got {simulate!r}")
        self.name = name
        self._simulate = simulate
        self.support = as_bounds(support)
        self.log_prior = log_prior
        self.log_likelihood = log_likelihood
        if (sample_prior is None) != (simulate_at is None):
            raise ValueError(
                "Task sample_prior and simulate_at go together: the prior alone and the simulator at given θ"
            )
        for what, fn in (("sample_prior", sample_prior), ("simulate_at", simulate_at)):
            if fn is not None and not callable(fn):
                raise ValueError(f"Task {what} must be a function, got {fn!r}")
        self.sample_prior, self.simulate_at = sample_prior, simulate_at
        number = lambda x: int(x) if y_kind != "continuous" and float(x).is_integer() else float(x)  # noqa: E731
        as_y = lambda v: tuple(number(x) for x in v) if np.ndim(v) else number(v)  # noqa: E731
        self.plot_y = None if plot_y is None else tuple(as_y(v) for v in plot_y)  # numbers, or tuples of M
        if y_range is not None:
            self.y_range = (float(y_range[0]), float(y_range[1]))
        if simulator not in ("numpy", "jax"):
            raise ValueError(f"Task simulator must be 'numpy' or 'jax', got {simulator!r}")
        self.simulator = simulator
        if y_shape is not None:
            shape = tuple(int(v) for v in y_shape)
            if len(shape) > 1 or any(v < 1 for v in shape):
                raise ValueError(f"Task y_shape must be () or (M,) with M >= 1, got {y_shape!r}")
            self.y_shape = () if shape == (1,) else shape
        if y_kind not in (None, "counts", "continuous"):
            raise ValueError(f"Task y_kind must be 'counts', 'continuous' or None (from the draws), got {y_kind!r}")
        self.y_kind = y_kind

    @classmethod
    def from_numpyro(cls, model, y: str = "y", theta=None, name: str | None = None, **kwargs) -> Task:
        """A task from a numpyro model: its latent sites are θ (each a scalar parameter), its site
        ``y`` the observation (counts; a plate of counts is a vector y). See
        ``mdnjax.tasks.numpyro.from_numpyro``; numpyro is an optional extra.

        Example:
            >>> import numpyro, numpyro.distributions as dist  # doctest: +SKIP
            >>> def coin():                                     # doctest: +SKIP
            ...     p = numpyro.sample("p", dist.Beta(2.0, 5.0))
            ...     numpyro.sample("y", dist.Binomial(100, p))
            >>> task = Task.from_numpyro(coin)                  # doctest: +SKIP
        """
        from mdnjax.tasks.numpyro import from_numpyro

        return from_numpyro(cls, model, y=y, theta=theta, name=name, **kwargs)

    def simulate(self, rng: np.random.Generator, n: int):
        """Draws ``n`` pairs (θ, y) from the joint model, as NumPy arrays.

        A ``"jax"`` simulator gets a key drawn from ``rng`` and runs under ``jax.jit`` in blocks of
        ``JAX_BLOCK`` draws (block i with ``fold_in(key, i)``, the last one cut to n): one compiled
        shape serves every n (the training draws, the layout's pilot, the held-out and reference
        draws), where a shape per n would compile the simulator again for each.
        """
        if self.simulator == "jax":
            import jax

            if getattr(self, "_jitted", None) is None:
                self._jitted = jax.jit(self._simulate, static_argnums=1)
            key = jax.random.key(int(rng.integers(2**32)))
            blocks = [
                self._jitted(jax.random.fold_in(key, i), JAX_BLOCK) for i in range(max(1, -(-int(n) // JAX_BLOCK)))
            ]
            theta, y = (np.concatenate([np.asarray(b[j]) for b in blocks])[: int(n)] for j in (0, 1))
            return theta, y
        return self._simulate(rng, n)

    @property
    def separable(self) -> bool:
        """Whether the prior can be drawn alone and the simulator run at given θ."""
        return callable(self.sample_prior) and callable(self.simulate_at)

    @property
    def num_params(self) -> int:
        return len(self.support)

    def exact_posterior(self, y):
        """The exact posterior at y (a frozen ``scipy.stats``-like object), or None if unknown."""
        return None

    @property
    def has_exact_posterior(self) -> bool:
        return type(self).exact_posterior is not Task.exact_posterior

    def posterior_cdf(self, theta, y) -> np.ndarray:
        """Exact posterior CDF F(θ | y), vectorized over paired θ and y (tasks with an exact posterior)."""
        theta, y = np.broadcast_arrays(np.asarray(theta, np.float64), np.asarray(y))
        out = np.empty(theta.shape)
        for value in np.unique(y):
            at = y == value
            out[at] = self.exact_posterior(int(value)).cdf(theta[at])
        return out

    def input_embedding(self, y_values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
        """(shift, scale) of the network input x = (y − shift) / scale.

        By default y is standardised over the simulations (``counts`` samples at each of
        ``y_values``), each component of a vector y on its own; built-in tasks keep the
        notebook's y / n.
        """
        y = np.asarray(y_values, np.float64)
        w = np.asarray(counts, np.float64) / max(float(np.sum(counts)), 1.0)
        mean = w @ y
        sd = np.sqrt(w @ (y - mean) ** 2)
        sd = np.where(sd > 0, sd, 1.0)
        if y.ndim == 1:
            return float(mean), float(sd)
        return tuple(float(m) for m in mean), tuple(float(v) for v in sd)  # per component of y

    def check_y(self, y) -> None:
        """Raises ``ValueError`` unless y (a count, or the M counts of one observation) is a
        possible observation of this task."""
        lo, hi = self.y_range
        values = np.ravel(np.asarray(y))
        if not np.all((values >= lo) & (values <= hi)):
            upper = "infinity" if math.isinf(hi) else f"{hi:g}"
            lower = "-infinity" if math.isinf(lo) else f"{lo:g}"
            shown = f"{values[0]:g}" if values.size == 1 else [float(f"{v:g}") for v in values]
            raise ValueError(f"y = {shown} is outside the possible range {lower}..{upper} of the {self.name} task")

    def describe(self) -> dict:
        """A JSON-able record of the task for the run folder."""
        return {"name": self.name, "support": [[b.low, b.high] for b in self.support]}

    def __repr__(self) -> str:
        support = ", ".join(b.describe() for b in self.support)
        return f"{type(self).__name__}(name={self.name!r}, support=[{support}])"
