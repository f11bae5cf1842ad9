"""``python -m mdnjax.train``: flags → task + ``Config`` → ``fit`` → a run folder, then the report."""

from __future__ import annotations

import datetime
import signal
import sys
import time
import warnings

from mdnjax import xla
from mdnjax.cli.console import Printer, user_error, warning_printer
from mdnjax.cli.flags import TRAIN, UsageError, train_parser, with_flag
from mdnjax.cli.report import write_report
from mdnjax.cli.rundir import new_run, resume_setup
from mdnjax.simulation import UserCodeError


def main(argv=None) -> int:
    """``python -m mdnjax.train``; returns the exit code."""
    t_start = time.perf_counter()
    xla.configure_cpu()  # before the first JAX computation
    args = vars(train_parser().parse_args(argv))
    prog = TRAIN
    try:
        lead = _init_distributed(args)
        if "resume" in args and _rounds_run(args["resume"]):
            return _resume_rounds(prog, t_start, args)
        if "resume" in args:
            out, lock, record, task, config, state, history = resume_setup(args, lead)
            created = None
        else:
            out, created, lock, record, task, config = new_run(args, lead)
            state, history = None, None
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return user_error(prog, err)
    try:
        if "rounds" in record:
            from mdnjax.cli.rounds import run_rounds

            return run_rounds(prog, t_start, out, created, record, task, config, resuming=False)
        return _train(prog, t_start, lead, out, created, record, task, config, state, history)
    finally:
        from mdnjax import checkpoint

        checkpoint.unlock_run_dir(lock)


def _rounds_run(run) -> bool:
    """Whether RUN is a run of sequential rounds (its run.json says so)."""
    from pathlib import Path

    from mdnjax import checkpoint

    path = Path(run) / checkpoint.RUN
    try:
        return path.is_file() and "rounds" in checkpoint.read_json(path)
    except (OSError, ValueError):
        return False


def _resume_rounds(prog: str, t_start: float, args: dict) -> int:
    """``--resume RUN`` of a run of rounds: the rounds after the last one done, then the report."""
    from pathlib import Path

    from mdnjax import checkpoint
    from mdnjax.cli.rounds import resume_setup as rounds_setup
    from mdnjax.cli.rounds import run_rounds

    out = Path(args["resume"])
    try:
        lock = checkpoint.lock_run_dir(out)
    except ValueError as err:
        raise UsageError(f"--resume {err}") from None
    try:
        record = checkpoint.read_json(out / checkpoint.RUN)
        task, config = rounds_setup(args, record, out)
        return run_rounds(prog, t_start, out, None, record, task, config, resuming=True)
    finally:
        checkpoint.unlock_run_dir(lock)


def _init_distributed(args: dict) -> bool:
    """Joins a multi-process run when ``--coordinator`` is given; returns whether this process leads."""
    given = [k in args for k in ("coordinator", "num_processes", "process_id")]
    if not any(given):
        return True
    if not all(given):
        raise UsageError("--coordinator, --num-processes and --process-id go together")
    if args["num_processes"] < 1 or not 0 <= args["process_id"] < args["num_processes"]:
        raise UsageError(f"--process-id must be in 0..{args['num_processes'] - 1}, got {args['process_id']}")
    from mdnjax import parallel  # JAX: imported once the flags are known good

    parallel.initialize(args["coordinator"], args["num_processes"], args["process_id"])
    return args["process_id"] == 0


