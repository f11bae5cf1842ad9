"""The parameters' moving average (``Config.ema``) against none: the best validation NLL of the
per-sample layout on sbibm tasks at 10^3, 10^4 and 10^5 simulations, seeds 0 and 1, everything
else at its default.

The validation NLL estimates E[−log q(θ | y)] over the joint up to a constant of the task, so a
difference between two settings on the same validation pairs (same task, budget and seed) is a
difference in the expected KL(p ‖ q). Results: ``results/ema.json`` and ``results/ema.png`` (the
difference, average minus none, per task, budget and seed: below zero the average is better).
Runs already in the JSON are kept, so an interrupted run resumes.

    python benchmarks/ema.py                                   # the grid (about 20 minutes here)
    python benchmarks/ema.py --figure-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import validation_nll

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TASKS = ("two_moons", "gaussian_linear", "slcp", "gaussian_mixture")
BUDGETS = (1_000, 10_000, 100_000)
SETTINGS = {"none": 0.0, "1 pass": 1.0}  # Config.ema: the average's time constant in passes


def key(name: str, budget: int, setting: str, seed: int) -> str:
    return f"{name}/{budget}/{setting}/seed {seed}"


def figure(data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for j, name in enumerate(TASKS):
        for seed, marker in ((0, "o"), (1, "s")):
            xs, ys = [], []
            for budget in BUDGETS:
                on, off = (data["runs"].get(key(name, budget, s, seed)) for s in ("1 pass", "none"))
                if on and off:
                    xs.append(budget * (1 + 0.06 * (j - 1.5)))
                    ys.append(on["best_validation_nll"] - off["best_validation_nll"])
            ax.plot(xs, ys, marker, color=f"C{j}", label=f"{name}" if seed == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("simulations (circles: seed 0, squares: seed 1)")
    ax.set_ylabel("best validation NLL: average − none (nats)")
    ax.set_title("The parameters' moving average (1 pass) against none: below 0 is better")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--out", default=str(RESULTS / "ema.json"))
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.out)
    data = validation_nll.load(path)
    if not args.figure_only:
        validation_nll.start(data)
        for budget in args.budgets:
            for name in args.tasks:
                for seed in args.seeds:
                    for setting, ema in SETTINGS.items():
                        k = key(name, budget, setting, seed)
                        validation_nll.measure(data, path, k, name, budget, seed, ema=ema)
    figure(data, path.with_suffix(".png"))
    for name in args.tasks:
        for budget in args.budgets:
            row = []
            for seed in args.seeds:
                on, off = (data["runs"].get(key(name, budget, s, seed)) for s in ("1 pass", "none"))
                if on and off:
                    row.append(f"seed {seed}: {off['best_validation_nll']:.3f} -> {on['best_validation_nll']:.3f}")
            print(f"{name:18s} {budget:>7,}  " + "   ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
