"""Training from stored simulations against training inline: the same parameters, bitwise, and
the peak memory of each, on the binned layout (the beta task at 10^8 draws by default).

    python benchmarks/from_disk.py                     # 10^8 draws, 200 epochs
    python benchmarks/from_disk.py --quick             # 2·10^7 draws, 50 epochs
    python benchmarks/from_disk.py --per-sample        # two_moons, 10^7 draws, per-sample, 0.25 GiB budget

Each step runs in a fresh process (its peak RSS is its own): simulate to a dataset folder, train
inline, train from the folder. Above 10^7 draws both trainings stream chunks of 2·10^6 pairs
through the binned layout (the folder's shards are those chunks), so neither holds an O(N) array.
With ``--per-sample`` the continuous task trains per sample from the folder, once with a memory
budget below the data's size (streamed) and once resident, ``--epochs`` passes each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def child(step: str, samples: int, epochs: int, data: str, params: str) -> dict:
    import jax
    import numpy as np

    import mdnjax

    t0 = time.perf_counter()
    task = "two_moons" if step.startswith("ps-") else "beta"
    if step.endswith("simulate"):
        mdnjax.simulate(task, samples, data, seed=0)
        out = {}
    elif step == "ps-tiny":  # the constant: the same streamed path over 2·10^5 rows
        mdnjax.simulate(task, 200_000, data + "-tiny", seed=0)
        config = {"epochs": epochs, "holdout": 0.0, "memory_budget": 0.002, "log_every": 1}
        result = mdnjax.fit(None, config, data=data + "-tiny")
        out = {"report": result.report.get("streamed")}
    elif step.startswith("ps-"):
        budget = {"ps-streamed": 0.25, "ps-resident": None}[step]
        config = {"epochs": epochs, "holdout": 0.0, "memory_budget": budget, "log_every": 1}
        result = mdnjax.fit(None, config, data=data)
        out = {
            "validation": result.validation.tolist(),
            "report": result.report.get("streamed"),
            "timings": result.timings,
        }
    else:
        config = mdnjax.Config(samples=samples, epochs=epochs, layout="binned", holdout=0.0)
        result = mdnjax.fit("beta", config) if step == "inline" else mdnjax.fit(None, config, data=data)
        leaves = jax.tree.leaves(result.state.params)
        np.savez(params, *[np.asarray(v) for v in leaves])
        out = {"final_loss": float(result.losses[-1]), "timings": result.timings}
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=float, default=1e8)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--per-sample", action="store_true")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        step, samples, epochs, data, params = args.child
        print(json.dumps(child(step, int(samples), int(epochs), data, params)))
        return 0
    if args.quick:
        args.samples, args.epochs = 2e7, 50
    if args.per_sample:
        return per_sample(args)
    n = int(args.samples)
    root = Path(tempfile.mkdtemp(prefix="mdnjax-from-disk-"))
    steps = {}
    try:
        for step in ("simulate", "inline", "stored"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                step,
                str(n),
                str(args.epochs),
                str(root / "data"),
                str(root / f"{step}.npz"),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            steps[step] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{step:9s} {steps[step]['wall_s']:8.1f} s  peak RSS {steps[step]['peak_rss_mb']:7.0f} MB", flush=True
            )
        disk = sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())
        import numpy as np

        with np.load(root / "inline.npz") as a, np.load(root / "stored.npz") as b:
            bitwise = all(np.array_equal(a[k], b[k]) for k in a.files)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"parameters bitwise equal: {bitwise}; dataset {disk / 2**30:.2f} GiB on disk")
    out = RESULTS / ("from_disk_quick.json" if args.quick else "from_disk.json")
    payload = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "samples": n,
        "epochs": args.epochs,
        "steps": steps,
        "bitwise_equal": bitwise,
        "disk_gib": disk / 2**30,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0 if bitwise else 1


def per_sample(args) -> int:
    n = int(1e7) if args.samples == 1e8 else int(args.samples)
    epochs = 2 if args.epochs == 200 else args.epochs
    root = Path(tempfile.mkdtemp(prefix="mdnjax-from-disk-"))
    steps = {}
    try:
        for step in ("ps-simulate", "ps-tiny", "ps-streamed", "ps-resident"):
            cmd = [sys.executable, __file__, "--child", step, str(n), str(epochs), str(root / "data"), "-"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            steps[step] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{step:12s} {steps[step]['wall_s']:8.1f} s  peak RSS {steps[step]['peak_rss_mb']:7.0f} MB", flush=True
            )
        disk = sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = RESULTS / "from_disk_per_sample.json"
    payload = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "task": "two_moons",
        "samples": n,
        "passes": epochs,
        "memory_budget_gib": 0.25,
        "data_mib": disk / 2**20,
        "steps": steps,
    }
    out.write_text(json.dumps(payload, indent=1))
    above = steps["ps-streamed"]["peak_rss_mb"] - steps["ps-tiny"]["peak_rss_mb"]
    payload["streamed_above_constant_mb"] = above
    out.write_text(json.dumps(payload, indent=1))
    print(f"data {disk / 2**20:.0f} MiB on disk; streamed peak {above:.0f} MB above the constant; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
