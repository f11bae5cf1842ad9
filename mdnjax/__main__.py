"""``python -m mdnjax COMMAND``: train, calibrate, report, simulate, import, export (see ``mdnjax.cli``)."""

import sys

from mdnjax import cli

USAGE = """usage: python -m mdnjax COMMAND [options]

commands:
  train       train an MDN posterior for a task and write a run folder (python -m mdnjax train --help)
  calibrate   SBC ranks and coverage of a trained run (python -m mdnjax calibrate --help)
  report      write the report of a trained run again, without training (python -m mdnjax report RUN)
  simulate    simulate a task once into a dataset folder (python -m mdnjax simulate --help)
  import      store simulations made by any program (.npz, .csv, .parquet) as a dataset folder
  merge       merge the shares of one simulation (simulate --shard i/N) written to separate folders
  export      write a dataset folder as one Parquet file

examples:
  python -m mdnjax train --prior beta
  python -m mdnjax calibrate runs/beta-20260101-120000
  python -m mdnjax simulate beta --samples 1e6 --out data/beta && python -m mdnjax train --data data/beta
"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "calibrate":
        return cli.calibrate_main(rest)
    if command == "train":
        return cli.main(rest)
    if command == "report":
        return cli.report_main(rest)
    if command in ("simulate", "import", "export", "merge"):
        from mdnjax.cli import data

        mains = {"simulate": data.simulate_main, "import": data.import_main, "export": data.export_main}
        return {**mains, "merge": data.merge_main}[command](rest)
    print(
        f"python -m mdnjax: error: unknown command {command!r}: "
        "choose train, calibrate, report, simulate, import, export or merge",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
