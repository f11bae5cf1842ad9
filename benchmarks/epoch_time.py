"""Epoch time of every training path: the notebook's torch loop, vectorized torch, and JAX.

    python benchmarks/epoch_time.py            # full: N in 1e5 1e6 1e7, K in 1 8, both tasks
    python benchmarks/epoch_time.py --quick    # N = 1e6, K = 8, both tasks (under 3 minutes)

Paths (one full-batch Adam step per epoch, the same objective on every path):
  notebook-loop   the notebook's loop: dict of lists, a tensor and a forward per y (torch, 1 thread)
  torch-eager     vectorized torch on the padded (num_y, max_n) layout + mask
  torch-compiled  the same under torch.compile
  jax-padded      the reference design: padded layout, autodiff, one jit step per dispatch
  jax-fast        packed tiles, hand-written gradient, epochs in one lax.scan (the exact per-sample pass)
  jax-binned      the same kernel on the binned layout: each y's draws as 256 bins, two points each

``--objective notebook`` (default) trains the notebook's objective on every path: Σ_y of each y's
mean NLL, raw θ, Adam at a constant 1e-3, the 24-25-16 backbone. ``--objective default`` trains
the default recipe's on every path, torch included: the mean NLL over all samples (per-sample
weights), θ in the fitting space (logit / log), Adam with a cosine decay from 1e-2, a 64-64-64
backbone.

Warm-up (and compilation, reported apart) come first; then every repeat runs each path in turn
(interleaved), so the ratios come from the same minutes of the same machine. Per path: median
ms/epoch with min–max over repeats. The floor (one fused exp over N·K, ``floor.py``) is timed
in every repeat too, 10 calls after the paths. Results: a table on stdout,
``results/epoch_time[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mdnjax import xla  # noqa: E402

xla.configure_cpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from floor import Floor, summary  # noqa: E402

from mdnjax import kernels, model, objective, tasks, train  # noqa: E402
from mdnjax import layout as buckets  # noqa: E402
from mdnjax.layout import BLOCK, to_data  # noqa: E402

OUT = Path(__file__).parent / "results"
PATHS = ["notebook-loop", "torch-eager", "torch-compiled", "jax-padded", "jax-fast", "jax-binned"]


def _epochs(path: str, n: int) -> int:
    """Epochs per timed repeat: enough to dwarf timer noise, few for the slow paths."""
    if path == "jax-binned":
        return 200
    if path == "jax-fast":
        return 50 if n <= 10**6 else 10
    if path == "jax-padded":
        return 5 if n <= 10**6 else 2
    return 3 if n <= 10**5 else 1


OBJECTIVES = {
    "notebook": {"weighting": "per-y", "space": "raw", "lr": 1e-3, "schedule": "constant", "hidden": (24, 25, 16)},
    "default": {
        "weighting": "per-sample",
        "space": "unconstrained",
        "lr": 1e-2,
        "schedule": "cosine",
        "hidden": (64, 64, 64),
    },
}
SCHEDULE_STEPS = 4000  # the cosine schedule's length (the default recipe's epochs)


class JaxPath:
    def __init__(self, fast: bool, task, theta, y, k: int, binned: bool = False, objective_name: str = "notebook"):
        obj = OBJECTIVES[objective_name]
        graphdef, params = model.init(jax.random.key(0), k, obj["hidden"])
        lr = optax.cosine_decay_schedule(obj["lr"], SCHEDULE_STEPS) if obj["schedule"] == "cosine" else obj["lr"]
        opt = optax.adam(lr)
        fast = fast or binned
        if binned:  # the same draws as two points per bin, B = 256
            b = buckets.bin_streamed(lambda: iter([(theta, y)]), bins=256)
            self.data = buckets.binned_to_data(b, (0.0, float(task.trials)), weighting=obj["weighting"])
        else:
            b = buckets.bucket_packed(theta, y) if fast else buckets.bucket(theta, y)
            self.data = to_data(b, (0.0, float(task.trials)), block=BLOCK if fast else None, weighting=obj["weighting"])
        self.layout_ratio = buckets.layout_ratio(b)
        kernel = kernels.select(reference=not fast)
        loss = lambda p, d: objective.loss(p, graphdef, d, kernel)  # noqa: E731
        step = train.make_step(loss, opt)
        t0 = time.perf_counter()
        if fast:
            self.run_epochs = train.make_flat_run_epochs(loss, opt)
            self.state = train.TrainState(
                params, opt.init(params), jax.tree_util.tree_map(jnp.copy, params), jnp.array(True), jnp.array(0)
            )
            self.compiled = {}
        else:
            self.step = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), self.data).compile()
            self.state = (params, opt.init(params))
        self.fast = fast
        self.compile_s = time.perf_counter() - t0

    def run(self, epochs: int) -> float:
        if self.fast:
            if epochs not in self.compiled:
                t0 = time.perf_counter()
                self.compiled[epochs] = self.run_epochs.lower(self.state, self.data, epochs).compile()
                self.compile_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            self.state, losses = self.compiled[epochs](self.state, self.data)
            losses.block_until_ready()
            return time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(epochs):
            params, opt_state, value = self.step(*self.state, self.data)
            self.state = (params, opt_state)
        value.block_until_ready()
        return time.perf_counter() - t0


class TorchPath:
    def __init__(self, kind: str, task, theta, y, k: int, objective_name: str = "notebook"):
        import torch

        from mdnjax.testing import torch_ref

        obj = OBJECTIVES[objective_name]
        torch.manual_seed(0)
        self.torch = torch
        self.net = torch_ref.TorchMDN(k, obj["hidden"])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=obj["lr"])
        self.schedule = None
        if obj["schedule"] == "cosine":  # lr · (1 + cos(π t / T)) / 2, as optax.cosine_decay_schedule
            self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=SCHEDULE_STEPS)
        weighting = obj["weighting"]
        if kind == "notebook-loop":
            by_y = torch_ref.group_by_y(theta, y)
            self.loss = lambda: torch_ref.notebook_loss(self.net, by_y, task.trials, weighting=weighting)
        else:
            b = buckets.bucket(theta, y)
            self.layout_ratio = buckets.layout_ratio(b)
            x, th, mask = torch_ref.padded_tensors(b, task.trials)
            fn = lambda: torch_ref.vectorized_loss(self.net, x, th, mask, weighting)  # noqa: E731
            if kind == "torch-compiled":
                torch._dynamo.reset()  # a fresh cache per configuration: never fall back to eager
                fn = torch.compile(fn, dynamic=False)
            self.loss = fn
        t0 = time.perf_counter()
        self.run(1)  # warm-up (compilation for torch.compile)
        self.compile_s = time.perf_counter() - t0

    def run(self, epochs: int) -> float:
        t0 = time.perf_counter()
        for _ in range(epochs):
            value = self.loss()
            self.opt.zero_grad()
            value.backward()
            self.opt.step()
            if self.schedule is not None:
                self.schedule.step()
        return time.perf_counter() - t0


def bench_config(name: str, n: int, k: int, repeats: int, paths: list[str], objective_name: str = "notebook") -> dict:
    task = tasks.from_name(name)
    theta, y = task.simulate(np.random.default_rng(0), n)
    if OBJECTIVES[objective_name]["space"] == "unconstrained":
        bound = task.support[0]
        theta = bound.forward(bound.interior(theta)[0])
    theta = theta.astype(np.float32)
    built, result = {}, {"task": name, "N": n, "K": k, "objective": objective_name, "paths": {}}
    for path in paths:
        try:
            if path.startswith("jax"):
                built[path] = JaxPath(
                    path == "jax-fast", task, theta, y, k, binned=path == "jax-binned", objective_name=objective_name
                )
            else:
                built[path] = TorchPath(path, task, theta, y, k, objective_name)
        except Exception as err:  # noqa: BLE001 - a path that cannot run is reported, not fatal
            result["paths"][path] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    times = {p: [] for p in built}
    floor, floor_times = Floor(n, k), []
    for _ in range(repeats):
        for path, obj in built.items():  # interleaved, the floor too
            e = _epochs(path, n)
            times[path].append(1e3 * obj.run(e) / e)
        floor_times += floor.run(10)
    for path, obj in built.items():
        t = np.array(times[path])
        result["paths"][path] = {
            "ms_median": float(np.median(t)),
            "ms_min": float(t.min()),
            "ms_max": float(t.max()),
            "compile_s": float(obj.compile_s),
            "epochs_per_repeat": _epochs(path, n),
        }
        if hasattr(obj, "layout_ratio"):
            result["paths"][path]["slots_per_sample"] = float(obj.layout_ratio)
    result["floor_ms"] = summary(floor_times)
    del built, floor
    return result


def train_run_rss(samples: int, epochs: int, prior: str = "gamma") -> dict:
    """Runs the CLI under a fresh parent process; returns the CLI's peak RSS and ms/epoch.

    The parent is a new interpreter so that ``RUSAGE_CHILDREN`` sees the CLI alone (not, say,
    torch.compile workers forked from this process).
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "mdnjax.train",
            "--prior",
            prior,
            "--samples",
            str(samples),
            "--epochs",
            str(epochs),
            "--recipe",
            "notebook",
            "--layout",
            "packed",
            "--log-every",
            "10",
            "--no-plots",
            "--out",
            f"{tmp}/run",
        ]
        probe = (
            "import resource, subprocess, sys, time; t = time.perf_counter(); "
            f"r = subprocess.run({cmd!r}, capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode); "
            "sys.stderr.write(r.stderr)"
        )
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        rss_kb, wall, code = proc.stdout.split()
        if int(code) != 0:
            return {"samples": samples, "error": proc.stderr.strip().splitlines()[-1]}
        metrics = json.loads(Path(f"{tmp}/run/metrics.json").read_text())
    layout = metrics["layout"]
    return {
        "prior": prior,
        "samples": samples,
        "epochs": epochs,
        "peak_rss_mb": int(rss_kb) / 1024,
        "layout_mb": 4 * layout["rows"] * layout["width"] / 2**20,  # θ, float32
        "ms_per_epoch": metrics["timings"]["ms_per_epoch"],
        "wall_s": float(wall),
    }


