"""Figures saved as PNG files (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mdnjax import metrics  # noqa: E402


def posterior_grid(posterior, ys, path, title: str | None = None) -> None:
    """The notebook's grid: exact vs MDN density at each y, three panels per row."""
    task = posterior.task
    ys = [int(y) for y in ys]
    cols = min(3, len(ys))
    rows = math.ceil(len(ys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    logits, means, log_vars = (np.asarray(a) for a in posterior.mixture(np.asarray(ys)))
    family = {"beta": "Beta", "gamma": "Gamma"}.get(task.name, "Beta-mixture")
    for i, (ax, y) in enumerate(zip(axes.flat, ys)):
        exact = task.posterior(y)
        lo, hi = exact.ppf(1e-5), exact.isf(1e-5)
        pad = 0.15 * (hi - lo)
        grid = np.linspace(max(lo - pad, task.support[0] + 1e-6), min(hi + pad, task.support[1] - 1e-6), 400)
        ax.plot(grid, exact.pdf(grid), lw=2, label=f"exact {family} posterior")
        q = np.exp(np.asarray(posterior.log_prob(grid, y), np.float64))
        ax.plot(grid, q, "--", lw=2, label=f"MDN, K={logits.shape[-1]} ({posterior.config.space})")
        kl = metrics.compare(task, y, logits[i], means[i], log_vars[i], posterior.config.space)["kl"]
        ax.set(title=f"y = {y}   KL = {kl:.4f}", xlabel="θ", ylabel="density")
        ax.legend()
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(ys) :]:
        fig.delaxes(ax)
    fig.suptitle(title or f"Posterior comparison: exact {family} vs MDN", fontsize=15)
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def loss_curve(losses, path, title: str = "training loss") -> None:
    """Loss per epoch (symlog scale: the loss crosses zero)."""
    losses = np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(losses.size), losses, lw=1.5)
    ax.set_yscale("symlog", linthresh=10.0)
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def kl_by_y(rows, path, plotted=(), title: str = "KL(exact ‖ MDN) per observation") -> None:
    """KL against y (log scale) for every evaluated y; plotted y marked."""
    ys = np.array([r["y"] for r in rows])
    kl = np.array([max(r["kl"], 1e-8) for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.semilogy(ys, kl, ".-", lw=1, label="every y with >= 100 samples")
    marked = [r for r in rows if r["y"] in set(plotted)]
    if marked:
        ax.semilogy(
            [r["y"] for r in marked], [max(r["kl"], 1e-8) for r in marked], "o", ms=8, mfc="none", label="plotted y"
        )
    ax.set(xlabel="y", ylabel="KL (nats)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
