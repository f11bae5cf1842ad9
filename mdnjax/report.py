"""A run's report, one for every D: metrics against the exact (or a quadrature) posterior, the
held-out checks, the collapse check of a binned run, the printed table and the figures.

``build`` writes one payload for ``metrics.json``: a scalar θ with scalar y is compared with the
reference y by y (``posterior.png``, ``kl.png``); several parameters or vector y are checked at
each reported y against exact draws and a 2-D grid reference (``pairs.png``).

Example:
    >>> choose_plot_y(np.arange(11), np.array([1, 300, 400, 500, 600, 700, 600, 500, 400, 300, 1]))
    (1, 3, 5, 7, 9)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mdnjax import collapse, heldout, metrics, plots, reference, sources
from mdnjax import observed as observed_lib
from mdnjax.layout import index_of, layout_ratio
from mdnjax.posterior import RARE_BELOW

DENSE = 100  # y with at least this many samples enter the per-y summary


def choose_plot_y(y_values, counts, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95), min_count: int = DENSE) -> tuple:
    """Observations at quantiles of the simulated y, among those with ``min_count`` samples."""
    y_values, counts = np.asarray(y_values), np.asarray(counts)
    keep = counts >= min_count
    if not keep.any():
        keep = counts == counts.max()
    ys, cs = y_values[keep], counts[keep]
    cdf = np.cumsum(cs) / cs.sum()
    picks = [int(ys[min(np.searchsorted(cdf, q), ys.size - 1)]) for q in quantiles]
    return tuple(sorted(set(picks)))


def _plot_y_scalar(task, result, given=None) -> tuple[int, ...]:
    """The observations to report: given ones, else the task's, else chosen from the data."""
    if given:
        return tuple(int(v) for v in given)
    if task.plot_y is not None:
        return tuple(task.plot_y)
    return choose_plot_y(result.buckets.y_values, result.buckets.counts)


def references(task, result, ys) -> dict | None:
    """{y: reference posterior}: the exact one, or by quadrature from ``log_prior`` and
    ``log_likelihood`` (bracketed by each bucket's draws); None when the task has neither."""
    ys = sorted({int(y) for y in ys})
    if task.has_exact_posterior:
        return {y: task.exact_posterior(y) for y in ys}
    if task.log_prior is None or task.log_likelihood is None or not ys:
        return None
    b = result.buckets
    bound = task.support[0]
    low, high = np.asarray(b.low, np.float64), np.asarray(b.high, np.float64)
    if result.config.space == "raw":
        low, high = (bound.forward(bound.interior(v)[0]) for v in (low, high))
    at = np.searchsorted(b.y_values, ys).clip(0, max(b.num_y - 1, 0))
    known = b.y_values[at] == np.asarray(ys)
    lows = np.where(known, low[at], low.min())
    highs = np.where(known, high[at], high.max())
    return reference.grid_posteriors(task, ys, lows, highs)


def _run_summary(result) -> dict:
    """What every report says about a run: status, losses, the simulations, the layout's size."""
    b = result.buckets
    return {
        "status": "diverged" if result.diverged_at is not None else "ok",
        "diverged_at_epoch": result.diverged_at,
        "loss": [float(v) for v in result.losses],
        "final_loss": float(result.losses[-1]) if result.losses.size else None,
        "simulations": dict(result.report),
        "layout": {
            "rows": int(b.theta.shape[0]),
            "width": int(b.theta.shape[1]),
            "num_y": b.num_y,
            "samples": b.num_samples,
            "slots_per_sample": layout_ratio(b),
            "choice": result.report.get("layout"),  # which layout and why (layout auto)
        },
    }


def build(
    result, task, plot_y=None, out: Path | None = None, plots_on: bool = True, observed=None, on_stage=None
) -> dict:
    """The ``metrics.json`` payload of a run, for any D; figures written into ``out`` when given.

    Args:
        result: what ``mdnjax.fit`` returned.
        task: the run's task.
        plot_y: the observations to report (flat; M numbers per y for vector y), else the task's,
            else chosen from the simulations (``plot_y_for``).
        out: the run folder for the figures (None: no figures).
        plots_on: write the figures.
        observed: the user's observation y_o (M numbers): its summary (``mdnjax.observed``) and
            ``observed.png``; it is reported among the plotted y when ``plot_y`` is not given.
        on_stage: called with a one-line description as each stage of the report starts.

    Exact metrics (KL, W1, moments) appear when the task has an exact posterior or a quadrature
    reference; the held-out checks appear for every task.
    """
    t0 = time.perf_counter()
    post = result.posterior
    if observed is not None and not plot_y:
        plot_y = _with_observed(task, result, observed)
    chosen = plot_y_for(task, result, plot_y)
    section = _multivariate if is_multivariate(task, result) else _scalar
    stage = on_stage or (lambda text: None)
    payload = {**_run_summary(result), **section(result, task, chosen, out, plots_on, stage)}
    collapse.check(payload, result.buckets, post)
    if observed is not None:
        shown = [int(v) for v in np.ravel(observed)]
        stage(f"report: the posterior at the observed y = {shown[0] if len(shown) == 1 else shown}")
        at = observed_lib.summary(post, task, observed, result.heldout, seed=result.config.seed)
        payload["observed"] = at
        if "warning" in at:
            payload["warnings"].append(at["warning"])
        if out is not None and plots_on:
            observed_lib.figure(post, task, at, out / "observed.png", result.heldout, seed=result.config.seed)
    payload["failed_checks"] = heldout.failed_checks(payload)
    if out is not None and plots_on and result.losses.size:
        plots.loss_curve(
            result.losses, out / "loss.png", title=f"{task.name}: loss per epoch (K={post.spec.components})"
        )
    payload["report_s"] = time.perf_counter() - t0
    return payload