def _train(prog, t_start, lead, out, created, record, task, config, state, history) -> int:
    import jax

    from mdnjax import checkpoint, simulation, train
    from mdnjax.config import ConfigError

    resuming = state is not None
    start = int(state.epoch) if resuming else 0
    try:
        asked, (config, choice) = config, train.chosen(task, config)  # the layout decided: its settings printed
    except (ConfigError, simulation.SimulationError) as err:
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        print(f"{prog}: error: {with_flag(err)}", file=sys.stderr)
        return 2
    except simulation.UserCodeError as err:
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        return user_error(prog, err)
    if lead and not resuming:  # a resume trains on with these, whatever a later version's defaults
        try:
            checkpoint.atomic_write(out / checkpoint.CONFIG, _settled(asked, config).to_json().encode())
        except OSError as err:
            checkpoint.release_run_dir(out, created)
            reason = err.strerror or err
            print(f"{prog}: error: --out {out}: cannot write {checkpoint.CONFIG}: {reason}", file=sys.stderr)
            return 1
    print(
        f"mdnjax: task={task.name} samples={config.samples:,} K={config.components}"
        f"{' +linear skip' if config.linear_skip else ''} recipe={config.recipe} "
        f"(epochs={config.epochs} lr={config.lr:g} {config.weighting} {config.schedule} {config.space}) "
        f"layout={config.layout}{'' if choice.reason.startswith('layout ') else f' ({choice.reason})'} "
        f"device={jax.devices()[0].platform} -> {out}" + (f" (resuming at epoch {start})" if resuming else ""),
        flush=True,
    )
    options = record["options"]
    stop: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    save = lambda s, losses: checkpoint.save_tree(out / checkpoint.CHECKPOINT, s, losses=losses)  # noqa: E731
    printer = Printer(config.epochs, start)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = warning_printer(prog)
            result = train.fit(
                task,
                config,
                choice=choice,
                init_state=state,
                history=history,
                callback=printer,
                on_stage=printer.stage,
                on_checkpoint=save if lead else None,
                checkpoint_every=options["checkpoint_every"],
                should_stop=lambda: bool(stop),
            )
    except (ConfigError, simulation.SimulationError) as err:
        printer.close()
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        print(f"{prog}: error: {with_flag(err)}", file=sys.stderr)
        return 2
    except simulation.UserCodeError as err:
        printer.close()
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        return user_error(prog, err)
    except OSError as err:  # a checkpoint could not be written: the previous one is intact
        printer.close()
        print(
            f"{prog}: error: cannot write a checkpoint to {out}: {err.strerror or err}; "
            "the last checkpoint written is intact",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    printer.close()
    if not lead:  # other processes of a multi-process run write nothing
        return 0 if result.diverged_at is None and result.stopped_at is None else 1
    return _finish(prog, t_start, out, record, task, config, result, start)


def _settled(asked, resolved):
    """The config a run folder keeps: every default filled in as ``resolved`` has it, the layout as
    asked (``auto`` keeps what it drops on auto: nothing; a layout named drops rare y)."""
    import dataclasses

    return dataclasses.replace(resolved, layout=asked.layout)


def _finish(prog, t_start, out, record, task, config, result, start: int) -> int:
    """After training: the session recorded, the posterior saved, the report written and printed."""
    from mdnjax import checkpoint

    session = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "epochs": [start, int(result.state.epoch)],
        "timings": {k: float(v) for k, v in result.timings.items()},
    }
    record["sessions"] = [*record.get("sessions", []), session]
    try:
        checkpoint.write_json(out / checkpoint.RUN, record)
        if result.stopped_at is not None:
            print(
                f"{prog}: interrupted at epoch {result.stopped_at}; state saved. "
                f"Resume with: python -m {TRAIN} --resume {out}",
                file=sys.stderr,
            )
            return 130
        result.posterior.save(out)
    except OSError as err:
        print(f"{prog}: error: cannot write results to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    stale = _drop_stale_calibration(out)
    if stale:
        print(
            f"{prog}: note: removed {', '.join(stale)}: they checked the posterior before this session; "
            f"run python -m mdnjax.calibrate {out} again",
            file=sys.stderr,
        )
    code = write_report(prog, t_start, out, record, task, config, result)
    if code == 0 and result.diverged_at is not None:
        print(
            f"{prog}: error: loss became non-finite at epoch {result.diverged_at}; "
            "the posterior holds the last finite parameters",
            file=sys.stderr,
        )
        return 1
    return code


CALIBRATION_FILES = ("calibration.json", "sbc_ranks.png", "coverage.png")


def _drop_stale_calibration(out) -> list[str]:
    """Removes the calibration of an earlier posterior (a resumed run trained a new one)."""
    stale = [name for name in CALIBRATION_FILES if (out / name).exists()]
    for name in stale:
        (out / name).unlink()
    return stale
