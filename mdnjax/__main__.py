"""``python -m mdnjax train ...`` and ``python -m mdnjax calibrate RUN`` (see ``mdnjax.cli``)."""

import sys

from mdnjax import cli


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "calibrate":
        return cli.calibrate_main(argv[1:])
    if argv and argv[0] == "train":
        argv = argv[1:]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
