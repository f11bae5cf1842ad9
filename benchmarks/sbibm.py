"""mdnjax on the sbibm benchmark: C2ST per task × simulation budget × observation, beside the
published NPE figures (Lueckmann et al. 2021, a neural spline flow; mean over observations 1–10).

One amortized network per task and budget (no per-observation retraining), default settings,
seed 0; 10,000 draws at each observation against sbibm's 10,000 reference draws, scored by
``mdnjax.c2st`` (sbibm's C2ST). The sbibm data files come from an installed sbibm or the wheel
named by ``MDNJAX_SBIBM``. Results are written after every observation, and a run skips what
its JSON already holds, so a long grid can run in the background and be resumed.

    python benchmarks/sbibm.py --quick                     # two tasks at 10^3, two observations
    python benchmarks/sbibm.py --budgets 100000            # every task at 10^5
    python benchmarks/sbibm.py --figure-only               # redraw the figure from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import jax
import numpy as np

import mdnjax
from mdnjax import tasks, xla
from mdnjax.c2st import c2st
from mdnjax.tasks import sbibm

RESULTS = Path(__file__).parent / "results"
PUBLISHED_NPE = {  # sbibm paper, NPE (NSF), mean C2ST over observations 1–10
    "two_moons": {1000: 0.725, 10000: 0.606, 100000: 0.542},
    "slcp": {1000: 0.975, 10000: 0.901, 100000: 0.831},
    "slcp_distractors": {1000: 0.982, 10000: 0.970, 100000: 0.863},
    "gaussian_linear": {1000: 0.694, 10000: 0.552, 100000: 0.506},
    "gaussian_linear_uniform": {1000: 0.696, 10000: 0.553, 100000: 0.509},
    "gaussian_mixture": {1000: 0.716, 10000: 0.615, 100000: 0.548},
    "bernoulli_glm": {1000: 0.863, 10000: 0.678, 100000: 0.559},
    "bernoulli_glm_raw": {1000: 0.900, 10000: 0.765, 100000: 0.607},
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_one(name: str, budget: int, i: int, data: dict, path: Path, cache: dict, settings: dict | None = None) -> None:
    """Trains (once per task and budget, default settings, seed 0 unless given) and scores observation i."""
    key = f"{name}/{budget}"
    entry = data["runs"].get(key)
    task = tasks.from_name(name)
    if entry is not None and str(i) in entry["c2st"]:
        return
    if key not in cache:  # trained again when resumed: the same seed gives the same posterior
        t0, c0 = time.perf_counter(), time.process_time()
        result = mdnjax.fit(task, mdnjax.Config(samples=budget, **(settings or {})))
        cache[key] = result.posterior
        if entry is None:
            entry = {
                "train_wall_s": time.perf_counter() - t0,
                "train_cpu_s": time.process_time() - c0,
                "compile_s": result.timings.get("compile_s"),
                "passes": int(result.state.epoch),
                "best_pass": result.best_epoch,
                "best_validation_nll": result.report.get("best_validation"),
                "layout": result.config.layout,
                "settings": {k: str(v) for k, v in result.config.to_dict().items()},
                "c2st": {},
            }
            data["runs"][key] = entry
            _save(path, data)
            print(f"{key}: trained in {entry['train_wall_s']:.1f} s ({entry['passes']} passes)", flush=True)
    post = cache[key]
    y_o, ref = sbibm.observation(task, i), sbibm.reference(task, i)
    draws = np.asarray(post.sample(jax.random.key(1000 + i), y_o, len(ref)), np.float64)
    t0 = time.perf_counter()
    entry["c2st"][str(i)] = c2st(ref, draws)
    entry.setdefault("c2st_s", {})[str(i)] = time.perf_counter() - t0
    entry["mean_c2st"] = float(np.mean(list(entry["c2st"].values())))
    _save(path, data)
    if i == 1 and len(task.support) <= 5:  # what the score means: q against the reference, drawn
        from mdnjax import plots

        plots.pair_plot(
            post,
            task,
            y_o,
            path.parent / f"sbibm_{name}_{budget}_obs1.png",
            exact_draws=ref,
            title=f"{name}, {budget:,} simulations, observation 1: C2ST {entry['c2st']['1']:.3f}",
        )
    print(f"{key} observation {i}: C2ST {entry['c2st'][str(i)]:.3f}", flush=True)


def figure(data: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    names = [n for n in PUBLISHED_NPE if any(k.startswith(n + "/") for k in data["runs"])]
    if not names:
        return
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        pub = PUBLISHED_NPE[name]
        ax.plot(list(pub), list(pub.values()), "s--", color="grey", label="NPE (published)")
        runs = sorted((int(k.split("/")[1]), v) for k, v in data["runs"].items() if k.startswith(name + "/"))
        xs = [b for b, v in runs if v.get("c2st")]
        for b, v in runs:
            vals = list(v.get("c2st", {}).values())
            ax.scatter([b] * len(vals), vals, s=8, color="C0", alpha=0.4)
            if 0 < len(vals) < 10:  # a partial run: say how many observations its mean covers
                at = (b, v["mean_c2st"])
                ax.annotate(f"{len(vals)} obs", at, fontsize=7, xytext=(-30, -12), textcoords="offset points")
        ax.plot(xs, [v["mean_c2st"] for b, v in runs if v.get("c2st")], "o-", color="C0", label="mdnjax (mean)")
        ax.axhline(0.5, color="k", lw=0.5)
        ax.set(xscale="log", ylim=(0.45, 1.02), title=name, xlabel="simulations", ylabel="C2ST")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"sbibm C2ST (0.5 is perfect): mdnjax MDN vs published NPE — {data.get('device', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def table(data: dict) -> str:
    """The markdown table of the results, beside the published NPE and sbi's MDN (sbi_mdn.json)."""
    sbi_path = RESULTS / "sbi_mdn.json"
    sbi = json.loads(sbi_path.read_text())["runs"] if sbi_path.is_file() else {}
    lines = [
        "| task | simulations | mdnjax C2ST (obs) | published NPE | sbi MDN C2ST (same obs) | mdnjax train wall s "
        "(CPU s) | sbi MDN train CPU s (1 thread) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, v in sorted(data["runs"].items(), key=lambda kv: (int(kv[0].split("/")[1]), kv[0])):
        name, budget = key.split("/")
        if not v.get("c2st"):
            continue
        pub = PUBLISHED_NPE.get(name, {}).get(int(budget))
        s = sbi.get(key, {})
        shared = [i for i in v["c2st"] if i in s.get("c2st", {})]
        sbi_text = "–"
        if shared:
            ours = np.mean([v["c2st"][i] for i in shared])
            theirs = np.mean([s["c2st"][i] for i in shared])
            sbi_text = f"{theirs:.3f} (mdnjax {ours:.3f} on obs {', '.join(shared)})"
        obs = ", ".join(sorted(v["c2st"], key=int))
        sbi_cpu = f"{s['train_cpu_s']:.0f}" if s else "–"
        lines.append(
            f"| {name} | {int(budget):,} | **{v['mean_c2st']:.3f}** ({obs}) | {pub if pub else '–'} | {sbi_text} "
            f"| {v['train_wall_s']:.0f} ({v['train_cpu_s']:.0f}) | {sbi_cpu} |"
        )
    return "\n".join(lines)


def _embedding(text: str):
    """An embedding from a kind's name or a JSON object of its fields (``mdnjax.embeddings``)."""
    from mdnjax.embeddings import Embedding

    try:
        return Embedding.of(json.loads(text) if text.lstrip().startswith("{") else text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(PUBLISHED_NPE))
    p.add_argument("--budgets", nargs="+", type=int, default=[1000, 10000, 100000])
    p.add_argument("--observations", nargs="+", type=int, default=list(range(1, 11)))
    p.add_argument("--quick", action="store_true", help="two_moons and gaussian_linear at 10^3, observations 1–2")
    p.add_argument("--out", help="the results' JSON (default results/sbibm.json; --quick: results/sbibm_quick.json)")
    p.add_argument("--figure-only", action="store_true")
    p.add_argument("--table", action="store_true", help="print the results as a markdown table")
    p.add_argument("--components", type=int, help="K instead of the default (write to another --out)")
    p.add_argument("--hidden", type=int, nargs="+", help="backbone widths instead of the default (another --out)")
    p.add_argument("--batch-size", type=int, help="per-sample batch instead of the default (another --out)")
    p.add_argument("--epochs", type=int, help="at most this many passes (another --out)")
    p.add_argument("--lr", type=float, help="Adam's step instead of the default (another --out)")
    p.add_argument(
        "--linear-skip",
        action=argparse.BooleanOptionalAction,
        help="the linear skip from y to the means on or off instead of the default (another --out)",
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of the simulations and training (another --out)")
    p.add_argument(
        "--embedding",
        type=_embedding,
        help='embedding network for y: a kind (mlp, set, conv) or JSON, e.g. \'{"kind": "set", "features": 2}\' '
        "(another --out)",
    )
    p.add_argument("--with", dest="others", nargs="+", default=[], help="more result files for --table/--figure-only")
    args = p.parse_args(argv)
    xla.configure_cpu()
    if args.quick:
        args.tasks, args.budgets, args.observations = ["two_moons", "gaussian_linear"], [1000], [1, 2]
    path = Path(args.out or RESULTS / ("sbibm_quick.json" if args.quick else "sbibm.json"))
    data = _load(path)
    for other in args.others:  # results of runs written to other files (run side by side)
        data["runs"].update(_load(Path(other))["runs"])
    data["device"] = (
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    data["published_npe"] = PUBLISHED_NPE
    if not (args.figure_only or args.table):
        cache: dict = {}
        for i in args.observations:  # every task's observation 1 first: a partial grid covers every task
            for budget in args.budgets:
                for name in args.tasks:
                    settings = {
                        k: v
                        for k, v in (
                            ("components", args.components),
                            ("hidden", args.hidden),
                            ("batch_size", args.batch_size),
                            ("epochs", args.epochs),
                            ("lr", args.lr),
                            ("linear_skip", args.linear_skip),
                            ("embedding", args.embedding),
                            ("seed", args.seed),
                        )
                        if v is not None
                    }
                    run_one(name, budget, i, data, path, cache, settings)
                    figure(data, path.with_suffix(".png"))
        data["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _save(path, data)
    figure(data, path.with_suffix(".png"))
    if args.table:
        print(table(data))
        return 0
    for key, v in sorted(data["runs"].items()):
        name, budget = key.split("/")
        pub = PUBLISHED_NPE.get(name, {}).get(int(budget))
        print(
            f"{key:32s} C2ST {v.get('mean_c2st', float('nan')):.3f} over {len(v.get('c2st', {}))} obs "
            f"(published NPE {pub}) train {v['train_wall_s']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
