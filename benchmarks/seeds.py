"""Two settings of ``benchmarks/sbibm.py`` side by side over seeds: the mean C2ST over observations
1–10 per task, seed and setting, read from the result files those runs wrote (no training here),
beside the published NPE figure. A seed draws the simulations, the validation split and the
initialisation, so the two settings on one seed share their simulations: compare them pair by pair.

    python benchmarks/seeds.py --budget 100000 --out benchmarks/results/skip_default.json \\
        --runs "no skip:0:benchmarks/results/sbibm.json" "skip:0:benchmarks/results/sbibm_skip_1e5.json" ...
    python benchmarks/seeds.py --figure-only --out benchmarks/results/skip_default.json

Each ``--runs`` entry is ``SETTING:SEED:FILE``; a task whose file lacks some of observations 1–10
counts only where it has all ten. Writes the JSON and a figure beside it (``.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OBSERVATIONS = [str(i) for i in range(1, 11)]


def collect(entries: list[str], budget: int, tasks: list[str] | None = None) -> dict:
    """{task: {setting: {seed: {"c2st": mean, "passes": n, "train_wall_s": s}}}} from the files."""
    table: dict = {}
    published: dict = {}
    for entry in entries:
        setting, seed, path = entry.split(":", 2)
        data = json.loads(Path(path).read_text())
        published.update({k: v.get(str(budget), v.get(budget)) for k, v in data.get("published_npe", {}).items()})
        for key, run in data["runs"].items():
            name, b = key.split("/")
            if int(b) != budget or (tasks and name not in tasks):
                continue
            if not all(i in run.get("c2st", {}) for i in OBSERVATIONS):
                continue
            table.setdefault(name, {}).setdefault(setting, {})[seed] = {
                "c2st": float(np.mean([run["c2st"][i] for i in OBSERVATIONS])),
                "passes": run.get("passes"),
                "train_wall_s": run.get("train_wall_s"),
                "file": str(path),
            }
    return {"budget": budget, "tasks": table, "published_npe": {k: v for k, v in published.items() if v}}


def figure(data: dict, path: Path) -> None:
    tasks = sorted(data["tasks"])
    settings = sorted({s for t in tasks for s in data["tasks"][t]})
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.3 * len(tasks), 3.6), squeeze=False)
    for ax, name in zip(axes[0], tasks, strict=True):
        runs = data["tasks"][name]
        seeds = sorted({s for setting in runs.values() for s in setting})
        for j, seed in enumerate(seeds):
            ys = [runs.get(s, {}).get(seed, {}).get("c2st", np.nan) for s in settings]
            ax.plot(range(len(settings)), ys, "o-", color=f"C{j}", label=f"seed {seed}")
        pub = data["published_npe"].get(name)
        if pub:
            ax.axhline(pub, color="k", ls="--", lw=0.8, label="published NPE")
        ax.set_xticks(range(len(settings)), settings, fontsize=8)
        ax.set_xlim(-0.4, len(settings) - 0.6)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    axes[0][0].set_ylabel(f"mean C2ST, observations 1–10 ({data['budget']:,} simulations)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=[], metavar="SETTING:SEED:FILE")
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: every task the files hold)")
    p.add_argument("--out", required=True)
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.figure_only:
        data = json.loads(out.read_text())
    else:
        data = collect(args.runs, args.budget, args.tasks)
        out.write_text(json.dumps(data, indent=1))
    figure(data, out.with_suffix(".png"))
    for name, runs in sorted(data["tasks"].items()):
        cells = "  ".join(
            f"{s}: " + " ".join(f"{runs[s][seed]['c2st']:.3f}" for seed in sorted(runs[s])) for s in sorted(runs)
        )
        print(f"{name:24s} {cells}  (published {data['published_npe'].get(name, float('nan')):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