def _merge_rss(old: list[dict], new: list[dict]) -> list[dict]:
    """``new`` plus the entries of ``old`` for (task, N) pairs that ``new`` did not measure."""
    seen = {(r.get("prior"), r["samples"]) for r in new}
    kept = [r for r in old if (r.get("prior"), r["samples"]) not in seen]
    return sorted(kept + new, key=lambda r: (r.get("prior", ""), r["samples"]))


def meta() -> dict:
    import torch

    return {
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def table(results: list[dict]) -> str:
    lines = [
        f"{'task':6} {'N':>9} {'K':>2} {'path':15} {'ms/epoch':>10} {'min–max':>17} {'compile s':>9} "
        f"{'× floor':>8} {'fast ×':>8}"
    ]
    for r in results:
        fast = r["paths"].get("jax-fast", {}).get("ms_median")
        for path, v in r["paths"].items():
            if "error" in v:
                lines.append(f"{r['task']:6} {r['N']:>9.0e} {r['K']:>2} {path:15} {v['error'][:60]}")
                continue
            ratio = v["ms_median"] / fast if fast else float("nan")
            lines.append(
                f"{r['task']:6} {r['N']:>9.0e} {r['K']:>2} {path:15} {v['ms_median']:>10.2f} "
                f"{v['ms_min']:>8.2f}–{v['ms_max']:<8.2f} {v['compile_s']:>9.2f} "
                f"{v['ms_median'] / r['floor_ms']['median']:>8.1f} {ratio:>8.1f}"
            )
        lines.append(f"{r['task']:6} {r['N']:>9.0e} {r['K']:>2} {'floor (exp)':15} {r['floor_ms']['median']:>10.2f}")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["K"] for r in results})
    names = sorted({r["task"] for r in results})
    fig, axes = plt.subplots(len(ks), len(names), figsize=(6 * len(names), 4.5 * len(ks)), squeeze=False)
    for i, k in enumerate(ks):
        for j, name in enumerate(names):
            ax = axes[i, j]
            rows = sorted((r for r in results if r["K"] == k and r["task"] == name), key=lambda r: r["N"])
            for p in PATHS + ["floor"]:
                pts = [
                    (r["N"], r["floor_ms"]["median"] if p == "floor" else r["paths"].get(p, {}).get("ms_median"))
                    for r in rows
                ]
                pts = [(a, b) for a, b in pts if b is not None]
                if pts:
                    style = dict(ls=":", marker="x", color="gray") if p == "floor" else dict(marker="o")
                    ax.plot(*zip(*pts), label=p, **style)
            ax.set(xscale="log", yscale="log", xlabel="samples N", ylabel="ms per epoch", title=f"{name}, K={k}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_rss(runs: list[dict], path: Path, title: str) -> None:
    """Peak RSS of whole CLI runs and the size of their layout against the number of samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for prior in sorted({r["prior"] for r in runs}):
        rows = sorted((r for r in runs if r["prior"] == prior and "layout_mb" in r), key=lambda r: r["samples"])
        if not rows:
            continue
        n = [r["samples"] / 1e6 for r in rows]
        line = ax.plot(n, [r["peak_rss_mb"] / 1024 for r in rows], marker="o", label=f"{prior}: peak RSS")[0]
        # the 10^7 point is the in-memory path; the line shows how the streamed runs grow
        ax.plot(
            n,
            [r["layout_mb"] / 1024 for r in rows],
            ls=":",
            marker="x",
            color=line.get_color(),
            label=f"{prior}: layout",
        )
    ax.set(xlabel="samples N (millions)", ylabel="GiB", title=title)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description="Epoch time of every training path.")
    p.add_argument("--quick", action="store_true", help="N = 1e6, K = 8 only, 3 repeats (< 3 minutes)")
    p.add_argument("--samples", type=float, nargs="+", help="override N values")
    p.add_argument("--components", type=int, nargs="+", help="override K values")
    p.add_argument("--tasks", nargs="+", default=["beta", "gamma"])
    p.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    p.add_argument("--repeats", type=int)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--no-rss", action="store_true", help="skip the 1e7-sample CLI run measuring peak RSS")
    p.add_argument("--rss-only", action="store_true", help="only the CLI runs (peak RSS), merged into the JSON")
    p.add_argument("--rss-samples", type=float, nargs="+", default=[1e7], help="N for the peak-RSS CLI runs")
    p.add_argument("--rss-epochs", type=int, default=200)
    p.add_argument(
        "--objective", choices=sorted(OBJECTIVES), default="notebook", help="the objective every path trains"
    )
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.torch_threads)
    ns = [int(v) for v in (args.samples or ([1e6] if args.quick else [1e5, 1e6, 1e7]))]
    ks = args.components or ([8] if args.quick else [1, 8])
    repeats = args.repeats or (3 if args.quick else 5)
    suffix = ("_quick" if args.quick else "") + ("" if args.objective == "notebook" else f"_{args.objective}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "epoch_time.json"
    previous_rss = json.loads(path.read_text()).get("train_rss", []) if path.exists() else []
    if args.rss_only:
        payload = json.loads(path.read_text()) if path.exists() else {"meta": meta(), "results": []}
        runs = [train_run_rss(int(n), args.rss_epochs, prior) for n in args.rss_samples for prior in args.tasks]
        payload["train_rss"] = _merge_rss(previous_rss, runs)
        print(json.dumps(runs, indent=2))
        path.write_text(json.dumps(payload, indent=2))
        plot_rss(payload["train_rss"], OUT / "peak_rss.png", f"whole CLI run, {payload['meta']['device']}")
        return
    payload = {"meta": meta(), "results": [], "train_rss": previous_rss}
    print(
        f"device {payload['meta']['device']}, torch threads {args.torch_threads}, "
        f"XLA_FLAGS='{payload['meta']['XLA_FLAGS']}'",
        flush=True,
    )
    for n in ns:
        for k in ks:
            for name in args.tasks:
                t0 = time.perf_counter()
                r = bench_config(name, n, k, repeats, args.paths, args.objective)
                payload["results"].append(r)
                print(table([r]), f"\n({time.perf_counter() - t0:.0f} s)", flush=True)
                (OUT / f"epoch_time{suffix}.json").write_text(json.dumps(payload, indent=2))
    if not args.quick and not args.no_rss and args.objective == "notebook":
        runs = [train_run_rss(10**7, 200, prior) for prior in args.tasks]
        payload["train_rss"] = _merge_rss(previous_rss, runs)  # keeps the --rss-only runs at other N
        print("CLI run at 1e7 samples:", runs, flush=True)
    (OUT / f"epoch_time{suffix}.json").write_text(json.dumps(payload, indent=2))
    plot(payload["results"], OUT / f"epoch_time{suffix}.png", f"ms per epoch ({payload['meta']['device']})")
    print("\n" + table(payload["results"]))
    print(f"wrote {OUT / f'epoch_time{suffix}.json'} and .png")


if __name__ == "__main__":
    main()
