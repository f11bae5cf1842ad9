"""The report of a run trained per sample: the losses (training and validation), the held-out
calibration on the validation pairs, and q(θ | y) at the observations asked for.

The validation pairs are draws (θ, y) from the joint that no Adam step saw (they chose the
stopping pass), so the marginal PIT Q_d(θ_d | y) of each is uniform when q is calibrated; its
Kolmogorov–Smirnov p-value per parameter is the held-out check (``heldout.CHECK_LEVEL``).

Example:
    >>> import numpy as np, mdnjax
    >>> def simulate(rng, n):
    ...     theta = rng.normal(size=n)
    ...     return theta, theta + 0.5 * rng.normal(size=n)
    >>> task = mdnjax.Task("normal", simulate, support=[(-np.inf, np.inf)])
    >>> result = mdnjax.fit(task, mdnjax.Config(samples=4_000, epochs=5))
    >>> payload = build(result, task, observations=[0.5])
    >>> payload["observations"][0]["y"], len(payload["calibration"]["pit"])
    ([0.5], 1)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np
from scipy import stats

from mdnjax import batches, heldout, plots
from mdnjax.posterior import RareObservationWarning
from mdnjax.simulation import summarize_warnings
from mdnjax.train import minibatch

PIT_PAIRS = 5_000  # validation pairs the calibration check uses at most
DRAWS = 10_000  # posterior draws per summary


def names_of(task, dim: int) -> list[str]:
    return list(
        getattr(task, "parameter_names", None) or (["theta"] if dim == 1 else [f"theta{d}" for d in range(dim)])
    )


def calibration(post, heldout_pairs, most: int = PIT_PAIRS) -> dict:
    """Marginal PIT of the validation pairs: per parameter the KS p-value against U(0, 1)."""
    theta_u, y = heldout_pairs
    n = min(len(theta_u), most)
    theta_u, y = np.asarray(theta_u)[:n], np.asarray(y)[:n]
    theta = np.asarray(post._from_fitting(np.asarray(theta_u, np.float32)), np.float64).reshape(n, -1)
    rows = []
    for d in range(post.dim):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RareObservationWarning)
            pit = np.asarray(post.marginal_cdf(theta[:, d], y, d), np.float64)
        p = float(stats.kstest(pit, "uniform").pvalue)
        rows.append({"ks_pvalue": p, "fails": bool(heldout.fails(p))})
    return {"pairs": n, "pit": rows}


def summary(post, task, y, seed: int = 0) -> dict:
    """Per parameter: mean, sd and 90% interval of q(θ | y)."""
    draws = np.asarray(post.sample(jax.random.key(seed), y, DRAWS), np.float64).reshape(DRAWS, -1)
    q05, q95 = np.quantile(draws, [0.05, 0.95], axis=0)
    return {
        "y": np.ravel(np.asarray(y, np.float64)).tolist(),
        "parameters": [
            {"name": n, "mean": float(m), "sd": float(s), "q05": float(lo), "q95": float(hi)}
            for n, m, s, lo, hi in zip(names_of(task, post.dim), draws.mean(0), draws.std(0, ddof=1), q05, q95)
        ],
    }


def default_observations(result, most: int = 3) -> list:
    """Observations to report when none are given: the first validation pairs' y."""
    if result.heldout is None:
        return []
    ys = np.asarray(result.heldout[1])
    return [ys[i].tolist() for i in range(min(most, len(ys)))]


def build(result, task, observations=None, out: Path | None = None, plots_on: bool = True, on_stage=None) -> dict:
    """The report's payload (``metrics.json``); figures into ``out`` when given."""
    stage = on_stage or (lambda text: None)
    post = result.posterior
    rep = result.report
    payload = {
        "status": "ok",
        "layout": rep.get("layout"),
        "epochs": int(result.state.epoch),
        "best_epoch": result.best_epoch,
        "early_stopped_at": result.early_stopped_at,
        "loss": [float(v) for v in result.losses],
        "validation_loss": [float(v) for v in result.validation],
        "final_loss": float(result.losses[-1]) if len(result.losses) else None,
        "best_validation_nll": rep.get("best_validation"),
        "skipped_steps": rep.get("skipped_steps", 0),
        "pairs": {k: rep.get(k) for k in ("train_pairs", "validation_pairs", "batch_size", "steps_per_pass")},
        "embedding": rep.get("embedding"),
        "warnings": list(rep.get("warnings", [])),
    }
    if result.heldout is not None:
        stage("report: calibration on the validation pairs (marginal PIT)")
        payload["calibration"] = calibration(post, result.heldout)
        payload["failed_checks"] = [
            f"validation PIT of {n} (p = {r['ks_pvalue']:.3g})"
            for n, r in zip(names_of(task, post.dim), payload["calibration"]["pit"])
            if r["fails"]
        ]
    ys = list(observations) if observations else default_observations(result, 3 if post.dim <= 5 else 1)
    stage(f"report: q(θ | y) at {len(ys)} observation(s)")
    payload["observations"] = [summary(post, task, y, seed=i) for i, y in enumerate(ys)]
    if out is not None and plots_on:
        stage("report: figures")
        plots.loss_curve(np.asarray(result.losses), out / "loss.png", title=f"{task.name}: training loss per pass")
        validation_curve(result, out / "validation.png", task.name)
        for i, y in enumerate(ys):
            plots.pair_plot(post, task, y, out / f"pairs_{i}.png", seed=i, title=f"{task.name}: q(θ | y) #{i}")
    return payload


