"""The report after training (``python -m mdnjax report RUN`` writes it again: ``cli.rebuild``).

Training's result is saved before the report starts. Whatever fails after that (a user's
``log_prior`` that raises or returns NaN, a simulator that runs out when the per-sample loss
simulates again, Ctrl-C or SIGTERM) leaves the posterior and checkpoint in place, writes a
``metrics.json`` that says what failed, and ends with one line and exit 1; ``report RUN`` then
writes the report again from the saved run.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from mdnjax.cli.console import Printer, user_traceback

REPORT = "mdnjax report"


class _Interrupted(Exception):
    """SIGTERM during the report (Ctrl-C arrives as KeyboardInterrupt)."""


def write_report(prog: str, t_start: float, out: Path, record: dict, task, config, result) -> int:
    """Builds, writes and prints the report of a trained run; returns the exit code."""
    import jax

    from mdnjax import layout, metrics, report, sources
    from mdnjax.simulation import UserCodeError

    options = record["options"]
    config = result.config  # the layout trained on ("auto" decided)
    if config.per_sample:
        return _write_sample_report(prog, t_start, out, record, task, result)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        payload = report.build(
            result,
            task,
            options["plot_y"],
            out,
            plots_on=not options["no_plots"],
            observed=options.get("observed"),
            on_stage=Printer.stage,
        )
        if layout.plan(config.layout).binned or config.samples <= sources.CHUNK:
            again = "read again" if sources.stored(task) else "simulated again from the seed"
            Printer.stage(f"report: the per-sample loss on the training draws ({again})")
            try:
                payload["per_sample_loss"] = metrics.per_sample_loss(
                    task, config, result.posterior, result.buckets.y_values, jax.process_count(), result.buckets.counts
                )
            except metrics.NotReproducible as err:
                payload["warnings"].append(str(err))
    except (Exception, KeyboardInterrupt, _Interrupted) as err:  # noqa: BLE001 - the trained posterior is kept
        return _failed(prog, out, record, result, err, isinstance(err, UserCodeError))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not _saved(prog, t_start, out, record, payload):
        return 1
    if "per_sample_loss" in payload:
        print(f"per-sample loss on the training draws: {payload['per_sample_loss']:.6f} (comparable across layouts)")
    print(layout.describe_budget(result.report["buckets"]))
    table = report.format_table(payload)
    if table:
        print(table)
    t = result.timings
    print(
        f"simulate {t.get('simulate_s', 0):.2f} s, bucket {t.get('bucket_s', 0):.2f} s, "
        f"compile {t.get('compile_s', 0):.2f} s, train {t.get('train_s', 0):.2f} s "
        f"({t.get('ms_per_epoch', 0):.2f} ms/epoch), wall {time.perf_counter() - t_start:.1f} s"
    )
    _print_saved(out, report.figures(payload, out))
    return 0


def _print_saved(out: Path, figures) -> None:
    """The closing line: the files of the run folder that are there, the figures last."""
    files = ["run.json", "config.json", "task.json", "posterior.npz", "posterior.json", "checkpoint.npz"]
    files += ["rounds.json", "rounds.png", "rounds/", "metrics.json", *figures]
    print(f"saved to {out}/ ({', '.join(f for f in files if (out / f).exists())})")


def _write_sample_report(prog: str, t_start: float, out: Path, record: dict, task, result) -> int:
    """The report of a run trained per sample (``mdnjax.report_sample``)."""
    from mdnjax import report_sample
    from mdnjax.simulation import UserCodeError

    options = record["options"]
    m = result.posterior.spec.inputs
    flat = [*(options.get("observed") or []), *(options.get("plot_y") or [])]
    observations = []
    for i in range(0, len(flat) - m + 1, m):  # each once, in order (--observed may be among --plot-y)
        y = flat[i] if m == 1 else flat[i : i + m]
        if y not in observations:
            observations.append(y)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        payload = report_sample.build(
            result, task, observations or None, out, plots_on=not options["no_plots"], on_stage=Printer.stage
        )
    except (Exception, KeyboardInterrupt, _Interrupted) as err:  # noqa: BLE001 - the trained posterior is kept
        return _failed(prog, out, record, result, err, isinstance(err, UserCodeError))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not _saved(prog, t_start, out, record, payload):
        return 1
    print(report_sample.format_table(payload))
    t = result.timings
    print(
        f"simulate {t.get('simulate_s', 0):.2f} s, compile {t.get('compile_s', 0):.2f} s, "
        f"train {t.get('train_s', 0):.2f} s "
        f"({t.get('ms_per_epoch', 0):.1f} ms/pass), wall {time.perf_counter() - t_start:.1f} s"
    )
    _print_saved(out, report_sample.figures(out, len(payload["observations"])))
    return 0


def _saved(prog: str, t_start: float, out: Path, record: dict, payload: dict) -> bool:
    """The sessions and timings added, ``metrics.json`` written and the warnings printed; False
    (after one line) when the file cannot be written."""
    from mdnjax import checkpoint

    sessions = record.get("sessions", [])
    payload["timings"] = (sessions[-1].get("timings", {}) if sessions else {}) | {
        "wall_s": time.perf_counter() - t_start
    }
    payload["sessions"] = sessions
    try:
        checkpoint.write_json(out / checkpoint.METRICS, payload)
    except OSError as err:
        print(f"{prog}: error: cannot write results to {out}: {err.strerror or err}", file=sys.stderr)
        return False
    for line in payload["warnings"]:
        print(f"{prog}: warning: {line}", file=sys.stderr)
    return True


def _raise_interrupted(signum, frame):
    raise _Interrupted("terminated (SIGTERM)")


def _failed(prog: str, out: Path, record: dict, result, err: BaseException, users: bool) -> int:
    """The report failed after training: what can be written is, the failure is one line."""
    from mdnjax import checkpoint

    if isinstance(err, (KeyboardInterrupt, _Interrupted)):
        reason = "interrupted"
    elif users:
        print(user_traceback(err), file=sys.stderr, end="")
        reason = str(err)
    else:
        reason = f"{type(err).__name__}: {err}"
    payload = {
        "status": "report failed",
        "report_error": reason,
        "epochs": int(result.state.epoch),
        "loss": [float(v) for v in result.losses],
        "final_loss": float(result.losses[-1]) if len(result.losses) else None,
        "sessions": record.get("sessions", []),
    }
    try:
        checkpoint.write_json(out / checkpoint.METRICS, payload)
    except OSError:
        pass
    print(
        f"{prog}: error: the report failed after training ({reason}); the trained posterior is saved in {out}; "
        f"write the report again with: python -m {REPORT} {out}",
        file=sys.stderr,
    )
    return 1
