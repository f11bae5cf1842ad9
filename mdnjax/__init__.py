"""mdnjax: Mixture Density Network posteriors for simulation-based inference, in JAX.

Example:
    >>> import jax, mdnjax
    >>> result = mdnjax.fit(mdnjax.Config(prior="beta", samples=20_000, epochs=100), verbose=False)
    >>> post = result.posterior
    >>> post.log_prob(jax.numpy.array([0.2, 0.3]), y=30).shape
    (2,)
"""

from mdnjax.buckets import Buckets, bucket, bucket_packed
from mdnjax.config import Config
from mdnjax.posterior import Posterior, load
from mdnjax.tasks import Task, make_task

__all__ = ["Buckets", "Config", "Posterior", "Task", "bucket", "bucket_packed", "fit", "load", "make_task"]
__version__ = "0.1.0"


def __getattr__(name):
    # ``fit`` lives in ``mdnjax.train``, which is also the CLI entry point (``python -m
    # mdnjax.train``); importing it lazily keeps ``runpy`` from finding it half-imported.
    if name == "fit":
        from mdnjax.train import fit

        return fit
    raise AttributeError(f"module 'mdnjax' has no attribute {name!r}")