def validation_curve(result, path, name: str):
    """Training and validation loss per pass, the kept pass marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    passes = np.arange(1, len(result.losses) + 1)
    ax.plot(passes, result.losses, label="training (mean over the pass)")
    ax.plot(passes, result.validation, label="validation")
    if result.best_epoch:
        ax.axvline(result.best_epoch, color="k", ls=":", lw=1, label=f"kept: pass {result.best_epoch}")
    ax.set(
        xlabel="pass over the training pairs",
        ylabel="NLL per pair (θ in the fitting space)",
        title=f"{name}: per-sample training",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


def figures(out: Path, count: int) -> list[str]:
    return [f for f in ["loss.png", "validation.png", *[f"pairs_{i}.png" for i in range(count)]] if (out / f).exists()]


def format_table(payload: dict) -> str:
    """The printed block: the layout's reason, the losses, calibration, the observations."""
    lines = []
    if payload.get("layout"):
        lines.append(f"layout {payload['layout']['layout']}: {payload['layout']['reason']}")
    p = payload["pairs"]
    lines.append(
        f"{p['train_pairs']:,} training pairs, {p['validation_pairs']:,} for validation; batch {p['batch_size']}, "
        f"{p['steps_per_pass']} steps per pass; kept pass {payload['best_epoch']} of {payload['epochs']}"
        + (f" (stopped early at {payload['early_stopped_at']})" if payload.get("early_stopped_at") else "")
    )
    if payload.get("best_validation_nll") is not None:
        lines.append(f"validation NLL {payload['best_validation_nll']:.4f} per pair")
    cal = payload.get("calibration")
    if cal:
        pit = ", ".join(f"{r['ks_pvalue']:.2f}{heldout.fails(r['ks_pvalue'])}" for r in cal["pit"])
        lines.append(f"calibration on {cal['pairs']:,} validation pairs: PIT p {pit}")
    for s in payload.get("observations", []):
        y = s["y"]
        lines.append(
            f"at y = {y[0]:.4g}"
            if len(y) == 1
            else f"at y = [{', '.join(f'{v:.3g}' for v in y[:6])}{', …' if len(y) > 6 else ''}]:"
        )
        for q in s["parameters"]:
            lines.append(
                f"  {q['name']:>10}: mean {q['mean']:.4g}, sd {q['sd']:.3g}, "
                f"90% interval [{q['q05']:.4g}, {q['q95']:.4g}]"
            )
    return "\n".join(lines)


def rebuilt(task, config, post, state, losses, timings: dict, choice=None):
    """A saved per-sample run as ``fit``'s ``Result`` (for its report): its validation pairs
    simulated again from the seed, its losses from the checkpoint."""
    report: dict = {"samples": config.samples, "moved_to_interior": 0, "warnings": []}
    theta, y = batches.simulated_pairs(task, config, post.spec.network.kind == "set", report)
    n = theta.shape[0]
    train_idx, val_idx = batches.split(n, config.validation, config.seed)
    batch, steps = batches.plan(train_idx.size, config.batch_size)
    losses = np.asarray(losses, np.float32).reshape(-1, 2)
    val = losses[:, 1]
    best = int(np.nanargmin(val)) + 1 if np.isfinite(val).any() else 0
    report.update(
        {
            "layout": None if choice is None else choice.to_json(),
            "train_pairs": int(train_idx.size),
            "validation_pairs": int(val_idx.size),
            "batch_size": batch,
            "steps_per_pass": steps,
            "embedding": post.spec.network.to_json(),
            "dropped": 0,
            "skipped_steps": int(state.skipped),
            "best_validation": float(np.nanmin(val)) if best else None,
        }
    )
    report["warnings"] = summarize_warnings(report["warnings"])
    early = len(val) if int(state.since_best) >= config.patience else None
    heldout = (
        theta.reshape(n, -1)[val_idx].astype(np.float32).reshape((-1,) + theta.shape[1:]),
        np.asarray(y)[val_idx],
    )
    return minibatch.Result(post, state, losses[:, 0], val, timings, report, config, None, None, best, early, heldout)
