"""Figures saved as PNG files.

Built on ``matplotlib.figure.Figure`` directly (no ``pyplot``): nothing here selects or changes
the user's matplotlib backend, and no figure is left open.

Example:
    >>> import tempfile, numpy as np, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> loss_curve(np.linspace(3.0, -1.0, 200), path)
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mdnjax import metrics
from mdnjax.posterior import RareObservationWarning


def _kl_text(kl: float) -> str:
    return f"{kl:.2g}" if kl >= 1e-4 else f"{kl:.1e}"


def posterior_grid(posterior, task, ys, path, title: str | None = None, references: dict | None = None) -> None:
    """Exact (or reference) vs MDN density at each y, three panels per row."""
    references = references or {}
    ys = [int(y) for y in ys]
    cols = min(3, len(ys))
    rows = math.ceil(len(ys) / cols)
    fig = Figure(figsize=(6 * cols, 4.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        logits, means, log_vars = (np.asarray(a) for a in posterior.mixture(np.asarray(ys)))
    bound = task.support[0]
    for i, (ax, y) in enumerate(zip(axes.flat, ys)):
        exact = references.get(y) or task.exact_posterior(y)
        lo, hi = exact.ppf(1e-5), exact.isf(1e-5)
        pad = 0.15 * (hi - lo)
        grid = np.linspace(max(lo - pad, bound.low + 1e-6), min(hi + pad, bound.high - 1e-6), 400)
        label = task.reference_label if y not in references else "reference (quadrature)"
        ax.plot(grid, exact.pdf(grid), lw=2, label=label)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RareObservationWarning)
            q = np.exp(np.asarray(posterior.log_prob(grid, y), np.float64))
        ax.plot(grid, q, "--", lw=2, label=f"MDN, K={logits.shape[-1]} ({posterior.spec.space})")
        kl = metrics.compare(task, y, logits[i], means[i], log_vars[i], posterior.spec.space, references.get(y))["kl"]
        n = posterior.training_samples(y)
        ax.set(title=f"y = {y}   KL = {_kl_text(kl)}   ({n:,} samples)", xlabel="θ", ylabel="density")
        ax.legend()
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(ys) :]:
        fig.delaxes(ax)
    fig.suptitle(title or f"{task.name}: {task.reference_label} vs MDN", fontsize=15)
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.savefig(path, dpi=90)


def loss_curve(losses, path, title: str = "training loss") -> None:
    """The loss per epoch (left) and its distance above the final loss on a log scale (right)."""
    losses = np.asarray(losses, np.float64)
    epochs = np.arange(losses.size)
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, losses, lw=1.2)
    finite = losses[np.isfinite(losses)]
    if finite.size > 10:  # the first epochs dwarf the rest: zoom on what follows them
        tail = finite[finite.size // 20 :]
        span = tail.max() - tail.min()
        left.set_ylim(tail.min() - 0.05 * span - 1e-12, tail.max() + 0.05 * span + 1e-12)
    left.set(xlabel="epoch", ylabel="loss", title=title)
    left.ticklabel_format(axis="y", useOffset=False, style="plain")
    left.grid(True, alpha=0.3)
    if finite.size:
        gap = losses - finite.min()
        right.semilogy(epochs, np.where(gap > 0, gap, np.nan), lw=1.2)
    right.set(xlabel="epoch", ylabel="loss − lowest loss", title="progress (log scale)")
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def kl_by_y(rows, path, plotted=(), title: str = "KL(exact ‖ MDN) per observation") -> None:
    """KL against y (log scale) for every evaluated y; plotted y marked."""
    ys = np.array([r["y"] for r in rows])
    kl = np.array([max(r["kl"], 1e-8) for r in rows])
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.semilogy(ys, kl, ".-", lw=1, label="every y with >= 100 samples")
    marked = [r for r in rows if r["y"] in set(plotted)]
    if marked:
        ax.semilogy(
            [r["y"] for r in marked], [max(r["kl"], 1e-8) for r in marked], "o", ms=8, mfc="none", label="plotted y"
        )
    ax.set(xlabel="y", ylabel="KL (nats)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def sbc_ranks(result: dict, path, title: str, bins: int = 20) -> None:
    """Histogram of SBC ranks in ``bins`` groups, x in rank units, with the uniform band."""
    counts = np.asarray(result["rank_counts"])
    L = result["samples_per_draw"]
    edges = np.linspace(-0.5, L + 0.5, bins + 1)
    grouped = np.histogram(np.repeat(np.arange(L + 1), counts), bins=edges)[0]
    expected = counts.sum() / bins
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.bar(edges[:-1], grouped, width=np.diff(edges) * 0.9, align="edge", label="MDN")
    band = 2 * np.sqrt(expected * (1 - 1 / bins))
    ax.axhspan(expected - band, expected + band, color="gray", alpha=0.3, label="uniform ± 2 sd")
    ax.set_xlim(-0.5, L + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=f"rank of θ* among {L} posterior draws", ylabel="count", title=f"{title}: SBC ranks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def coverage(result: dict, path, title: str) -> None:
    """Empirical coverage of central credible intervals against their level."""
    levels = np.asarray(result["levels"])
    se = np.asarray(result["coverage_standard_error"])
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.fill_between(levels, levels - 2 * se, levels + 2 * se, color="gray", alpha=0.3, label="nominal ± 2 se")
    ax.plot(levels, result["coverage"], "o-", label="MDN")
    if "coverage_exact_posterior" in result:
        ax.plot(levels, result["coverage_exact_posterior"], "x--", label="exact posterior")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="credible level α", ylabel="empirical coverage", title=f"{title}: expected coverage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