def plot_y_for(task, result, given=None):
    """The observations to report: ``given`` ones, else the task's, else chosen from the data
    (ints for a scalar run, tuples of M ints for a D-dimensional one)."""
    if is_multivariate(task, result):
        return _plot_y_multivariate(task, result, given)
    return _plot_y_scalar(task, result, given)


def format_table(payload: dict) -> str:
    """The printed table of a run's report (and the summary at the observed y, when given)."""
    table = _table_multivariate(payload) if "dim" in payload else _table_scalar(payload)
    if "observed" in payload:
        table = "\n".join(t for t in (table, observed_lib.format_summary(payload["observed"])) if t)
    return table


def _with_observed(task, result, observed) -> list[int]:
    """The task's (or the data's) plotted y with the observed one added (flat, M numbers each)."""
    flat = [int(v) for v in np.ravel(observed)]
    if is_multivariate(task, result):
        chosen = [v for y in _plot_y_multivariate(task, result) for v in y]
        m = len(flat)
        rows = [chosen[i : i + m] for i in range(0, len(chosen), m)]
        return flat + [v for r in rows if r != flat for v in r][: 2 * m]
    chosen = [y for y in _plot_y_scalar(task, result) if y != flat[0]]
    return sorted({flat[0], *chosen})


def figures(payload: dict, out: Path) -> list[str]:
    """The names of the figures the report wrote into ``out``."""
    names = ["posterior.png", "kl.png", "pairs.png", "observed.png", "loss.png"]
    names += [f"pairs_{i}.png" for i in range(1, len(payload.get("plot_y", [])))]
    return [n for n in names if (out / n).exists()]


def _scalar(result, task, plot_y, out: Path | None, plots_on: bool, stage) -> dict:
    """The report of a scalar θ with scalar y; figures written into ``out`` when given.

    Exact metrics (KL, W1, moments) appear when the task has an exact posterior or a quadrature
    reference; the held-out checks appear for every task.
    """
    b, post = result.buckets, result.posterior
    payload = {
        "plot_y": list(plot_y),
        "training_samples": {str(y): int(post.training_samples(y)) for y in plot_y},
        "warnings": [],
    }
    dense_y = b.y_values[b.counts >= DENSE]
    observed_only = getattr(task, "observed_only", False)  # sequential rounds: q answers for y_o alone
    if observed_only:
        dense_y = dense_y[:0]
    stage(f"report: reference posteriors and metrics at {len(plot_y) + len(dense_y)} y")
    refs = references(task, result, list(plot_y) + dense_y.tolist())
    if refs is not None:
        payload["reference"] = "exact" if task.has_exact_posterior else "quadrature"
        plotted = metrics.evaluate(post, task, plot_y, refs)
        dense = metrics.evaluate(post, task, dense_y, refs)
        payload.update(plotted=plotted, plotted_summary=metrics.summarize(plotted))
        if not observed_only:
            payload.update(per_y=dense, per_y_summary=metrics.summarize(dense))
        if out is not None and plots_on:
            plots.posterior_grid(post, task, plot_y, out / "posterior.png", references=refs)
            if not observed_only:
                name = f"{task.name}: KL(reference ‖ MDN) per y (K={post.spec.components})"
                plots.kl_by_y(dense, out / "kl.png", plot_y, title=name, plotted_rows=plotted)
    if result.heldout is not None:
        with_entropy = {y: r for y, r in (refs or {}).items() if hasattr(r, "entropy")}
        stage("report: held-out checks")
        rows = heldout.check(post, result.heldout, references=with_entropy)
        payload["heldout"] = rows
        payload["heldout_summary"] = heldout.summarize(rows)
    return payload


