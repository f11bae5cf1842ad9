"""A trained amortized posterior q(θ | y): densities, samples, moments; save and load.

Everything a posterior needs is data (``PosteriorSpec``): the network's widths and K, the
fitting space and θ's support, the input scaling of y, and how many training samples each y had.
``load`` therefore never imports the task's code.

Every method applies one rule to y: integers (a scalar or any array of them) inside the task's
range of observations, else ``ValueError``. Answers at a y with fewer than ``RARE_BELOW`` training
samples come with a ``RareObservationWarning``: there q is an extrapolation.

Example:
    >>> import jax, mdnjax
    >>> post = mdnjax.fit("beta", mdnjax.Config(samples=20_000, epochs=100)).posterior
    >>> post.log_prob(jax.numpy.array([0.2, 0.3]), y=30).shape
    (2,)
    >>> post.sample(jax.random.key(0), y=[10, 30], n=5).shape
    (2, 5)
    >>> post.training_samples(30) > 0
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from mdnjax import checkpoint, density, mixture, model
from mdnjax.data import network_inputs
from mdnjax.layout.codebook import index_of
from mdnjax.posterior_spec import PosteriorSpec
from mdnjax.task import Bound

RARE_BELOW = 100  # training samples under which an answer is flagged as an extrapolation


class RareObservationWarning(UserWarning):
    """An answer at a y that had few or no training samples."""


def _check_n(n) -> int:
    ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
    if not ok or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def _check_key(key):
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return key
    raise ValueError(f"key must be a jax.random key such as jax.random.key(0), got {type(key).__name__}")


class Posterior:
    """An MDN posterior q(θ | y) for one task: θ ∈ ℝ^D (D = ``spec.dim``), y an integer or, for
    vector observations, a length-M sequence of integers (M = ``spec.inputs``).

    Shapes: for D = 1 every answer has y's shape (``sample`` adds a trailing n); for D > 1 a
    trailing D is added (``cov``: D × D). A batch of vector observations is an array (..., M).

    Args:
        spec: what the posterior is (``PosteriorSpec``).
        params: MDN parameters (pure dict of arrays).
    """

    def __init__(self, spec: PosteriorSpec, params):
        self.spec = spec
        self.params = params
        self.graphdef, _ = model.structure(
            spec.components, spec.hidden, spec.dim, spec.inputs, spec.network, spec.linear_skip
        )
        graphdef, standard = self.graphdef, spec.theta_standard

        def network(p, x):
            out = model.apply(graphdef, p, x)
            if standard is None:
                return out
            return mixture.affine(*out, jnp.asarray(standard[0], jnp.float32), jnp.asarray(standard[1], jnp.float32))

        self._mixture = jax.jit(network)

    @property
    def bound(self) -> Bound:
        return self.spec.bounds[0]

    @property
    def dim(self) -> int:
        """D, the number of parameters."""
        return self.spec.dim

    @property
    def unconstrained(self) -> bool:
        """Whether the mixture lives in the fitting space u = f(θ) rather than on θ."""
        return self.spec.space == "unconstrained"

    # ----------------------------------------------------------------- observations

    def check_y(self, y) -> np.ndarray:
        """y as an int64 array (any shape; a trailing M for vector y) after the one rule, or for a
        continuous observation a float64 array of finite numbers; ``ValueError`` otherwise."""
        try:
            arr = np.asarray(y)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        if self.spec.y_kind == "continuous":
            return self._check_continuous(y, arr)
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"y must be an integer or an array of integers, got {y!r}")
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if bad.any():
                raise ValueError(f"y must be integers, got {arr[bad].reshape(-1)[0]!r}")
        m = self.spec.inputs
        if m > 1 and (arr.ndim == 0 or arr.shape[-1] != m):
            raise ValueError(f"y of {self.spec.name} is a sequence of {m} integers, got shape {arr.shape}")
        lo, hi = self.spec.y_range
        out = (arr < lo) | (arr > hi)
        if out.any():
            upper = "infinity" if math.isinf(hi) else f"{hi:g}"
            lower = "-infinity" if math.isinf(lo) else f"{lo:g}"
            raise ValueError(
                f"y = {arr[out].reshape(-1)[0]} is outside the possible range {lower}..{upper} of {self.spec.name}"
            )
        return arr.astype(np.int64)

    def _check_continuous(self, y, arr: np.ndarray) -> np.ndarray:
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"y must be a number or an array of numbers, got {y!r}")
        m = self.spec.inputs
        if m > 1 and (arr.ndim == 0 or arr.shape[-1] != m):
            raise ValueError(f"y of {self.spec.name} is a sequence of {m} numbers, got shape {arr.shape}")
        padded = self.spec.network.kind == "set"  # NaN trials are padding for a set encoder
        bad = np.isinf(arr) if padded else ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"y must be finite numbers, got {arr[bad].reshape(-1)[0]!r}")
        return arr.astype(np.float64)

    def _batch(self, y: np.ndarray) -> tuple[int, ...]:
        """The batch shape of checked observations (y's shape without a vector's trailing M)."""
        return y.shape[:-1] if self.spec.inputs > 1 else y.shape

    def _check_broadcast(self, theta_batch: tuple, y: np.ndarray) -> None:
        """A one-line ``ValueError`` when θ's batch shape and y's do not broadcast together."""
        try:
            np.broadcast_shapes(tuple(theta_batch), self._batch(y))
        except ValueError:
            d = "" if self.dim == 1 else f" (+ ({self.dim},) for θ's coordinates)"
            raise ValueError(
                f"theta's batch shape {tuple(theta_batch)}{d} and y's {self._batch(y)} do not broadcast: "
                "give θ and y equal batch shapes, or one of them a single value"
            ) from None

    def training_samples(self, y):
        """Training samples the posterior saw at each y (0 for a y never simulated); y's batch shape.
        None for a posterior trained per sample (no samples per y are recorded)."""
        y = self.check_y(y)
        if self.spec.per_sample:
            return None
        m = self.spec.inputs
        at = index_of(self.spec.y_values, y.reshape(-1, m) if m > 1 else y)
        out = np.where(at >= 0, self.spec.counts[np.maximum(at, 0)], 0).reshape(self._batch(y))
        return int(out) if out.ndim == 0 else out

    def _flag(self, y: np.ndarray) -> None:
        if self.spec.per_sample:
            return
        counts = np.asarray(self.training_samples(y)).reshape(-1)
        rare = counts < RARE_BELOW
        if rare.any():
            i = int(np.argmax(rare))
            rows = y.reshape(-1, self.spec.inputs)
            first = int(rows[i, 0]) if self.spec.inputs == 1 else rows[i].tolist()
            warnings.warn(
                f"y = {first} had {int(counts[i])} training samples (< {RARE_BELOW}): "
                f"q(θ | y) there is an extrapolation",
                RareObservationWarning,
                stacklevel=_caller_level(),
            )

    def mixture(self, y):
        """Mixture parameters at y (fitting space): (logits, means, log_vars) each y.shape + (K,)
        for D = 1; for D > 1 logits (..., K), means (..., K, D), scales (..., K, D(D+1)/2)."""
        y = self.check_y(y)
        self._flag(y)
        m = self.spec.inputs
        x = network_inputs(y.reshape(-1, m) if m > 1 else y.reshape(-1), self.spec.embedding)
        n = x.shape[0]
        padded = np.zeros((density.bucket_size(n),) + x.shape[1:], np.float32)  # a few compiled shapes serve all
        padded[:n] = x
        out = self._mixture(self.params, jnp.asarray(padded))
        # cut on the host: slicing device arrays eagerly compiles a program per shape
        return tuple(jnp.asarray(np.asarray(o)[:n].reshape(self._batch(y) + o.shape[1:])) for o in out)

    # ----------------------------------------------------------------- θ ↔ the fitting space

    def _from_fitting(self, u):
        """θ = f⁻¹(u), coordinate by coordinate (identity in the raw space)."""
        return density.from_fitting(u, self.spec.bounds) if self.unconstrained else jnp.asarray(u)

    # ----------------------------------------------------------------- questions

    def log_prob(self, theta, y):
        """log q(θ | y); θ (..., D) (scalar θ for D = 1) and y broadcast together; returns the
        batch shape; −inf outside θ's support.

        In the unconstrained space, q(θ) = q_u(f(θ)) Π_d |f_d'(θ_d)|.
        """
        y = self.check_y(y)
        logits, means, scales = self.mixture(y)
        theta = jnp.asarray(theta, means.dtype)
        if self.dim > 1 and (theta.ndim == 0 or theta.shape[-1] != self.dim):
            raise ValueError(f"theta of {self.spec.name} has {self.dim} coordinates, got shape {theta.shape}")
        self._check_broadcast(theta.shape if self.dim == 1 else theta.shape[:-1], y)
        return density.log_prob(theta, logits, means, scales, tuple(self.spec.bounds), self.unconstrained)

    def fitting_log_prob_and_cdf(self, u, y):
        """log q_u(u | y) and the marginal CDF Q_u(u_d | y) in the fitting space (no Jacobian), for
        paired u (n,) or (n, D) and y (n,) or (n, M); float64 numpy, CDF shaped like u. A draw within
        float32 rounding of a bound stays finite here."""
        m = self.spec.inputs
        values, inverse = np.unique(np.asarray(y).reshape(-1, m), axis=0, return_inverse=True)
        values = values if m > 1 else values[:, 0]
        # the network once per distinct y (a chunk of 10^6 draws holds a few hundred), then gathered
        params = tuple(np.asarray(a)[inverse.reshape(-1)] for a in self.mixture(values))
        u = np.asarray(u, np.float32).reshape((-1,) if self.dim == 1 else (-1, self.dim))
        fn = density.log_prob_and_cdf if self.dim == 1 else density.mvn_log_prob_and_cdf
        return density.in_blocks(fn, [u, *params])  # one compiled shape for every n

    def fitting_log_prob_at(self, u, y):
        """log q_u(u | y) in the fitting space (no Jacobian) of many points u (n,) or (n, D) at one
        y: float64 numpy (n,). The network runs once; no CDF (``fitting_log_prob_and_cdf`` pairs
        each u with its own y)."""
        y = self.check_y(y)
        if y.shape != ((self.spec.inputs,) if self.spec.inputs > 1 else ()):
            raise ValueError(f"fitting_log_prob_at takes one observation, got y of shape {y.shape}")
        u = np.asarray(u, np.float32).reshape((-1,) if self.dim == 1 else (-1, self.dim))
        return density.fitting_log_prob_one(u, *self.mixture(y))

    def cdf(self, theta, y):
        """Q(θ | y), the posterior CDF (D = 1); θ and y broadcast together."""
        if self.dim > 1:
            raise ValueError("cdf needs a scalar θ; for D > 1 use marginal_cdf(theta_d, y, d)")
        return self.marginal_cdf(theta, y, 0)

    def marginal_cdf(self, theta_d, y, d: int):
        """The marginal CDF of coordinate d at θ_d; θ_d and y broadcast together."""
        logits, means, scales = self.mixture(y)
        if self.dim > 1:
            logits, means, scales = mixture.marginal(logits, means, scales, d)
        theta = jnp.asarray(theta_d, means.dtype)
        self._check_broadcast(theta.shape, self.check_y(y))
        return density.marginal_cdf(theta, logits, means, scales, self.spec.bounds[d], self.unconstrained)

    def quantile(self, q, y):
        """Marginal q-quantiles of θ at y: y's batch shape + q's shape (+ (D,) for D > 1)."""
        q = np.asarray(q, np.float64)
        if np.any(~(q > 0) | ~(q < 1)):
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {q!r}")
        logits, means, scales = self.mixture(y)
        out = []
        for d in range(self.dim):
            lg, mu, lv = (logits, means, scales) if self.dim == 1 else mixture.marginal(logits, means, scales, d)
            u = mixture.quantile(q.reshape(-1), lg, mu, lv)  # (..., Q)
            if self.unconstrained:
                u = np.asarray(self.spec.bounds[d].inverse(u))
            out.append(u.reshape(u.shape[:-1] + q.shape))
        return jnp.asarray(out[0] if self.dim == 1 else np.stack(out, axis=-1))

    def to_arviz(self, y, n: int, key, names=None):
        """``n`` draws at one observation y as ArviZ data (``mdnjax.interop.to_arviz``): a
        ``posterior`` group (one chain, a variable per parameter, ``names`` or theta_0, …) and
        ``observed_data``."""
        from mdnjax import interop

        return interop.to_arviz(self, y, n, key, names)

    def sample(self, key, y, n: int):
        """``n`` draws from q(θ | y): shape (n,) for one y (D = 1) or (n, D); a batch of y prepends
        its shape."""
        key, n = _check_key(key), _check_n(n)
        y = self.check_y(y)
        params = self.mixture(y)
        batch = self._batch(y)
        lead = 1 if self.dim == 1 else len(batch)
        flat = [np.reshape(a, (-1,) + a.shape[lead:] if self.dim > 1 else (-1, a.shape[-1])) for a in params]
        rows = flat[0].shape[0]
        # rows padded to a power of two and draws made in fixed chunks: a few compiled shapes for all
        padded_rows = density.bucket_size(rows)
        flat = [np.concatenate([a, np.repeat(a[:1], padded_rows - rows, axis=0)]) for a in flat]
        sampler = density.sample_rows if self.dim == 1 else density.sample_rows_nd
        draws = sampler(key, *flat, n)[:rows]
        return self._from_fitting(draws.reshape(batch + ((n,) if self.dim == 1 else (n, self.dim))))

    def _moments(self, y):
        """(mean, cov) per y: (..., D) and (..., D, D), float64 numpy."""
        logits, means, scales = self.mixture(y)
        if self.dim == 1:
            means, scales = means[..., None], scales[..., None]
        batch = logits.shape[:-1]
        covs = np.asarray(mixture.mvn_covariances(scales, self.dim), np.float64)
        flat = [np.asarray(a, np.float64).reshape((-1,) + a.shape[len(batch) :]) for a in (logits, means)]
        covs = covs.reshape((-1,) + covs.shape[len(batch) :])
        ms, cs = [], []
        for lg, mu, cv in zip(*flat, covs):
            if self.unconstrained:
                m, c = mixture.transformed_moments_nd(lambda u: np.asarray(self._from_fitting(u)), lg, mu, cv)
            else:
                w = special.softmax(lg)
                m = w @ mu
                d = mu - m
                c = np.einsum("k,kij->ij", w, cv + d[:, :, None] * d[:, None, :])
            ms.append(m)
            cs.append(c)
        dim = self.dim
        return np.array(ms).reshape(batch + (dim,)), np.array(cs).reshape(batch + (dim, dim))

    def mean(self, y):
        """Posterior mean at y: y's batch shape (+ (D,) for D > 1)."""
        m, _ = self._moments(y)
        return jnp.asarray(m[..., 0] if self.dim == 1 else m)

    def std(self, y):
        """Posterior standard deviation (of each coordinate) at y."""
        _, c = self._moments(y)
        sd = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
        return jnp.asarray(sd[..., 0] if self.dim == 1 else sd)

    def cov(self, y):
        """Posterior covariance at y: (..., D, D) (1 × 1 for D = 1)."""
        return jnp.asarray(self._moments(y)[1])

    # ----------------------------------------------------------------- files

    def save(self, run_dir) -> None:
        """Writes ``posterior.npz`` and ``posterior.json`` atomically into ``run_dir``."""
        run_dir = Path(run_dir)
        checkpoint.save_tree(
            run_dir / checkpoint.POSTERIOR, self.params, y_values=self.spec.y_values, counts=self.spec.counts
        )
        checkpoint.write_json(run_dir / checkpoint.POSTERIOR_SPEC, self.spec.to_json())


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def load(run_dir) -> Posterior:
    """Loads the posterior saved in a run folder, without importing the task's code.

    Raises:
        ValueError: the folder, its ``posterior.json`` or its ``posterior.npz`` is missing or unreadable.
    """
    run_dir = Path(run_dir)
    raw = checkpoint.read_json(run_dir / checkpoint.POSTERIOR_SPEC)
    try:
        probe = PosteriorSpec.from_json(raw, np.zeros(0), np.zeros(0))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise checkpoint.FormatError(f"{run_dir / checkpoint.POSTERIOR_SPEC} is not a posterior spec ({err})") from None
    _, shapes = model.structure(
        probe.components, probe.hidden, probe.dim, probe.inputs, probe.network, probe.linear_skip
    )
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    params, extra = checkpoint.load_tree(run_dir / checkpoint.POSTERIOR, template, ("y_values", "counts"), finite=True)
    spec = dataclasses.replace(
        probe,
        y_values=np.asarray(extra["y_values"], probe.y_values.dtype),
        counts=np.asarray(extra["counts"], np.int64),
    )
    return Posterior(spec, jax.tree_util.tree_map(jnp.asarray, params))
