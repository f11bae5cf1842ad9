"""``python -m mdnjax.calibrate RUN``: SBC ranks and coverage of a saved run (``mdnjax.cli``)."""

if __name__ == "__main__":
    import sys

    from mdnjax import cli

    sys.exit(cli.calibrate_main())
