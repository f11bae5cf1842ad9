"""The linear skip from y to the mixture's means (``Config.linear_skip``) against none: the best
validation NLL of the per-sample layout on sbibm tasks at 10^5 simulations, seeds 0 and 1,
everything else at its default.

The validation NLL estimates E[−log q(θ | y)] over the joint up to a constant of the task, so a
difference between two settings on the same validation pairs (same task, budget and seed) is a
difference in the expected KL(p ‖ q). Results: ``results/linear_skip.json`` and
``results/linear_skip.png`` (the difference, skip minus none, per task and seed: below zero the
skip is better). Runs already in the JSON are kept, so an interrupted run resumes.

    python benchmarks/linear_skip.py                 # about an hour here
    python benchmarks/linear_skip.py --figure-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import validation_nll

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TASKS = ("gaussian_linear", "gaussian_linear_uniform", "bernoulli_glm", "two_moons", "slcp", "gaussian_mixture")
SETTINGS = {"none": False, "skip": True}  # Config.linear_skip


def key(name: str, budget: int, setting: str, seed: int) -> str:
    return f"{name}/{budget}/{setting}/seed {seed}"


def differences(data: dict, name: str, budget: int, seed: int) -> float | None:
    on, off = (data["runs"].get(key(name, budget, s, seed)) for s in ("skip", "none"))
    return on["best_validation_nll"] - off["best_validation_nll"] if on and off else None


def figure(data: dict, budget: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, name in enumerate(TASKS):
        for seed, marker in ((0, "o"), (1, "s"), (2, "^")):
            d = differences(data, name, budget, seed)
            if d is not None:
                ax.plot([j], [d], marker, color=f"C{j}", ms=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(TASKS)), TASKS, rotation=20, fontsize=8)
    ax.set_ylabel("best validation NLL: skip − none (nats)")
    ax.set_title(
        f"Linear skip from y to the means, {budget:,} simulations (circles: seed 0, squares: 1): below 0 is better"
    )
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--out", default=str(RESULTS / "linear_skip.json"))
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.out)
    data = validation_nll.load(path)
    if not args.figure_only:
        validation_nll.start(data)
        for seed in args.seeds:
            for name in args.tasks:
                for setting, skip in SETTINGS.items():
                    k = key(name, args.budget, setting, seed)
                    validation_nll.measure(data, path, k, name, args.budget, seed, linear_skip=skip)
    figure(data, args.budget, path.with_suffix(".png"))
    for name in args.tasks:
        row = []
        for seed in args.seeds:
            on, off = (data["runs"].get(key(name, args.budget, s, seed)) for s in ("skip", "none"))
            if on and off:
                row.append(f"seed {seed}: {off['best_validation_nll']:.3f} -> {on['best_validation_nll']:.3f}")
        print(f"{name:24s} " + "   ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
