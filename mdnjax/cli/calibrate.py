"""``python -m mdnjax.calibrate RUN``: SBC ranks and coverage of a saved run, written beside it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mdnjax import xla
from mdnjax.cli.console import user_error
from mdnjax.cli.flags import CALIBRATE, Parser, UsageError, number
from mdnjax.cli.rundir import reattach, run_task


def calibrate_main(argv=None) -> int:
    """``python -m mdnjax.calibrate RUN``; returns the exit code."""
    p = Parser(prog=f"python -m {CALIBRATE}", description="Calibrate a trained posterior (SBC ranks, coverage).")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--draws", type=number(int), default=4000, help="fresh prior-predictive draws (default 4000)")
    p.add_argument("--samples-per-draw", type=number(int), default=99, help="posterior draws per SBC rank (default 99)")
    p.add_argument(
        "--seed", type=number(int), default=1, help="seed of the fresh draws, not the training seed (default 1)"
    )
    args = p.parse_args(argv)
    prog = CALIBRATE
    xla.configure_cpu()
    from mdnjax import calibration, checkpoint, plots, resources
    from mdnjax.config import Config
    from mdnjax.heldout import fails
    from mdnjax.posterior import load
    from mdnjax.simulation import UserCodeError

    out = Path(args.run_dir)
    try:
        if args.draws < 10 or args.samples_per_draw < 1:
            raise UsageError("--draws must be >= 10 and --samples-per-draw >= 1")
        if not 0 <= args.seed <= 2**32 - 1:
            raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
        post = load(out)
        # draws × (samples per draw + 1) values per coordinate in float64, a few temporaries each
        needed = 8.0 * 4 * args.draws * (args.samples_per_draw + 1) * (post.dim + post.spec.inputs)
        resources.fits(needed, f"--draws {args.draws:,} × --samples-per-draw {args.samples_per_draw}", "lower --draws")
        record = checkpoint.read_json(out / checkpoint.RUN)
        task, _ = reattach(
            run_task(out, record), record, Config.from_run(checkpoint.read_json(out / checkpoint.CONFIG))
        )
        multivariate = post.dim > 1 or post.spec.inputs > 1
        calibrate = calibration.run_nd if multivariate else calibration.run
        result = calibrate(post, task, args.draws, args.samples_per_draw, args.seed)
        sessions = checkpoint.read_json(out / checkpoint.RUN).get("sessions", [])
        result["epoch"] = int(sessions[-1]["epochs"][1]) if sessions else None  # the posterior checked
        result["failed_checks"] = _failed(result)
    except (UsageError, ValueError, MemoryError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return user_error(prog, err)
    try:
        checkpoint.write_json(out / "calibration.json", result)
        title = f"{task.name}, K={post.spec.components}"
        if multivariate:
            names = list(getattr(task, "parameter_names", None) or [f"theta{d}" for d in range(post.dim)])
            plots.coverage_per_dim(
                result["levels"],
                result["coverage"],
                result["coverage_standard_error"],
                names,
                out / "coverage.png",
                title,
            )
        else:
            plots.sbc_ranks(result, out / "sbc_ranks.png", title)
            plots.coverage(result, out / "coverage.png", title)
        metrics_path = out / checkpoint.METRICS
        if metrics_path.exists():
            metrics = checkpoint.read_json(metrics_path)
            keep = ("draws", "epoch", "max_coverage_error", "rank_chi2_pvalue", "failed_checks")
            metrics["calibration"] = {k: result[k] for k in keep}
            checkpoint.write_json(metrics_path, metrics)
    except OSError as err:
        print(f"{prog}: error: cannot write to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    if multivariate:
        print(
            f"{result['draws']} draws: largest coverage error {result['max_coverage_error']:.4f} over "
            f"{post.dim} parameters; SBC rank uniformity p = "
            + ", ".join(f"{p:.3f}{fails(p)}" for p in result["rank_chi2_pvalue"])
            + f", of log q p = {result['rank_log_q_chi2_pvalue']:.3f}{fails(result['rank_log_q_chi2_pvalue'])}"
        )
        print(f"wrote {out}/calibration.json, coverage.png")
        return 0
    exact = result.get("max_coverage_error_exact_posterior")
    print(
        f"{result['draws']} draws: largest coverage error {result['max_coverage_error']:.4f}"
        + (f" (exact posterior: {exact:.4f})" if exact is not None else "")
        + f", SBC rank uniformity p = {result['rank_chi2_pvalue']:.3f}{fails(result['rank_chi2_pvalue'])}"
    )
    print(f"wrote {out}/calibration.json, sbc_ranks.png, coverage.png")
    return 0


def _failed(result: dict) -> list[dict]:
    """The SBC rank-uniformity tests whose p-value falls below ``report.CHECK_LEVEL``."""
    from mdnjax.heldout import CHECK_LEVEL as level

    ps = np.atleast_1d(result["rank_chi2_pvalue"]).tolist()
    rows = [{"check": f"SBC rank uniformity ({i})", "p": p, "level": level} for i, p in enumerate(ps) if p < level]
    log_q = result.get("rank_log_q_chi2_pvalue")
    if log_q is not None and log_q < level:
        rows.append({"check": "SBC rank uniformity of log q", "p": log_q, "level": level})
    return rows
