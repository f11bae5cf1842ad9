"""A run folder's life: a new run claims its folder and records how it was started; a resumed
run reads its task, config and checkpoint back."""

from __future__ import annotations

import datetime
from pathlib import Path

from mdnjax.cli.flags import (
    DEFAULTS,
    RUN_FLAGS,
    UsageError,
    check_plot_y,
    config_from_flags,
    flag_name,
    task_from_flags,
    with_flag,
)


def _default_out(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / f"{name}-{stamp}", 1
    while path.exists():
        path, n = Path("runs") / f"{name}-{stamp}-{n}", n + 1
    return path


def resume_setup(args: dict, lead: bool = True):
    """Reads RUN's task, config and checkpoint for ``--resume``; ``--epochs`` may extend it. The
    leading process holds the folder (``checkpoint.lock_run_dir``) until the caller lets it go."""
    import dataclasses

    from mdnjax import checkpoint, train
    from mdnjax.config import Config, ConfigError

    others = sorted(set(args) - {"resume", "epochs", "coordinator", "num_processes", "process_id"})
    if others:
        flags = " ".join(flag_name(k) for k in others)
        raise UsageError(f"--resume continues a run with its own settings: {flags} cannot be changed (only --epochs)")
    out = Path(args["resume"])
    if not (out / checkpoint.RUN).is_file():
        raise UsageError(f"--resume {out}: no {checkpoint.RUN} there: not a run folder")
    try:
        lock = checkpoint.lock_run_dir(out) if lead else None
    except ValueError as err:
        raise UsageError(f"--resume {err}") from None
    try:
        record = checkpoint.read_json(out / checkpoint.RUN)
        task = run_task(out, record)
        config = Config.from_dict(checkpoint.read_json(out / checkpoint.CONFIG))
        if "epochs" in args:
            config = dataclasses.replace(config, epochs=args["epochs"])
        decided, _ = train.chosen(task, config)
        template = train.state_template(task, decided)
        state, extra = checkpoint.load_tree(out / checkpoint.CHECKPOINT, _numpy(template), ("losses",))
        done = int(state.epoch)
        if done >= decided.epochs:
            hint = ""
            metrics = out / checkpoint.METRICS
            if metrics.is_file() and checkpoint.read_json(metrics).get("status") == "report failed":
                hint = f"; its report failed: write it again with python -m mdnjax report {out}"
            raise UsageError(
                f"--resume {out}: the run already trained {done} epochs; pass --epochs N > {done} to train it longer"
                + hint
            )
    except (ValueError, ConfigError) as err:
        checkpoint.unlock_run_dir(lock)
        raise UsageError(f"--resume {out}: {with_flag(err)}") from None
    except BaseException:
        checkpoint.unlock_run_dir(lock)
        raise
    return out, lock, record, task, config, state, extra["losses"]


def run_task(out: Path, record: dict):
    """The task of a run folder: a built-in one from task.json, or the user's, re-imported from
    its recorded file (refused when gone or changed)."""
    from mdnjax import checkpoint, tasks, userspec

    spec = record.get("task", {})
    if "spec" in spec:
        return userspec.reload(spec)
    return tasks.from_record(checkpoint.read_json(out / checkpoint.TASK))


def _numpy(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def new_run(args: dict, lead: bool):
    from mdnjax import checkpoint, parallel

    task, task_record = task_from_flags(args)
    config = config_from_flags(args, task)
    check_plot_y(task, args.get("plot_y"))
    check_plot_y(task, args.get("observed"), "--observed")
    checkpoint_every = args.get("checkpoint_every", DEFAULTS["checkpoint_every"])
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    try:
        parallel.device_mesh(config.devices)  # before any output: a device count this machine has
    except ValueError as err:
        raise UsageError(with_flag(err)) from None
    out = Path(args["out"]) if "out" in args else _default_out(task.name)
    record = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "task": task_record,
        "options": {k: args.get(k, DEFAULTS.get(k)) for k in RUN_FLAGS},
        "sessions": [],
    }
    created, lock = False, None
    if lead:
        try:
            created = checkpoint.claim_run_dir(out, record)
        except (ValueError, OSError) as err:  # refused: nothing of what is there is touched
            raise UsageError(f"--out {err}") from None
        try:
            lock = checkpoint.lock_run_dir(out)
            checkpoint.write_json(out / checkpoint.TASK, task.describe())
            checkpoint.atomic_write(out / checkpoint.CONFIG, config.to_json().encode())
        except (ValueError, OSError) as err:  # the folder is ours (claimed above): leave it as found
            checkpoint.unlock_run_dir(lock)
            checkpoint.release_run_dir(out, created)
            raise UsageError(f"--out {err}") from None
    return out, created, lock, record, task, config
