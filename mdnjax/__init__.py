"""mdnjax: Mixture Density Network posteriors for simulation-based inference, in JAX.

Example:
    >>> import jax, mdnjax
    >>> result = mdnjax.fit("beta", mdnjax.Config(samples=20_000, epochs=100))
    >>> post = result.posterior
    >>> post.log_prob(jax.numpy.array([0.2, 0.3]), y=30).shape
    (2,)
"""

from typing import TYPE_CHECKING

from mdnjax.lazy import exports

_NAMES = {
    "Bound": ".task",
    "Config": ".config",
    "ConfigError": ".config",
    "Posterior": ".posterior",
    "RareObservationWarning": ".posterior",
    "Result": ".train",
    "RoundError": ".train",
    "Task": ".task",
    "TrainState": ".train",
    "datasets": ".datasets",
    "fit": ".train",
    "fit_arrays": ".train",
    "fit_rounds": ".train",
    "load": ".posterior",
    "simulate": ".datasets",
    "tasks": ".tasks",
}
__getattr__, __dir__ = exports(__name__, _NAMES)

if TYPE_CHECKING:  # what static tools see; at run time each name is imported when first used
    from mdnjax import datasets, tasks
    from mdnjax.config import Config, ConfigError
    from mdnjax.datasets import simulate
    from mdnjax.posterior import Posterior, RareObservationWarning, load
    from mdnjax.task import Bound, Task
    from mdnjax.train import Result, RoundError, TrainState, fit, fit_arrays, fit_rounds

__all__ = [
    "Bound",
    "Config",
    "ConfigError",
    "Posterior",
    "RareObservationWarning",
    "Result",
    "RoundError",
    "Task",
    "TrainState",
    "datasets",
    "fit",
    "fit_arrays",
    "fit_rounds",
    "load",
    "simulate",
    "tasks",
]
__version__ = "0.2.0"
