"""Tasks from numpyro models: each latent site a parameter, a site of counts the observation.

The supports come from the latent sites' constraints (the bounds ``biject_to`` maps onto), the range
of y from the observed site's integer support, ``log_prior`` from the model's joint density of the
latent sites, and ``log_likelihood`` from the model conditioned on y. A site with ``obs=`` set is
simulated from its distribution (``handlers.uncondition``), as numpyro's own prior predictive would.
Every check runs before anything is trained, and a model mdnjax cannot use is refused in one line.
numpyro is an optional extra (``pip install "mdnjax[numpyro]"``).
"""

from __future__ import annotations

import math

import numpy as np


def from_numpyro(cls, model, y: str = "y", theta=None, name: str | None = None, **kwargs):
    """A task from a numpyro model (called with no arguments): ``Task.from_numpyro(model)``.

    Args:
        cls: the task class to build (``mdnjax.Task`` or a subclass).
        model: the numpyro model function.
        y: the name of the observed site: integer counts; a plate of them (or a vector-valued
            site) is a vector observation of M counts.
        theta: the parameter site(s): a name, a sequence of names (θ ∈ ℝ^D in that order), or None
            for every latent site in the order the model samples them. Each must be a continuous
            scalar; latent sites left out are simulated with the model but have no prior or
            likelihood of their own (the task then has neither, and checks by held-out draws).
        name: the task's name (default: the model function's name).
        **kwargs: passed to ``Task`` (``plot_y`` ...).

    Raises:
        ImportError: numpyro is not installed.
        ValueError: a site mdnjax cannot use, in one line.
    """
    try:
        import jax
        import jax.numpy as jnp
        from numpyro import handlers
        from numpyro.infer import Predictive
        from numpyro.infer.util import log_density
        from numpyro.infer.util import log_likelihood as numpyro_log_likelihood
    except ImportError:
        raise ImportError('Task.from_numpyro needs numpyro: pip install "numpyro>=0.22"') from None
    label = name or getattr(model, "__name__", "numpyro-model")
    context = lambda: jax.numpy_rank_promotion("allow")  # noqa: E731  (numpyro broadcasts implicitly)
    free = handlers.uncondition(model)  # obs= sites drawn from their distributions
    with context():
        trace = handlers.trace(handlers.seed(free, 0)).get_trace()
    sites = [k for k, s in trace.items() if s["type"] == "sample"]
    if y not in trace:
        raise ValueError(f"the numpyro model {label} has no site {y!r} (its sites: {', '.join(sites)})")
    latent = [k for k in sites if k != y]
    names = latent if theta is None else [theta] if isinstance(theta, str) else list(theta)
    for site in names:
        if site not in latent:
            raise ValueError(f"the numpyro model {label} has no latent site {site!r} (its latent sites: {latent})")
    if not names:
        raise ValueError(f"the numpyro model {label} has no latent site: nothing to infer")
    support = [_bound(trace[site], site) for site in names]
    y_fn = trace[y]["fn"]
    if not y_fn.support.is_discrete:
        raise ValueError(f"site {y!r} has the support {y_fn.support}: y must be integer counts")
    y_shape = tuple(int(v) for v in np.shape(trace[y]["value"]))
    m = int(np.prod(y_shape)) if y_shape else 0
    lows = np.asarray(getattr(y_fn.support, "lower_bound", -math.inf), np.float64)
    highs = np.asarray(getattr(y_fn.support, "upper_bound", math.inf), np.float64)
    y_range = (float(np.min(lows)), float(np.max(highs)))
    whole = len(names) == len(latent)  # every latent site is a parameter: prior and likelihood exist

    def simulate(key, n):
        with context():
            out = Predictive(free, num_samples=n)(key)
        theta_out = jnp.stack([out[s].reshape(n) for s in names], axis=1)
        return (theta_out[:, 0] if len(names) == 1 else theta_out), out[y].reshape((n, m) if m else (n,))

    def _columns(t):
        t = np.asarray(t, np.float64)
        flat = t.reshape(-1) if len(names) == 1 else t.reshape(-1, len(names))
        cols = [flat] if len(names) == 1 else [flat[:, d] for d in range(len(names))]
        batch = t.shape if len(names) == 1 else t.shape[:-1]
        return {s: jnp.asarray(c, jnp.float32) for s, c in zip(names, cols)}, batch

    hidden = handlers.block(handlers.seed(free, 0), hide=[y])  # the latent sites' joint density

    @jax.jit
    def _log_prior(values):
        with context():
            return jax.vmap(lambda v: log_density(hidden, (), {}, v)[0])(values)

    @jax.jit
    def _log_likelihood(values, observed):
        conditioned = handlers.condition(free, data={y: observed})
        with context():
            return numpyro_log_likelihood(conditioned, values, batch_ndims=1)[y]

    def log_prior(t):
        values, batch = _columns(t)
        return np.asarray(_log_prior(values), np.float64).reshape(batch)

    def log_likelihood(t, y_value):
        values, batch = _columns(t)
        out = _log_likelihood(values, jnp.asarray(np.asarray(y_value).reshape(y_shape)))
        out = np.asarray(out, np.float64).reshape(len(out), -1).sum(axis=1)  # a plate: its counts together
        return out.reshape(batch)

    return cls(
        label,
        simulate,
        support=support,
        log_prior=log_prior if whole else None,
        log_likelihood=log_likelihood if whole else None,
        y_range=y_range,
        y_shape=(m,) if m else (),
        simulator="jax",
        **kwargs,
    )


def _bound(site: dict, name: str) -> tuple[float, float]:
    """The (low, high) of a continuous scalar latent site."""
    fn = site["fn"]
    if fn.event_shape or fn.batch_shape:
        shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
        raise ValueError(f"site {name!r} has shape {shape}: each parameter must be a scalar site (one per parameter)")
    support = fn.support
    if support.is_discrete or support.event_dim:
        raise ValueError(f"site {name!r} has the support {support}: θ must be a continuous scalar")
    low = float(getattr(support, "lower_bound", -math.inf))
    high = float(getattr(support, "upper_bound", math.inf))
    return low, high
