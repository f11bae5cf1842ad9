"""The command line: the only part of mdnjax that prints, exits, handles signals and creates folders.

    python -m mdnjax.train --prior beta             # train (also: python -m mdnjax train ...)
    python -m mdnjax.train --resume RUN --epochs N  # continue a run, or train a finished one longer
    python -m mdnjax.calibrate RUN                  # SBC ranks and coverage of a saved run
    python -m mdnjax report RUN                     # the report again, without training

Every error is one line on stderr with exit code 2 (bad input) or 1 (a failure while running);
an interrupted run exits 130 after saving its checkpoint.

* ``flags``: the parser and flags → task + ``Config``.
* ``console``: progress, warnings and errors as the user sees them.
* ``rundir``: a run folder's life (claim, record, resume).
* ``train``, ``calibrate``: the two commands; ``report``: the report after training; ``rebuild``:
  ``report RUN``, the report of a saved run again.
"""

from mdnjax.cli.calibrate import calibrate_main
from mdnjax.cli.rebuild import report_main
from mdnjax.cli.train import main

__all__ = ["calibrate_main", "main", "report_main"]
