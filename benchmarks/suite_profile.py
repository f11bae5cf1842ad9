"""Where the test suite's time goes: XLA compilation against everything else, per test file.

    python benchmarks/suite_profile.py            # the README's pytest command, profiled (~8 min here)
    python benchmarks/suite_profile.py --quick    # two small test files: a check of the script
    python benchmarks/suite_profile.py --figure-only

Runs ``python -m pytest -q -n 2`` (the README's test command, without lint) with
``benchmarks/suite_plugin.py`` loaded: each test's wall time, the XLA backend compilations it caused
(count and seconds, from ``jax.monitoring``; a program served by the persistent compilation cache
the suite shares between its workers counts as a hit, not a compilation) and the cache hits. Writes
``benchmarks/results/suite_profile.json`` (totals per worker and per file, the suite's wall time,
the machine) and ``suite_profile.png`` (per file: compile seconds and the rest).

What it answers: the suite's floor on this machine. Every compilation counted is a distinct
program (the cache serves repeats), so the compile seconds of a worker are a lower bound on its
wall time for these tests, whatever the order or grouping of the tests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(workers: int, paths: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="mdnjax-suite-profile-") as tmp:
        plugin_dir = str(Path(tmp, "plugin"))
        Path(plugin_dir).mkdir()
        shutil.copy(ROOT / "benchmarks" / "suite_plugin.py", plugin_dir)
        env = {
            **os.environ,
            "SUITE_PROFILE_DIR": tmp,
            # the plugin alone on the path (benchmarks/ itself holds modules named like packages: sbibm.py)
            "PYTHONPATH": os.pathsep.join(filter(None, [plugin_dir, os.environ.get("PYTHONPATH")])),
        }
        cmd = [sys.executable, "-m", "pytest", "-q", "-n", str(workers), "-p", "suite_plugin", "-p", "no:cacheprovider"]
        cmd += paths
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(summary)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the suite failed (exit {proc.returncode}): nothing written")
        per_worker = {p.stem: json.loads(p.read_text()) for p in sorted(Path(tmp).glob("*.json"))}
    files: dict = collections.defaultdict(lambda: {"tests": 0, "wall_s": 0.0, "compile_s": 0.0, "compiles": 0})
    workers_out = {}
    for worker, rows in per_worker.items():
        workers_out[worker] = {
            "tests": len(rows),
            "wall_s": sum(r["wall_s"] for r in rows.values()),
            "compile_s": sum(r["compile_s"] for r in rows.values()),
            "compiles": sum(r["compiles"] for r in rows.values()),
            "cache_hits": sum(r["cache_hits"] for r in rows.values()),
        }
        for test, r in rows.items():
            f = files[test.split("::")[0]]
            f["tests"] += 1
            for k in ("wall_s", "compile_s", "compiles"):
                f[k] += r[k]
    return {
        "command": " ".join(cmd[2:]),
        "summary": summary,
        "suite_wall_s": wall,
        "workers": workers_out,
        "files": dict(sorted(files.items(), key=lambda kv: -kv[1]["wall_s"])),
        "device": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
    }


def figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(data["files"].items())[:25]
    names = [name.replace("tests/", "").replace("mdnjax/", "doctest ") for name, _ in files]
    compile_s = [f["compile_s"] for _, f in files]
    rest = [max(f["wall_s"] - f["compile_s"], 0.0) for _, f in files]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(files) + 1.6))
    ax.barh(names, compile_s, color="tab:red", label="XLA compilation (backend)")
    ax.barh(names, rest, left=compile_s, color="tab:gray", label="everything else")
    ax.invert_yaxis()
    w = data["workers"]
    title = f"test suite, {len(w)} workers: {data['suite_wall_s']:.0f} s wall; " + ", ".join(
        f"{k}: {v['compile_s']:.0f} s compiling of {v['wall_s']:.0f} s" for k, v in w.items()
    )
    ax.set(xlabel="seconds (summed over the file's tests)", title=title)
    ax.title.set_fontsize(8)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="two small test files, results apart")
    parser.add_argument("--figure-only", action="store_true")
    args = parser.parse_args()
    path = RESULTS / ("suite_profile_quick.json" if args.quick else "suite_profile.json")
    if args.figure_only:
        data = json.loads(path.read_text())
    else:
        data = run(args.workers, ["tests/test_mixture.py", "tests/test_layout.py"] if args.quick else [])
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    for worker, v in data["workers"].items():
        print(
            f"{worker}: {v['tests']} tests, {v['wall_s']:.0f} s of test time, {v['compile_s']:.0f} s compiling "
            f"({v['compiles']} programs, {v['cache_hits']} cache hits)"
        )
    print(f"suite wall {data['suite_wall_s']:.0f} s; slowest files:")
    for name, f in list(data["files"].items())[:8]:
        print(f"  {f['wall_s']:6.1f} s ({f['compile_s']:5.1f} s compiling, {f['tests']} tests)  {name}")
    figure(data, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
