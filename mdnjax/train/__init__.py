"""Training: the loop the bucketed layouts share (``loop``), ``fit`` on the bucketed and binned
layouts (``bucketed``) and on single pairs in minibatches (``minibatch``, its compiled pass in
``passes``); ``run.fit`` picks one;
``rounds.fit_rounds`` runs sequential rounds for one observation.

``python -m mdnjax.train`` runs the command line (``mdnjax.cli``).
"""

from mdnjax.train.bucketed import Result, input_width, make_loss, resolve_task
from mdnjax.train.loop import (
    Outcome,
    Progress,
    TrainState,
    initial_state,
    learning_rate,
    make_flat_run_epochs,
    make_run_epochs,
    make_step,
    optimizer,
    state_of,
    train,
)
from mdnjax.train.passes import SampleState
from mdnjax.train.rounds import RoundError, RoundsResult, fit_rounds
from mdnjax.train.run import chosen, fit, fit_arrays, state_template, with_data

__all__ = [
    "Outcome",
    "Progress",
    "Result",
    "chosen",
    "state_template",
    "SampleState",
    "TrainState",
    "fit",
    "fit_arrays",
    "fit_rounds",
    "RoundError",
    "RoundsResult",
    "with_data",
    "initial_state",
    "input_width",
    "learning_rate",
    "make_loss",
    "make_flat_run_epochs",
    "make_run_epochs",
    "make_step",
    "optimizer",
    "resolve_task",
    "state_of",
    "train",
]
