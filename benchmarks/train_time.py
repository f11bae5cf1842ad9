"""Training time of the per-sample path on the sbibm tasks at a budget (default 10^5), against
the times recorded with the C2ST grid (``results/sbibm.json``, ``results/sbibm_10d.json``).

The same ``mdnjax.fit`` with default settings and seed 0 as ``benchmarks/sbibm.py``, without the
C2ST (no sbibm data needed): wall and CPU seconds, compile seconds, passes, ms per pass and the
best validation NLL, so a change to the training step can be weighed against the earlier runs
(the same seed gives the same simulations; the passes and NLL show whether training itself
changed). Results: a table on stdout and ``results/train_time.json``.

    python benchmarks/train_time.py                          # two_moons, slcp, gaussian_linear
    python benchmarks/train_time.py --tasks bernoulli_glm --budget 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

import mdnjax
from mdnjax import tasks, xla

RESULTS = Path(__file__).parent / "results"
EARLIER = ("sbibm.json", "sbibm_10d.json")  # the grid's own training records (the latest file wins)


def earlier(name: str, budget: int) -> dict | None:
    """The grid's training record of this task and budget, if any."""
    found = None
    for f in EARLIER:
        path = RESULTS / f
        if path.is_file():
            found = json.loads(path.read_text())["runs"].get(f"{name}/{budget}", found)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp", "gaussian_linear"])
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--out", default=str(RESULTS / "train_time.json"))
    args = p.parse_args()
    xla.configure_cpu()
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    cpu_name = platform.processor() or platform.machine()
    data["device"] = f"{jax.devices()[0].platform} ({cpu_name}, {os.cpu_count()} cores)"
    data["jax"] = jax.__version__
    for name in args.tasks:
        t0, c0 = time.perf_counter(), time.process_time()
        result = mdnjax.fit(tasks.from_name(name), mdnjax.Config(samples=args.budget))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        passes = int(result.state.epoch)
        run = {
            "train_wall_s": wall,
            "train_cpu_s": cpu,
            "compile_s": result.timings.get("compile_s"),
            "ms_per_pass": result.timings.get("ms_per_epoch"),
            "passes": passes,
            "best_pass": result.best_epoch,
            "best_validation_nll": result.report.get("best_validation"),
        }
        before = earlier(name, args.budget)
        if before is not None:
            run["earlier"] = {k: before.get(k) for k in ("train_wall_s", "compile_s", "passes", "best_validation_nll")}
            run["earlier"]["ms_per_pass"] = 1e3 * before["train_wall_s"] / max(before["passes"], 1)  # compile included
        data["runs"][f"{name}/{args.budget}"] = run
        path.write_text(json.dumps(data, indent=1))
        was = run.get("earlier", {})
        print(
            f"{name}/{args.budget}: {wall:.1f} s wall ({cpu:.1f} s CPU), compile {run['compile_s']:.1f} s, "
            f"{passes} passes at {run['ms_per_pass']:.0f} ms, best validation NLL {run['best_validation_nll']:.4f}"
            + (
                f" | earlier: {was['train_wall_s']:.1f} s, {was['passes']} passes, NLL {was['best_validation_nll']:.4f}"
                if was
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
