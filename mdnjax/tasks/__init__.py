"""Built-in tasks and the name → task registry (the only place a task is found by its name).

Example:
    >>> from mdnjax import tasks
    >>> sorted(set(tasks.REGISTRY) - set(tasks.SBIBM))
    ['abtest', 'beta', 'beta-mixture', 'bioassay', 'gamma', 'reed-frost', 'sir']
    >>> tasks.from_name("gamma", trials=50).trials
    50
"""

from __future__ import annotations

import difflib
import inspect

from mdnjax.tasks.conjugate import BetaBinomial, BetaMixture, BetaMixtureBinomial, GammaPoisson
from mdnjax.tasks.epidemics import ReedFrost, SIRFinalSize
from mdnjax.tasks.logistic import ABTest, Bioassay
from mdnjax.tasks.sbibm import TASKS as SBIBM

REGISTRY = {
    "beta": BetaBinomial,
    "gamma": GammaPoisson,
    "beta-mixture": BetaMixtureBinomial,
    "reed-frost": ReedFrost,
    "sir": SIRFinalSize,
    "bioassay": Bioassay,
    "abtest": ABTest,
    **SBIBM,
}

__all__ = [
    "REGISTRY",
    "ABTest",
    "Bioassay",
    "BetaBinomial",
    "BetaMixture",
    "BetaMixtureBinomial",
    "GammaPoisson",
    "ReedFrost",
    "SIRFinalSize",
    "SBIBM",
    "from_name",
]


def from_name(name: str, **params):
    """Builds the registered task ``name`` with ``params`` (``None`` values: the task's defaults).

    Raises:
        ValueError: unknown name or invalid parameters.
    """
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}: choose one of {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    accepted = set(inspect.signature(cls).parameters)
    given = {k: v for k, v in params.items() if v is not None}
    for key in given:
        if key not in accepted:
            raise ValueError(f"{key} does not apply to the {name} task (it takes {', '.join(sorted(accepted))})")
    return cls(**given)


def parameters(name: str) -> set[str]:
    """The parameters the registered task ``name`` takes."""
    return set(inspect.signature(REGISTRY[name]).parameters) if name in REGISTRY else set()


def from_record(record: dict):
    """Rebuilds a built-in task from its ``describe()`` record (as stored in a run folder)."""
    params = {k: v for k, v in record.items() if k != "name"}
    return from_name(record["name"], **params)
