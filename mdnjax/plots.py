"""Figures saved as PNG files.

Built on ``matplotlib.figure.Figure`` directly (no ``pyplot``): nothing here selects or changes
the user's matplotlib backend, and no figure is left open. Each function saves its PNG and returns
the ``Figure``, to be inspected or saved again in another format.

Example:
    >>> import tempfile, numpy as np, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> fig = loss_curve(np.linspace(3.0, -1.0, 200), path)
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

import math
import warnings

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mdnjax import metrics
from mdnjax.posterior import RareObservationWarning


def _kl_text(kl: float) -> str:
    return f"{kl:.2g}" if kl >= 1e-4 else f"{kl:.1e}"


def posterior_grid(posterior, task, ys, path, title: str | None = None, references: dict | None = None) -> Figure:
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
    truth = task.reference_label if task.has_exact_posterior else "quadrature reference"
    fig.suptitle(title or f"{task.name}: {truth} vs MDN", fontsize=15)
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.savefig(path, dpi=90)
    return fig


def loss_curve(losses, path, title: str = "training loss") -> Figure:
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
    return fig


def kl_by_y(rows, path, plotted=(), title: str = "KL(reference ‖ MDN) per observation", plotted_rows=None) -> Figure:
    """KL against y (log scale) for every evaluated y; each plotted y marked, also one with fewer
    than 100 samples (``plotted_rows``: the metrics at the plotted y, as ``posterior.png`` shows them)."""
    ys = np.array([r["y"] for r in rows])
    kl = np.array([max(r["kl"], 1e-8) for r in rows])
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.semilogy(ys, kl, ".-", lw=1, label="every y with >= 100 samples")
    marked = plotted_rows if plotted_rows is not None else [r for r in rows if r["y"] in set(plotted)]
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
    return fig


def sbc_ranks(result: dict, path, title: str, bins: int = 20) -> Figure:
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
    return fig


def coverage(result: dict, path, title: str) -> Figure:
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
    ax.set(xlabel="credible level (nominal coverage)", ylabel="empirical coverage", title=f"{title}: expected coverage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


HPD = (0.5, 0.9, 0.99)  # the highest-density regions the pair plots draw


def _hpd_labels(density: np.ndarray, mass: np.ndarray, levels=HPD) -> dict[float, str]:
    """{density threshold: "90%"}: the threshold whose upper set holds each share of the mass."""
    order = np.argsort(density.reshape(-1))[::-1]
    cum = np.cumsum(mass.reshape(-1)[order])
    cum /= cum[-1]
    out: dict[float, str] = {}
    for q in sorted(levels, reverse=True):  # a threshold two shares reach is named by the smaller
        out[float(density.reshape(-1)[order][min(np.searchsorted(cum, q), cum.size - 1)])] = f"{100 * q:g}%"
    if len(out) == 1:
        ((t, name),) = out.items()
        out[t * 1.0001] = name
    return out


def _hpd_contour(ax, x, y, density, mass, **style) -> None:
    """The 50/90/99% highest-density contours, each labelled with its mass."""
    labels = _hpd_labels(density, mass)
    cs = ax.contour(x, y, density, levels=sorted(labels), **style)
    ax.clabel(cs, fmt={lv: labels[min(labels, key=lambda t: abs(t - lv))] for lv in cs.levels}, fontsize=7)


def pair_plot(posterior, task, y, path, reference=None, exact_draws=None, seed: int = 0, title=None) -> Figure:
    """q(θ | y) against the truth at one y: marginal densities on the diagonal, 2-D contours (50, 90
    and 99% highest-density regions) below it. The truth is the grid reference (D = 2) and/or exact
    posterior draws (``exact_draws`` (n, D) in θ units, e.g. the held-out draws at y)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        q = np.asarray(posterior.sample(jax.random.key(seed), y, 50_000), np.float64).reshape(50_000, -1)
    dim = q.shape[1]
    if exact_draws is not None:
        exact_draws = np.asarray(exact_draws, np.float64).reshape(len(exact_draws), dim)
    names = list(getattr(task, "parameter_names", None) or [f"θ{d}" for d in range(dim)])
    fig = Figure(figsize=(3.2 * dim + 1, 3.2 * dim))
    axes = fig.subplots(dim, dim, squeeze=False)
    lo, hi = np.quantile(q, 0.001, axis=0), np.quantile(q, 0.999, axis=0)
    if exact_draws is not None and len(exact_draws):
        lo = np.minimum(lo, np.quantile(exact_draws, 0.001, axis=0))
        hi = np.maximum(hi, np.quantile(exact_draws, 0.999, axis=0))
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    for i in range(dim):
        for j in range(dim):
            ax = axes[i, j]
            if j > i:
                fig.delaxes(ax)
                continue
            if i == j:
                bins = np.linspace(lo[i], hi[i], 80)
                grid = np.linspace(lo[i], hi[i], 400)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RareObservationWarning)
                    cdf_q = np.asarray(posterior.marginal_cdf(grid, y, i), np.float64)
                mid = 0.5 * (grid[1:] + grid[:-1])
                ax.plot(mid, np.diff(cdf_q) / np.diff(grid), lw=2, ls="--", label="MDN", zorder=3)
                if reference is not None:
                    edges, cdf = reference.marginal(i)
                    step, mass = np.diff(edges), np.diff(cdf)
                    ok = step > 0  # cells squeezed onto a bound of the support carry no width
                    mid = 0.5 * (edges[1:] + edges[:-1])
                    ax.plot(mid[ok], mass[ok] / step[ok], lw=2, label="grid reference")
                if exact_draws is not None and len(exact_draws):
                    ax.hist(exact_draws[:, i], bins=bins, density=True, alpha=0.35, label="exact draws")
                ax.set(xlim=(lo[i], hi[i]), yticks=[])
                if i == 0:
                    ax.legend(fontsize=8)
            else:
                if exact_draws is not None and len(exact_draws):
                    ax.plot(exact_draws[:2000, j], exact_draws[:2000, i], ".", ms=1.5, color="0.6", alpha=0.6)
                if reference is not None and dim == 2:
                    t = reference.theta
                    dens = np.exp(reference.log_pu)  # contours of p(u) drawn at θ(u): the same regions
                    _hpd_contour(ax, t[..., j], t[..., i], dens, reference.p, colors="C1")
                if dim == 2:  # q's own density on a θ grid
                    xc, yc = np.linspace(lo[j], hi[j], 160), np.linspace(lo[i], hi[i], 160)
                    xx, yy = np.meshgrid(xc, yc)  # (160, 160): x is θ_j, y is θ_i
                    pts = np.zeros(xx.shape + (2,))
                    pts[..., j], pts[..., i] = xx, yy
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RareObservationWarning)
                        h = np.exp(np.asarray(posterior.log_prob(pts, y), np.float64))
                else:  # a smoothed histogram of q's draws
                    h, ex, ey = np.histogram2d(q[:, j], q[:, i], bins=60, range=[[lo[j], hi[j]], [lo[i], hi[i]]])
                    h = _smooth(h).T
                    xc, yc = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
                _hpd_contour(ax, xc, yc, h, h, colors="C0", linestyles="--")
                ax.set(xlim=(lo[j], hi[j]), ylim=(lo[i], hi[i]))
            if i == dim - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
    shown = [int(v) for v in np.ravel(y)]
    fig.suptitle(title or f"{task.name}: y = {shown}  (MDN dashed)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    return fig


def _smooth(h: np.ndarray) -> np.ndarray:
    """A 3 × 3 binomial smoothing of a 2-D histogram (contours of draws without their noise)."""
    k = np.array([1.0, 2.0, 1.0]) / 4.0
    h = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, h)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, h)


