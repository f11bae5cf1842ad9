"""``python -m mdnjax simulate|import|export``: stored simulations, as dataset folders
(``mdnjax.datasets``) that ``python -m mdnjax train --data`` trains on."""

from __future__ import annotations

import sys
import time

from mdnjax.cli.console import user_error
from mdnjax.cli.flags import Parser, UsageError, number

SIMULATE, IMPORT, EXPORT = "mdnjax simulate", "mdnjax import", "mdnjax export"


def _task(spec: str):
    """A built-in task's name or a user's ``FILE.py:NAME``: (task, the record that finds it again)."""
    from mdnjax import tasks, userspec

    if ":" in spec:
        try:
            return userspec.load(spec)
        except userspec.SpecError as err:
            raise UsageError(str(err)) from None
    try:
        return tasks.from_name(spec), None
    except ValueError as err:
        raise UsageError(str(err)) from None


def _share(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes i/N (this process's share of N, from 0), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text}: i must be in 0..N-1")
    return i, n


class Rate:
    """Progress lines: rows done, rate and time left (at most one line a second, and the last)."""

    def __init__(self):
        self.last = 0.0

    def __call__(self, done: int, planned: int, seconds: float) -> None:
        if seconds - self.last < 1.0 and done < planned:
            return
        self.last = seconds
        rate = done / max(seconds, 1e-9)
        eta = (planned - done) / rate if rate > 0 else float("inf")
        print(
            f"  {done:,} of {planned:,} simulations ({100 * done / planned:.0f}%), {rate:,.0f}/s, {eta:.0f} s left",
            flush=True,
        )


def simulate_main(argv=None) -> int:
    p = Parser(
        prog=f"python -m {SIMULATE}",
        description="Simulate a task once into a dataset folder (manifest + shards); train on it many times "
        "with python -m mdnjax train --data DATA.",
    )
    p.add_argument("task", metavar="TASK", help="a built-in task's name, or your own: path/to/file.py:NAME")
    p.add_argument("--samples", type=number(int), required=True, help="simulations to write")
    p.add_argument("--out", required=True, metavar="DATA", help="the dataset folder (resumed when it exists)")
    p.add_argument("--seed", type=number(int), default=0, help="seed: the draws of a training run with this seed")
    p.add_argument("--shard-size", type=number(int), help="rows per shard (default: one shard up to 10^7)")
    p.add_argument("--workers", type=number(int), default=1, help="local processes simulating shards (default 1)")
    p.add_argument("--shard", metavar="i/N", help="write only share i of N (a job array, Dask, Ray: one share each)")
    args = p.parse_args(argv)
    from mdnjax import datasets
    from mdnjax.simulation import SimulationError, UserCodeError

    try:
        share = _share(args.shard) if args.shard else (0, 1)
        if args.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {args.workers}")
        if args.shard_size is not None and args.shard_size < 1:
            raise UsageError(f"--shard-size must be >= 1, got {args.shard_size}")
        task, spec = _task(args.task)
        t0 = time.perf_counter()
        print(
            f"mdnjax simulate: {task.name}, {args.samples:,} simulations (seed {args.seed}) -> {args.out}", flush=True
        )
        data = datasets.simulate(
            task,
            args.samples,
            args.out,
            seed=args.seed,
            shard_size=args.shard_size,
            workers=args.workers,
            share=share,
            spec=spec,
            progress=Rate(),
        )
    except (UsageError, ValueError) as err:
        print(f"{SIMULATE}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return user_error(SIMULATE, err)
    except SimulationError as err:
        print(f"{SIMULATE}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{SIMULATE}: error: cannot write to {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    if data is None:
        print(f"share {share[0]}/{share[1]} written in {seconds:.1f} s; the dataset opens when every share is done")
        return 0
    print(f"{args.out}: {data.count:,} simulations in {len(data.records)} shards, verified ({seconds:.1f} s)")
    return 0


def import_main(argv=None) -> int:
    p = Parser(
        prog=f"python -m {IMPORT}",
        description="Store simulations made by any program (.npz with arrays theta and y, .csv or .parquet with "
        "named columns) as a dataset folder.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--out", required=True, metavar="DATA", help="a new dataset folder")
    p.add_argument("--theta", nargs="+", metavar="COLUMN", help="θ's columns (default: those named theta*)")
    p.add_argument("--y", nargs="+", metavar="COLUMN", help="y's columns (default: those named y*)")
    p.add_argument(
        "--support",
        nargs="+",
        metavar="LOW,HIGH",
        help="θ's support per parameter, e.g. 0,1 0,inf -inf,inf (default: the --task's, or every θ real)",
    )
    p.add_argument("--task", metavar="TASK", help="the task that made them (a built-in name or FILE.py:NAME)")
    p.add_argument("--drop-nonfinite", action="store_true", help="leave out rows with NaN or inf (counted)")
    args = p.parse_args(argv)
    from mdnjax import datasets

    try:
        theta, y, names = datasets.read_table(args.file, args.theta, args.y)
        task = _task(args.task)[0] if args.task else None
        support = None
        if args.support:
            support = [tuple(float(v) for v in s.split(",")) for s in args.support]
            if any(len(b) != 2 for b in support):
                raise UsageError("--support takes LOW,HIGH per parameter")
        elif task is None:
            support = [(-float("inf"), float("inf"))] * (1 if theta.ndim == 1 else theta.shape[1])
        data = datasets.write_arrays(
            theta, y, args.out, support=support, task=task, names=names, drop_nonfinite=args.drop_nonfinite
        )
    except (UsageError, ValueError) as err:
        print(f"{IMPORT}: error: {err}", file=sys.stderr)
        return 2
    dropped = data.manifest["parts"][0]["dropped_nonfinite"]
    left_out = f"; {dropped:,} rows with NaN or inf left out" if dropped else ""
    print(
        f"{args.out}: {data.count:,} simulations ({data.y_kind} y of shape {data.y_shape}) from {args.file}{left_out}"
    )
    return 0


def export_main(argv=None) -> int:
    p = Parser(prog=f"python -m {EXPORT}", description="Write a dataset folder as one Parquet file.")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="FILE.parquet")
    args = p.parse_args(argv)
    from mdnjax import datasets

    try:
        data = datasets.open_dataset(args.data)
        datasets.write_parquet(data, args.out)
    except ValueError as err:
        print(f"{EXPORT}: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {data.count:,} simulations")
    return 0


def merge_main(argv=None) -> int:
    p = Parser(
        prog="python -m mdnjax merge",
        description="Merge the shares of one simulation (--shard i/N) written to separate folders into one dataset.",
    )
    p.add_argument("sources", nargs="+", metavar="SHARE")
    p.add_argument("--out", required=True, metavar="DATA", help="the merged dataset folder")
    args = p.parse_args(argv)
    from mdnjax import datasets

    try:
        data = datasets.merge(args.out, args.sources)
    except ValueError as err:
        print(f"mdnjax merge: error: {err}", file=sys.stderr)
        return 2
    if data is None:
        print(f"{args.out}: shares merged so far; some shards are still missing (merge the other shares)")
        return 0
    print(f"{args.out}: {data.count:,} simulations in {len(data.records)} shards, verified")
    return 0
