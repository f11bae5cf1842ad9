"""``python -m mdnjax.train --observed Y --rounds R``: sequential rounds for one observation
(``mdnjax.train.rounds``) in a run folder.

Each round's new simulations are a dataset folder ``rounds/NN/`` (readable by ``train --data``)
with the posterior that round trained and its ``round.json`` (threshold, acceptance, proposals,
validation loss, the summary at y_o), written last; ``rounds.json`` and ``rounds.png`` follow every
round. ``--resume RUN`` (with ``--rounds N`` for more) continues after the last round done: a round
left unfinished is drawn again from the same seed. The report of the last round closes the run.
"""

from __future__ import annotations

import datetime
import shutil
import signal
import sys
import warnings
from pathlib import Path

from mdnjax.cli.console import Printer, user_error, warning_printer
from mdnjax.cli.flags import UsageError, done_records, flag_name, round_settings, with_flag

ROUNDS = "rounds"
ROUND_RECORD = "round.json"


def round_dir(out: Path, r: int) -> Path:
    """The folder of round r (1-based)."""
    return Path(out) / ROUNDS / f"{r:02d}"


def done(out: Path, clean: bool = True) -> list:
    """The rounds a run folder holds finished, in order: [(θ, y, record), ...]; with ``clean`` the
    first round without its ``round.json`` (unfinished) and any after it are removed."""
    from mdnjax import checkpoint, datasets

    rounds, r = [], 1
    while (round_dir(out, r) / ROUND_RECORD).is_file():
        data = datasets.open_dataset(round_dir(out, r))
        theta, y = data.read(0, data.count)
        rounds.append((theta, y, checkpoint.read_json(round_dir(out, r) / ROUND_RECORD)))
        r += 1
    while clean and round_dir(out, r).exists():  # unfinished: drawn again from the same seed
        shutil.rmtree(round_dir(out, r))
        r += 1
    return rounds


def pooled_task(out: Path, record: dict, task, config):
    """A finished rounds run's task and config as its last round trained them (``report RUN``)."""
    from mdnjax.train import rounds as rounds_lib

    finished = done(out, clean=False)
    if not finished:
        raise UsageError(f"{out}: no round finished")
    thetas, ys = [t for t, _, _ in finished], [y for _, y, _ in finished]
    return rounds_lib.pooled_task(task, config, *rounds_lib.pooled(thetas, ys, config.seed))


def observed_of(task, options: dict):
    """--observed as one y: a number, or the M numbers."""
    flat = options["observed"]
    return flat[0] if len(flat) == 1 else flat


