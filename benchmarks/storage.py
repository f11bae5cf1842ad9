"""How to store simulations: mdnjax's ``.npy`` shards against Zarr v3 (uncompressed and with its
default Zstandard codec), write and read throughput and peak memory, each in a fresh process.

    python benchmarks/storage.py                 # 10^7 beta pairs and 2·10^5 slcp_distractors pairs
    python benchmarks/storage.py --quick         # 10^6 and 2·10^4

Two datasets: the beta task (θ float64, y int64: 16 bytes a pair) and sbibm's slcp_distractors
(θ 5 float64, y 100 float64: 840 bytes a pair). Shards (Zarr chunks) of 10^6 rows. Every write
ends with fsync; reads load every row into memory (the page cache warm: what training re-reading a
dataset sees). Medians over ``--repeats`` runs; peak RSS of the process above its RSS before the
operation. Needs ``pip install zarr``.
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

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHARD = 1_000_000
FORMATS = ("npy shards", "zarr", "zarr zstd")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _arrays(task: str, n: int):
    from mdnjax import tasks

    theta, y = tasks.from_name(task).simulate(np.random.default_rng(0), n)
    return np.asarray(theta, np.float64), np.asarray(y)


def _write(fmt: str, path: Path, theta, y) -> None:
    if fmt == "npy shards":
        from mdnjax import datasets

        datasets.write_arrays(
            theta, y, path, support=[(-np.inf, np.inf)] * (theta.ndim and theta[0].size), shard_size=SHARD
        )
        return
    import zarr

    codecs = {} if fmt == "zarr zstd" else {"compressors": None}
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, a in (("theta", theta), ("y", y)):
        chunks = (min(SHARD, len(a)), *a.shape[1:])
        arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, **codecs)
        arr[:] = a
    for root, _, files in os.walk(path):  # the same durability as the shards: every file synced
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def _read(fmt: str, path: Path):
    if fmt == "npy shards":
        from mdnjax import datasets

        data = datasets.open_dataset(path)  # every shard's checksum verified, as training does
        return data.read(0, data.count)
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return group["theta"][:], group["y"][:]


def child(fmt: str, task: str, n: int, path: str, op: str) -> dict:
    """One operation in this (fresh) process: seconds, peak RSS above the start, bytes."""
    import zarr  # noqa: F401 - both libraries imported before the clock and the memory baseline

    from mdnjax import datasets  # noqa: F401

    path = Path(path)
    theta, y = _arrays(task, n) if op == "write" else (None, None)
    base = _rss_mb()
    t0 = time.perf_counter()
    if op == "write":
        _write(fmt, path, theta, y)
        nbytes = theta.nbytes + y.nbytes
    else:
        theta, y = _read(fmt, path)
        nbytes = theta.nbytes + y.nbytes
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"s": seconds, "peak_above_mb": peak - base, "mb": nbytes / 2**20, "disk_mb": disk / 2**20}


def measure(fmt: str, task: str, n: int, repeats: int) -> dict:
    writes, reads = [], []
    for _ in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="mdnjax-storage-"))
        try:
            for op, out in (("write", writes), ("read", reads)):
                cmd = [sys.executable, __file__, "--child", fmt, task, str(n), str(root / "d"), op]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
    mb = writes[0]["mb"]
    return {
        "rows": n,
        "mb": mb,
        "disk_mb": writes[0]["disk_mb"],
        "write_s": med(writes, "s"),
        "write_mb_s": mb / med(writes, "s"),
        "write_peak_above_mb": med(writes, "peak_above_mb"),
        "read_s": med(reads, "s"),
        "read_mb_s": mb / med(reads, "s"),
        "read_peak_above_mb": med(reads, "peak_above_mb"),
    }


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    cases = list(results)
    width = 0.8 / len(FORMATS)
    for j, fmt in enumerate(FORMATS):
        xs = np.arange(len(cases)) + (j - 1) * width
        for ax, key in zip(axes, ("write_mb_s", "read_mb_s", "read_peak_above_mb"), strict=True):
            ax.bar(xs, [results[c][fmt][key] for c in cases], width, label=fmt)
    for ax, title in zip(
        axes, ("write MB/s (fsync)", "read MB/s (all rows)", "read: peak MB above start"), strict=True
    ):
        ax.set_xticks(np.arange(len(cases)), cases, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        fmt, task, n, path, op = args.child
        print(json.dumps(child(fmt, task, int(n), path, op)))
        return 0
    scale = 10 if args.quick else 1
    cases = {
        f"beta {10**7 // scale:,}": ("beta", 10**7 // scale),
        f"slcp_distractors {200_000 // scale:,}": ("slcp_distractors", 200_000 // scale),
    }
    results = {}
    for label, (task, n) in cases.items():
        results[label] = {}
        for fmt in FORMATS:
            r = measure(fmt, task, n, args.repeats)
            results[label][fmt] = r
            print(
                f"{label:28s} {fmt:11s} write {r['write_mb_s']:7.0f} MB/s  read {r['read_mb_s']:7.0f} MB/s  "
                f"read peak +{r['read_peak_above_mb']:6.0f} MB of {r['mb']:.0f} MB  on disk {r['disk_mb']:.0f} MB",
                flush=True,
            )
    import zarr

    out = RESULTS / ("storage_quick.json" if args.quick else "storage.json")
    payload = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "zarr": zarr.__version__,
        "numpy": np.__version__,
        "repeats": args.repeats,
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=1))
    figure(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
