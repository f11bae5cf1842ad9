"""``python -m mdnjax simulate --workers W``: throughput of W local processes against one, on a
simulator that costs ``--ms`` of CPU per draw (a spin, as a slow scientific simulator would).

    python benchmarks/simulate_workers.py                 # 1 ms per draw, 8,000 draws, W = 1, 2
    python benchmarks/simulate_workers.py --quick         # 2,000 draws

The wall time counts everything a user waits for: starting the processes, importing, simulating,
writing and verifying the shards. Medians over ``--repeats``; the two datasets must be identical
(the same shards from the same seeds, whoever simulates them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

TASK = """
import time
import numpy as np
import mdnjax

MS = {ms}


def simulate(rng, n):
    theta = rng.beta(2.0, 5.0, size=n)
    y = np.empty(n, np.int64)
    for i in range(n):  # one draw at a time, each costing MS of CPU
        end = time.perf_counter() + MS / 1e3
        while time.perf_counter() < end:
            pass
        y[i] = rng.binomial(100, theta[i])
    return theta, y


TASK = mdnjax.Task("slow-beta", simulate, support=[(0.0, 1.0)])
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", type=float, default=1.0)
    p.add_argument("--samples", type=int, default=8_000)
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = 2_000, 1
    from mdnjax import datasets, userspec

    root = Path(tempfile.mkdtemp(prefix="mdnjax-workers-"))
    try:
        file = root / "slow_task.py"
        file.write_text(TASK.format(ms=args.ms))
        task, spec = userspec.load(f"{file}:TASK")
        times, prints = {}, {}
        for w in args.workers:
            times[w] = []
            for r in range(args.repeats):
                out = root / f"d{w}-{r}"
                t0 = time.perf_counter()
                data = datasets.simulate(
                    task, args.samples, out, seed=0, shard_size=args.shard_size, workers=w, spec=spec
                )
                times[w].append(time.perf_counter() - t0)
                prints[w] = data.fingerprint
                shutil.rmtree(out)
            print(f"workers {w}: {np.median(times[w]):.2f} s ({args.samples / np.median(times[w]):,.0f} draws/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = np.median(times[args.workers[0]])
    speedup = {w: float(base / np.median(t)) for w, t in times.items()}
    identical = len(set(prints.values())) == 1
    print(f"speed-up: {speedup}; identical datasets: {identical}")
    out = RESULTS / ("simulate_workers_quick.json" if args.quick else "simulate_workers.json")
    payload = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "ms_per_draw": args.ms,
        "samples": args.samples,
        "shard_size": args.shard_size,
        "wall_s": {str(w): t for w, t in times.items()},
        "speedup": {str(w): s for w, s in speedup.items()},
        "identical": identical,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