def run_rounds(prog: str, t_start: float, out: Path, created, record: dict, task, config, resuming: bool) -> int:
    """Runs (or continues) the rounds, then the report; returns the exit code."""
    from mdnjax import checkpoint, plots, sources
    from mdnjax.cli.report import write_report
    from mdnjax.config import ConfigError
    from mdnjax.posterior import load
    from mdnjax.simulation import SimulationError, UserCodeError
    from mdnjax.train import rounds as rounds_lib

    s = record["rounds"]
    if not record["options"].get("plot_y"):  # the report is about y_o
        record["options"]["plot_y"] = list(record["options"]["observed"])
    stored = sources.stored(task)
    base, data = (stored.task, stored.data) if stored is not None else (task, None)
    y_o = observed_of(base, record["options"])
    previous = done(out) if resuming else []
    posterior = load(round_dir(out, len(previous))) if previous else None
    per_round = s["per_round"] or (data.count if data is not None else config.samples // s["rounds"])
    print(
        f"mdnjax: task={base.name} rounds={s['rounds']} of {per_round:,} simulations at y_o = {y_o} "
        f"(ε={s['epsilon']:g}) -> {out}" + (f" (resuming after round {len(previous)})" if resuming else ""),
        flush=True,
    )
    stop: list[int] = []
    old = {
        sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    save = lambda state, losses: checkpoint.save_tree(out / checkpoint.CHECKPOINT, state, losses=losses)  # noqa: E731

    def on_round(rec: dict, result, theta, y) -> None:
        from mdnjax import datasets

        folder = round_dir(out, rec["round"])
        if folder.exists():
            shutil.rmtree(folder)
        datasets.write_arrays(theta, y, folder, task=base)
        result.posterior.save(folder)  # what the next round draws from, kept with its round
        result.posterior.save(out)
        checkpoint.write_json(folder / ROUND_RECORD, rec)
        record["rounds_done"] = [*done_records(record), rec]
        checkpoint.write_json(out / checkpoint.RUN, record)
        checkpoint.write_json(out / "rounds.json", {"observed": y_o, "settings": s, "rounds": record["rounds_done"]})
        if not record["options"]["no_plots"]:
            exact = _exact(base, y_o)
            title = f"{base.name} at y_o = {y_o}"
            plots.rounds_figure(record["rounds_done"], out / "rounds.png", _names(base), title, exact)
        print(describe(rec, _names(base)), flush=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = warning_printer(prog)
            outcome = rounds_lib.fit_rounds(
                base,
                config,
                observed=y_o,
                rounds=s["rounds"],
                per_round=per_round,
                epsilon=s["epsilon"],
                floor=s["floor"],
                data=data,
                previous=previous,
                posterior=posterior,
                on_round=on_round,
                on_stage=Printer.stage,
                on_checkpoint=save,
                checkpoint_every=record["options"]["checkpoint_every"],
                should_stop=lambda: bool(stop),
            )
    except (ConfigError, SimulationError, rounds_lib.RoundError, ValueError) as err:
        return _stopped(prog, out, created, record, f"{with_flag(err)}")
    except UserCodeError as err:
        if not done_records(record) and not resuming:
            checkpoint.release_run_dir(out, created)
        return user_error(prog, err)
    except OSError as err:
        print(f"{prog}: error: cannot write to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if stop or outcome.result is None or len(outcome.rounds) < s["rounds"]:
        print(
            f"{prog}: interrupted after {len(outcome.rounds)} round(s); the rounds done are saved. "
            f"Resume with: python -m mdnjax.train --resume {out}",
            file=sys.stderr,
        )
        return 130
    record["sessions"] = [
        *record.get("sessions", []),
        {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "rounds": len(outcome.rounds),
            "timings": {k: float(v) for k, v in outcome.result.timings.items()},
        },
    ]
    checkpoint.write_json(out / checkpoint.RUN, record)
    return write_report(prog, t_start, out, record, outcome.task, outcome.result.config, outcome.result)


def _stopped(prog: str, out: Path, created, record: dict, reason: str) -> int:
    """A round could not go on: the rounds done stay (a new run with none is released)."""
    from mdnjax import checkpoint

    kept = len(done_records(record))
    if not kept and created is not None:
        checkpoint.release_run_dir(out, created)
        print(f"{prog}: error: {reason}", file=sys.stderr)
        return 2
    print(f"{prog}: error: {reason}; the {kept} round(s) done are kept in {out}", file=sys.stderr)
    return 1


def _exact(task, y_o) -> dict | None:
    """The exact posterior's mean and 90% interval at y_o (a scalar θ with a closed form), else None."""
    if len(task.support) != 1 or not task.has_exact_posterior or isinstance(y_o, (list, tuple)):
        return None
    p = task.exact_posterior(y_o)
    return {"mean": [float(p.mean())], "q05": [float(p.ppf(0.05))], "q95": [float(p.ppf(0.95))]}


def _names(task) -> list[str]:
    from mdnjax.report_sample import names_of

    return names_of(task, len(task.support))


def describe(rec: dict, names: list[str]) -> str:
    """One line per round: simulations, how they were drawn, validation loss, q at y_o."""
    at = rec["at_observed"]
    shown = ", ".join(f"{n} {m:.4g} ± {sd:.2g}" for n, m, sd in zip(names, at["mean"], at["sd"]))
    how = rec["method"]
    if "acceptance" in rec and rec["method"] not in ("prior", "data"):
        how += f", acceptance {rec['acceptance']:.3g} of {rec['proposals']:,} proposals"
    val = "" if rec.get("validation_loss") is None else f", validation loss {rec['validation_loss']:.4f}"
    return (
        f"mdnjax: round {rec['round']}: {rec['simulations']:,} simulations ({how}), {rec['total']:,} in all{val}; "
        f"at y_o: {shown} ({rec['seconds']:.1f} s)"
    )


def resume_setup(args: dict, record: dict, out: Path):
    """``--resume RUN`` of a rounds run: its task and config back (only --rounds may change)."""
    from mdnjax import checkpoint
    from mdnjax.cli.rundir import reattach, run_task
    from mdnjax.config import Config

    others = sorted(set(args) - {"resume", "rounds"})
    if others:
        raise UsageError(
            f"--resume continues a run of rounds with its own settings: {' '.join(flag_name(k) for k in others)} "
            "cannot be changed (only --rounds)"
        )
    record["rounds"] = round_settings(args, record)
    if len(done_records(record)) >= record["rounds"]["rounds"]:
        raise UsageError(
            f"--resume {out}: the run already did its {record['rounds']['rounds']} rounds; "
            f"pass --rounds N > {record['rounds']['rounds']} for more"
        )
    try:
        task = run_task(out, record)
        config = Config.from_run(checkpoint.read_json(out / checkpoint.CONFIG))
        task, config = reattach(task, record, config)
    except ValueError as err:
        raise UsageError(f"--resume {out}: {err}") from None
    return task, config
