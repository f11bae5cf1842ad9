"""Training: the loop the bucketed layouts share (``loop``), ``fit`` on the bucketed and binned
layouts (``bucketed``) and on single pairs in minibatches (``minibatch``, its compiled pass in
``passes``); ``run.fit`` picks one;
``rounds.fit_rounds`` runs sequential rounds for one observation.

``python -m mdnjax.train`` runs the command line (``mdnjax.cli``).
"""

from typing import TYPE_CHECKING

from mdnjax.lazy import exports

_NAMES = {
    "Result": ".bucketed",
    "input_width": ".bucketed",
    "make_loss": ".bucketed",
    "resolve_task": ".bucketed",
    "Outcome": ".loop",
    "Progress": ".loop",
    "TrainState": ".loop",
    "initial_state": ".loop",
    "learning_rate": ".loop",
    "make_flat_run_epochs": ".loop",
    "make_run_epochs": ".loop",
    "make_step": ".loop",
    "optimizer": ".loop",
    "state_of": ".loop",
    "train": ".loop",
    "SampleState": ".passes",
    "RoundError": ".rounds",
    "RoundsResult": ".rounds",
    "fit_rounds": ".rounds",
    "chosen": ".run",
    "fit": ".run",
    "fit_arrays": ".run",
    "state_template": ".run",
    "with_data": ".run",
}
__getattr__, __dir__ = exports(__name__, _NAMES)

if TYPE_CHECKING:  # what static tools see; at run time each name is imported when first used
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