def coverage_per_dim(levels, coverage, se, names, path, title: str) -> Figure:
    """Empirical coverage of central credible intervals of each coordinate against their level."""
    levels, coverage, se = np.asarray(levels), np.asarray(coverage), np.asarray(se)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.fill_between(levels, levels - 2 * se, levels + 2 * se, color="gray", alpha=0.3, label="nominal ± 2 se")
    for d, name in enumerate(names):
        ax.plot(levels, coverage[:, d], "o-", ms=3, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        xlabel="credible level (nominal coverage)",
        ylabel="empirical coverage",
        title=f"{title}: coverage per parameter",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


def rounds_figure(records, path, names, title: str = "sequential rounds", exact=None) -> Figure:
    """Sequential rounds: q(θ | y_o)'s mean and 90% interval per parameter after each round (left,
    with the exact posterior's as lines when ``exact`` gives them: {"mean", "q05", "q95"} lists),
    and each round's acceptance from the truncated prior (right)."""
    rounds = [r["round"] for r in records]
    dim = len(names)
    fig = Figure(figsize=(11, 3.2 * max(1, min(dim, 4))))
    axes = fig.subplots(max(1, min(dim, 4)), 2, squeeze=False)
    for d in range(min(dim, 4)):
        ax = axes[d, 0]
        mean = [r["at_observed"]["mean"][d] for r in records]
        lo = [r["at_observed"]["q05"][d] for r in records]
        hi = [r["at_observed"]["q95"][d] for r in records]
        ax.fill_between(rounds, lo, hi, alpha=0.25, label="90% interval")
        ax.plot(rounds, mean, "o-", label="mean")
        if exact is not None:
            ax.axhline(exact["mean"][d], color="k", lw=1, label="exact mean")
            for q in ("q05", "q95"):
                ax.axhline(exact[q][d], color="k", lw=0.8, ls=":", label="exact 90%" if q == "q05" else None)
        ax.set(xlabel="round", ylabel=names[d], title=f"{title}: q({names[d]} | y_o)" if d == 0 else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if d == 0:
            ax.legend(fontsize=8)
    ax = axes[0, 1]
    acc = [r.get("acceptance", 1.0) for r in records]
    ax.semilogy(rounds, acc, "s-")
    for r, a in zip(records, acc):
        ax.annotate(r["method"], (r["round"], a), fontsize=7, rotation=30)
    ax.set(xlabel="round", ylabel="acceptance", title="draws kept of those proposed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    for d in range(1, min(dim, 4)):
        axes[d, 1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig
