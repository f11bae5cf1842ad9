"""A bimodal posterior: K = 8 Gaussians against K = 1 on the beta-mixture task.

    python benchmarks/multimodal.py [--samples 1e6]

Prior 0.5·Beta(10, 30) + 0.5·Beta(30, 10), y ~ Binomial(100, θ): for y near 50 the exact posterior
has two clear modes. Both MDNs train on the same simulations with the default recipe; the script
prints the KL at the plotted y and writes ``results/multimodal.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mdnjax import xla

xla.configure_cpu()

import numpy as np  # noqa: E402

import mdnjax  # noqa: E402
from mdnjax import Config, layout, metrics, tasks  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=float, default=1e6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    task = tasks.BetaMixtureBinomial()
    base = Config(samples=int(args.samples), seed=args.seed)
    b, _ = layout.build_layout(task, base.resolve(task))
    posts, rows = {}, {}
    for k in (8, 1):
        cfg = Config(**{**base.__dict__, "components": k}).resolve(task)
        t0 = time.perf_counter()
        res = mdnjax.fit(task, cfg, buckets=b)
        rows[k] = {
            "kl": [r["kl"] for r in metrics.evaluate(res.posterior, task, task.plot_y)],
            "seconds": time.perf_counter() - t0,
        }
        rows[k]["kl_mean"] = float(np.mean(rows[k]["kl"]))
        posts[k] = res.posterior
        print(
            f"K={k}: KL at y={list(task.plot_y)}: {np.round(rows[k]['kl'], 4).tolist()}  "
            f"mean {rows[k]['kl_mean']:.4f}  ({rows[k]['seconds']:.0f} s)",
            flush=True,
        )
    ratio = rows[1]["kl_mean"] / rows[8]["kl_mean"]
    print(f"K=1 / K=8 mean KL: {ratio:.1f}x")
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": json.loads(cfg.to_json()),
        "task": task.describe(),
        "plot_y": list(task.plot_y),
        "K8": rows[8],
        "K1": rows[1],
        "ratio_K1_over_K8": ratio,
    }
    (OUT / "multimodal.json").write_text(json.dumps(payload, indent=2))
    plot(posts, task, task.plot_y, OUT / "multimodal.png")
    print(f"wrote {OUT / 'multimodal.json'} and .png")


def plot(posts, task, ys, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(ys), 3.6))
    axes = fig.subplots(1, len(ys), squeeze=False)
    grid = np.linspace(0.2, 0.8, 600)
    for ax, y in zip(axes.flat, ys):
        ax.plot(grid, task.exact_posterior(y).pdf(grid), lw=2.5, color="k", label="exact")
        for k, style in ((8, "--"), (1, ":")):
            q = np.exp(np.asarray(posts[k].log_prob(grid, y), np.float64))
            ax.plot(grid, q, style, lw=2, label=f"MDN K={k}")
        ax.set(title=f"y = {y}", xlabel="θ")
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("Bimodal posteriors (beta-mixture prior): K = 8 vs K = 1")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
