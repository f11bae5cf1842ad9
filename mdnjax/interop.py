"""A trained posterior handed to other libraries: ArviZ's ``InferenceData`` (an optional extra,
``pip install arviz``), so users of numpyro and PyMC keep their usual summaries and plots.

Example:
    >>> import jax, mdnjax
    >>> post = mdnjax.fit("beta", mdnjax.Config(samples=20_000, epochs=50)).posterior
    >>> idata = to_arviz(post, 30, 500, jax.random.key(0))  # doctest: +SKIP
    >>> idata.posterior["theta"].shape                      # doctest: +SKIP
    (1, 500)
"""

from __future__ import annotations

import numpy as np


def parameter_names(dim: int, names=None) -> list[str]:
    """``names`` checked against D, else ``theta`` (D = 1) or ``theta_0``, ``theta_1``, …"""
    if names is None:
        return ["theta"] if dim == 1 else [f"theta_{d}" for d in range(dim)]
    names = [str(v) for v in names]
    if len(names) != dim or len(set(names)) != dim:
        raise ValueError(f"names must be {dim} distinct names, one per parameter, got {names}")
    return names


def to_arviz(posterior, y, n: int, key, names=None):
    """``n`` draws of q(θ | y) at one observation y as ArviZ data: a ``posterior`` group with one
    chain of ``n`` draws and one variable per parameter, and ``observed_data`` holding y. ArviZ
    0.x returns its ``InferenceData``; ArviZ 1.x (where ``from_dict`` takes the groups as one
    dict) its ``DataTree``.

    Raises:
        ImportError: ArviZ is not installed (one line saying how to install it).
    """
    try:
        import arviz as az
    except ImportError:
        raise ImportError("to_arviz needs ArviZ: pip install arviz") from None
    y = np.asarray(posterior.check_y(y))
    if y.ndim > (0 if posterior.spec.inputs == 1 else 1):
        raise ValueError(f"to_arviz takes one observation y, got an array of shape {y.shape}")
    draws = np.asarray(posterior.sample(key, y, n), np.float64).reshape(n, posterior.dim)
    names = parameter_names(posterior.dim, names)
    groups = {
        "posterior": {name: draws[None, :, d] for d, name in enumerate(names)},  # (chain, draw)
        "observed_data": {"y": np.atleast_1d(y)},
    }
    major = int(str(getattr(az, "__version__", "0")).split(".")[0] or 0)
    if major >= 1:
        return az.from_dict(groups)
    return az.from_dict(posterior=groups["posterior"], observed_data=groups["observed_data"])