def _table_scalar(payload: dict) -> str:
    """The printed table of the plotted y; a ``*`` marks y with fewer than ``RARE_BELOW`` samples."""
    counts = payload["training_samples"]
    rows = payload.get("plotted")
    lines = []
    if rows:
        ref = "exact" if payload.get("reference") == "exact" else "ref"
        lines.append(
            f"{'y':>6} {'samples':>8} {f'KL({ref}||MDN)':>15} {f'{ref} mean':>11} {'MDN mean':>9} "
            f"{f'{ref} sd':>9} {'MDN sd':>9}"
        )
        for r in rows:
            n = counts[str(r["y"])]
            flag = "*" if n < RARE_BELOW else " "
            lines.append(
                f"{r['y']:>5}{flag} {n:>8,} {r['kl']:>15.5f} {r['exact_mean']:>11.5f} {r['mdn_mean']:>9.5f} "
                f"{r['exact_sd']:>9.5f} {r['mdn_sd']:>9.5f}"
            )
        lines.append(f"mean KL over plotted y: {np.mean([r['kl'] for r in rows]):.5f} nats")
        if any(n < RARE_BELOW for n in counts.values()):
            lines.append(f"* fewer than {RARE_BELOW} training samples at this y: the MDN extrapolates there")
        dense = payload.get("per_y_summary")
        if dense:
            lines.append(
                f"mean KL over the {dense['count']} y with >= {DENSE} samples: {dense['kl_mean']:.5f} "
                f"(worst {dense['kl_max']:.4f} at y={dense['kl_max_y']})"
            )
    held = payload.get("heldout_summary")
    if held:
        lines.append(
            f"held-out checks over {held['count']} y ({held['draws']:,} draws training never saw): "
            f"PIT uniformity rejected at 1% for {100 * held['pit_rejected_at_1pct']:.0f}% of y"
            + (" (FAILS: chance alone rejects about 1%)" if held["pit_rejected_at_1pct"] > 0.05 else "")
            + " "
            f"(median p = {held['pit_ks_pvalue_median']:.2f}), mean −log q = {held['nll_mean']:.4f}"
            + (
                f", minus the reference entropy: {held['kl_estimate_mean']:.4f} ± {held['nll_mean_se']:.4f}"
                if "kl_estimate_mean" in held
                else ""
            )
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- θ ∈ ℝ^D, vector y

AT_Y_DRAWS = 2000  # exact posterior draws collected at each reported y (rejection from the joint)


def is_multivariate(task, result) -> bool:
    """Whether a run needs the D-dimensional report (several parameters or vector observations)."""
    return len(task.support) > 1 or np.asarray(result.buckets.y_values).ndim == 2


def _plot_y_multivariate(task, result, given=None) -> list[tuple[int, ...]]:
    """Observations to report as tuples: ``given`` (a flat list, M numbers per y), else the task's,
    else the three most simulated y."""
    values = np.asarray(result.buckets.y_values)
    m = 1 if values.ndim == 1 else values.shape[1]
    if given:
        if len(given) % m:
            raise ValueError(f"--plot-y takes {m} integers per observation, got {len(given)}")
        return [tuple(int(v) for v in given[i : i + m]) for i in range(0, len(given), m)]
    if getattr(task, "plot_y", None):
        return [tuple(int(v) for v in np.ravel(y)) for y in task.plot_y]
    top = np.argsort(result.buckets.counts)[::-1][:3]
    return [tuple(int(v) for v in np.ravel(values[i])) for i in top]


def _key(y) -> str:
    return ",".join(str(int(v)) for v in np.ravel(y))


def _multivariate(result, task, plot_y, out: Path | None, plots_on: bool, stage) -> dict:
    """The report of several parameters or vector observations. At each reported y: exact posterior
    draws by rejection from the joint (``sources.draw_at``) check q with the held-out tests
    (−log q, PIT per coordinate, the MMD two-sample test); for D = 2 with ``log_prior`` and
    ``log_likelihood`` a grid reference gives KL, W1s, moment errors and the task's summaries.
    Figures: ``pairs.png`` (first y; ``pairs_1.png``, … for the others) and ``loss.png``."""
    b, post, config = result.buckets, result.posterior, result.config
    m = 1 if np.asarray(b.y_values).ndim == 1 else b.y_values.shape[1]
    as_y = lambda y: np.asarray(y, np.int64) if m > 1 else int(y[0])  # noqa: E731
    payload = {
        "dim": post.dim,
        "inputs": m,
        "plot_y": [list(y) for y in plot_y],
        "training_samples": {_key(y): int(post.training_samples(as_y(y))) for y in plot_y},
        "at_y": [],
        "warnings": [],
    }
    names = list(getattr(task, "parameter_names", None) or [f"theta{d}" for d in range(post.dim)])
    payload["parameters"] = names
    grid = post.dim == 2 and getattr(task, "log_prior", None) is not None and task.log_likelihood is not None
    for i, y in enumerate(plot_y):
        stage(
            f"report: y = {list(y) if len(y) > 1 else y[0]} ({i + 1} of {len(plot_y)}): exact draws, reference, checks"
        )
        yv = as_y(y)
        exact_u = sources.draw_at(task, config, yv, AT_Y_DRAWS)
        row = {"y": list(y), "training_samples": payload["training_samples"][_key(y)]}
        if len(exact_u) >= heldout.MIN_DRAWS:
            row["heldout"] = heldout.check_at(post, yv, exact_u, seed=config.seed)
        else:
            payload["warnings"].append(f"y = {list(y)}: only {len(exact_u)} exact draws found; no held-out test there")
        ref = None
        if grid:
            j = int(index_of(b.y_values, np.asarray([yv]).reshape(1, -1) if m > 1 else [yv])[0])
            lows = np.asarray(b.low[j] if j >= 0 else b.low.min(axis=0), np.float64)
            highs = np.asarray(b.high[j] if j >= 0 else b.high.max(axis=0), np.float64)
            if config.space == "raw":
                lows = np.array([bd.forward(bd.interior(v)[0]) for bd, v in zip(task.support, lows)])
                highs = np.array([bd.forward(bd.interior(v)[0]) for bd, v in zip(task.support, highs)])
            ref = reference.grid_posterior_2d(task, yv, lows, highs)
            row["reference"] = metrics.compare_nd(post, task, yv, ref, seed=config.seed)
        payload["at_y"].append(row)
        if out is not None and plots_on:
            exact_theta = _to_theta(post, exact_u)
            name = "pairs.png" if i == 0 else f"pairs_{i}.png"
            plots.pair_plot(post, task, yv, out / name, reference=ref, exact_draws=exact_theta, seed=config.seed)
    if result.heldout is not None:
        payload["heldout_summary"] = heldout.pit_summary(post, result.heldout)
    return payload


def _to_theta(post, u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, np.float64).reshape(len(u), -1)
    if not post.unconstrained:
        return u
    return np.stack([bd.inverse(u[:, d]) for d, bd in enumerate(post.spec.bounds)], axis=1)


def _table_multivariate(payload: dict) -> str:
    """The printed table at the reported y of a D-dimensional run."""
    names = payload["parameters"]
    lines = []
    for row in payload["at_y"]:
        y = row["y"][0] if len(row["y"]) == 1 else row["y"]  # a scalar y prints as a number
        head = f"y = {y} ({row['training_samples']:,} training samples)"
        ref = row.get("reference")
        if ref:
            w1 = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, ref["w1"]))
            head += f": KL(ref||MDN) {ref['kl']:.4f}, W1 {w1}, cov error {ref['cov_error']:.3f}"
        lines.append(head)
        if ref:
            for d, n in enumerate(names):
                lines.append(
                    f"  {n:>10}: mean ref {ref['mean']['reference'][d]:.4f} MDN {ref['mean']['mdn'][d]:.4f}, "
                    f"sd ref {ref['sd']['reference'][d]:.4f} MDN {ref['sd']['mdn'][d]:.4f}"
                )
            for name, s in ref["summaries"].items():
                r, q = s["reference"], s["mdn"]
                if s.get("probability"):  # an event's probability: its mean is all there is
                    lines.append(f"  {name:>10}: ref {r['mean']:.4f}   MDN {q['mean']:.4f}")
                    continue
                lines.append(
                    f"  {name:>10}: ref mean {r['mean']:.4f} median {r['median']:.4f} "
                    f"[{r['q025']:.4f}, {r['q975']:.4f}]   MDN mean {q['mean']:.4f} median {q['median']:.4f} "
                    f"[{q['q025']:.4f}, {q['q975']:.4f}]"
                )
        h = row.get("heldout")
        if h:
            pit = ", ".join(f"{n} {p['ks_pvalue']:.2f}{heldout.fails(p['ks_pvalue'])}" for n, p in zip(names, h["pit"]))
            lines.append(
                f"  exact draws {h['draws']:,}: PIT p {pit}; MMD two-sample p = {h['mmd_pvalue']:.3f} "
                f"({'REJECTED' if h['rejected'] else 'not rejected'} at {heldout.MMD_LEVEL:g})"
            )
    held = payload.get("heldout_summary")
    if held and held["count"]:
        share = ", ".join(f"{n} {100 * v:.0f}%" for n, v in zip(names, held["pit_rejected_at_1pct"]))
        lines.append(
            f"held-out checks over {held['count']} y ({held['draws']:,} draws): PIT rejected at 1% for {share} of y"
        )
    return "\n".join(lines)
