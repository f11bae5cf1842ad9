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
import functools
import math
import os
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import checkpoint, mixture, model
from mdnjax.task import Bound

RARE_BELOW = 100  # training samples under which an answer is flagged as an extrapolation


class RareObservationWarning(UserWarning):
    """An answer at a y that had few or no training samples."""


@dataclasses.dataclass(frozen=True)
class PosteriorSpec:
    """What a posterior is, as data (``posterior.json``)."""

    name: str
    components: int
    hidden: tuple[int, ...]
    space: str  # "raw" or "unconstrained"
    bounds: tuple[Bound, ...]
    embedding: tuple[float, float]  # x = (y − shift) / scale
    y_range: tuple[float, float]
    y_values: np.ndarray = dataclasses.field(repr=False)  # (num_y,) trained y
    counts: np.ndarray = dataclasses.field(repr=False)  # (num_y,) training samples at each

    @classmethod
    def of(cls, task, config, embedding, y_values, counts) -> PosteriorSpec:
        return cls(
            name=task.name,
            components=config.components,
            hidden=tuple(config.hidden),
            space=config.space,
            bounds=tuple(task.support),
            embedding=(float(embedding[0]), float(embedding[1])),
            y_range=tuple(float(v) for v in task.y_range),
            y_values=np.asarray(y_values, np.int64),
            counts=np.asarray(counts, np.int64),
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "components": self.components,
            "hidden": list(self.hidden),
            "space": self.space,
            "bounds": [[b.low, b.high] for b in self.bounds],
            "embedding": list(self.embedding),
            "y_range": list(self.y_range),
        }

    @classmethod
    def from_json(cls, d: dict, y_values, counts) -> PosteriorSpec:
        return cls(
            name=str(d["name"]),
            components=int(d["components"]),
            hidden=tuple(int(h) for h in d["hidden"]),
            space=str(d["space"]),
            bounds=tuple(Bound(float(lo), float(hi)) for lo, hi in d["bounds"]),
            embedding=(float(d["embedding"][0]), float(d["embedding"][1])),
            y_range=(float(d["y_range"][0]), float(d["y_range"][1])),
            y_values=np.asarray(y_values, np.int64),
            counts=np.asarray(counts, np.int64),
        )


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
    """An MDN posterior q(θ | y) for one task (scalar θ).

    Args:
        spec: what the posterior is (``PosteriorSpec``).
        params: MDN parameters (pure dict of arrays).
    """

    def __init__(self, spec: PosteriorSpec, params):
        self.spec = spec
        self.params = params
        self.graphdef, _ = model.init(jax.random.key(0), spec.components, spec.hidden)
        graphdef = self.graphdef
        self._mixture = jax.jit(lambda p, x: model.apply(graphdef, p, x))

    @property
    def bound(self) -> Bound:
        return self.spec.bounds[0]

    @property
    def unconstrained(self) -> bool:
        """Whether the mixture lives in the fitting space u = f(θ) rather than on θ."""
        return self.spec.space == "unconstrained"

    # ----------------------------------------------------------------- observations

    def check_y(self, y) -> np.ndarray:
        """y as an int64 array (any shape) after the one rule; ``ValueError`` otherwise."""
        try:
            arr = np.asarray(y)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"y must be an integer or an array of integers, got {y!r}")
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if bad.any():
                raise ValueError(f"y must be integers, got {arr[bad].reshape(-1)[0]!r}")
        lo, hi = self.spec.y_range
        out = (arr < lo) | (arr > hi)
        if out.any():
            upper = "infinity" if math.isinf(hi) else f"{hi:g}"
            lower = "-infinity" if math.isinf(lo) else f"{lo:g}"
            raise ValueError(
                f"y = {arr[out].reshape(-1)[0]} is outside the possible range {lower}..{upper} of {self.spec.name}"
            )
        return arr.astype(np.int64)

    def training_samples(self, y):
        """Training samples the posterior saw at each y (0 for a y never simulated); shaped like y."""
        y = self.check_y(y)
        values, counts = self.spec.y_values, self.spec.counts
        if values.size == 0:
            out = np.zeros(y.shape, np.int64)
        else:
            idx = np.clip(np.searchsorted(values, y), 0, values.size - 1)
            out = np.where(values[idx] == y, counts[idx], 0)
        return int(out) if out.ndim == 0 else out

    def _flag(self, y: np.ndarray) -> None:
        counts = np.asarray(self.training_samples(y)).reshape(-1)
        rare = counts < RARE_BELOW
        if rare.any():
            first = int(y.reshape(-1)[np.argmax(rare)])
            warnings.warn(
                f"y = {first} had {int(counts[np.argmax(rare)])} training samples (< {RARE_BELOW}): "
                f"q(θ | y) there is an extrapolation",
                RareObservationWarning,
                stacklevel=_caller_level(),
            )

    def mixture(self, y):
        """Mixture parameters (logits, means, log_vars) at y, each of shape y.shape + (K,)."""
        y = self.check_y(y)
        self._flag(y)
        shift, scale = self.spec.embedding
        x = (y.reshape(-1) - shift) / scale
        n = x.size
        padded = np.zeros(_bucket_size(n), np.float32)  # a few compiled shapes serve every batch size
        padded[:n] = x
        out = self._mixture(self.params, jnp.asarray(padded))
        return tuple(o[:n].reshape(y.shape + o.shape[-1:]) for o in out)

    # ----------------------------------------------------------------- questions

    def log_prob(self, theta, y):
        """log q(θ | y); θ and y broadcast together; −inf outside θ's support.

        In the unconstrained space, q(θ) = q_u(f(θ)) |f'(θ)|.
        """
        y = self.check_y(y)
        logits, means, log_vars = self.mixture(y)  # y.shape + (K,)
        theta = jnp.asarray(theta, means.dtype)
        if not self.unconstrained:
            return mixture.log_prob(theta, logits, means, log_vars)
        b = self.bound
        inside = b.contains(theta, jnp)
        safe = jnp.where(inside, theta, _inner_point(b))
        lp = mixture.log_prob(b.forward(safe, jnp), logits, means, log_vars) + b.log_abs_det_jacobian(safe, jnp)
        return jnp.where(inside, lp, -jnp.inf)

    def fitting_log_prob_and_cdf(self, u, y):
        """log q_u(u | y) and Q_u(u | y) in the fitting space (no Jacobian), for paired u (n,) and
        y (n,); float64 numpy. A draw within float32 rounding of a bound stays finite here."""
        values, inverse = np.unique(np.asarray(y).reshape(-1), return_inverse=True)
        # the network once per distinct y (a chunk of 10^6 draws holds a few hundred), then gathered
        logits, means, log_vars = (np.asarray(a)[inverse] for a in self.mixture(values))
        u = np.asarray(u, np.float32).reshape(-1)
        n = u.size
        size = _bucket_size(n)
        pad = lambda a: np.concatenate([np.asarray(a, np.float32), np.zeros((size - n,) + a.shape[1:], np.float32)])  # noqa: E731
        lp, cdf = _log_prob_and_cdf(pad(u), pad(logits), pad(means), pad(log_vars))
        return np.asarray(lp[:n], np.float64), np.asarray(cdf[:n], np.float64)

    def cdf(self, theta, y):
        """Q(θ | y), the posterior CDF; θ and y broadcast together."""
        logits, means, log_vars = self.mixture(y)
        theta = jnp.asarray(theta, means.dtype)
        if self.unconstrained:
            b = self.bound
            lo, hi = theta <= b.low, theta >= b.high
            u = b.forward(jnp.where(lo | hi, _inner_point(b), theta), jnp)
            return jnp.where(lo, 0.0, jnp.where(hi, 1.0, mixture.cdf(u, logits, means, log_vars)))
        return mixture.cdf(theta, logits, means, log_vars)

    def sample(self, key, y, n: int):
        """``n`` draws from q(θ | y): shape (n,) for one y, y.shape + (n,) for an array of y."""
        key, n = _check_key(key), _check_n(n)
        y = self.check_y(y)
        logits, means, log_vars = self.mixture(y)
        flat = [a.reshape(-1, a.shape[-1]) for a in (logits, means, log_vars)]
        draws = _sample_rows(key, *flat, n).reshape(y.shape + (n,))
        return self.bound.inverse(draws, jnp) if self.unconstrained else draws

    def _moments(self, y) -> np.ndarray:
        logits, means, log_vars = (np.asarray(a, np.float64) for a in self.mixture(y))
        flat = [a.reshape(-1, a.shape[-1]) for a in (logits, means, log_vars)]
        if self.unconstrained:
            inverse = self.bound.inverse
            out = np.array([mixture.transformed_moments(inverse, *p) for p in zip(*flat)])
        else:
            out = np.array([mixture.moments(*p) for p in zip(*flat)])
        return out.reshape(logits.shape[:-1] + (2,))

    def mean(self, y):
        """Posterior mean at y (scalar or array)."""
        return jnp.asarray(self._moments(y)[..., 0])

    def std(self, y):
        """Posterior standard deviation at y (scalar or array)."""
        return jnp.asarray(self._moments(y)[..., 1])

    # ----------------------------------------------------------------- files

    def save(self, run_dir) -> None:
        """Writes ``posterior.npz`` and ``posterior.json`` atomically into ``run_dir``."""
        run_dir = Path(run_dir)
        checkpoint.save_tree(
            run_dir / checkpoint.POSTERIOR, self.params, y_values=self.spec.y_values, counts=self.spec.counts
        )
        checkpoint.write_json(run_dir / checkpoint.POSTERIOR_SPEC, self.spec.to_json())


def _bucket_size(n: int) -> int:
    """The next power of two ≥ n (at least 8): the padded batch sizes compiled code sees."""
    return max(8, 1 << max(int(n) - 1, 0).bit_length())


@jax.jit
def _log_prob_and_cdf(x, logits, means, log_vars):
    return mixture.log_prob(x, logits, means, log_vars), mixture.cdf(x, logits, means, log_vars)


@functools.partial(jax.jit, static_argnums=4)
def _sample_rows(key, logits, means, log_vars, n: int):
    """``n`` draws from each row's mixture, (rows, n)."""
    keys = jax.random.split(key, logits.shape[0])
    return jax.vmap(lambda k, lg, m, lv: mixture.sample(k, lg, m, lv, n))(keys, logits, means, log_vars)


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _inner_point(b: Bound) -> float:
    """A point inside the support, to keep masked-out lanes finite."""
    if b.kind == "interval":
        return 0.5 * (b.low + b.high)
    if b.kind == "lower":
        return b.low + 1.0
    if b.kind == "upper":
        return b.high - 1.0
    return 0.0


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
    _, template = model.init(jax.random.key(0), probe.components, probe.hidden)
    template = jax.tree_util.tree_map(np.asarray, template)
    params, extra = checkpoint.load_tree(run_dir / checkpoint.POSTERIOR, template, ("y_values", "counts"), finite=True)
    spec = dataclasses.replace(
        probe, y_values=np.asarray(extra["y_values"], np.int64), counts=np.asarray(extra["counts"], np.int64)
    )
    return Posterior(spec, jax.tree_util.tree_map(jnp.asarray, params))
