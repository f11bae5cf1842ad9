"""``python -m mdnjax.train``: the training command (``mdnjax.cli``)."""

import sys

from mdnjax import cli

if __name__ == "__main__":
    sys.exit(cli.main())
