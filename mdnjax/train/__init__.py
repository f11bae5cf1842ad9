"""Training: the loop every layout shares (``loop``) and ``fit`` on the bucketed and binned
layouts (``bucketed``).

``python -m mdnjax.train`` runs the command line (``mdnjax.cli``).
"""

from mdnjax.train.bucketed import Result, fit, input_width, make_loss, resolve_task
from mdnjax.train.loop import (
    Outcome,
    Progress,
    TrainState,
    initial_state,
    learning_rate,
    make_run_epochs,
    make_step,
    optimizer,
    state_of,
    train,
)

__all__ = [
    "Outcome",
    "Progress",
    "Result",
    "TrainState",
    "fit",
    "initial_state",
    "input_width",
    "learning_rate",
    "make_loss",
    "make_run_epochs",
    "make_step",
    "optimizer",
    "resolve_task",
    "state_of",
    "train",
]
