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
        config = Config.from_run(checkpoint.read_json(out / checkpoint.CONFIG))
        if config.linear_skip is None:  # a folder from before config.json kept its defaults: the state says
            names = checkpoint.tree_names(out / checkpoint.CHECKPOINT)
            config = dataclasses.replace(config, linear_skip=any("/means_skip/" in n for n in names))
        if "epochs" in args:
            config = dataclasses.replace(config, epochs=args["epochs"])
        task, config = reattach(task, record, config)
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


def _data_run(args: dict):
    """``--data``: the task (the data's, or the one named), its record with the dataset's, and the
    config with ``samples`` the data's training rows."""
    from mdnjax import datasets, train

    if "samples" in args:
        raise UsageError("--samples does not apply with --data: training uses the data's rows (less --holdout)")
    base, record = task_from_flags(args) if ("task" in args or "prior" in args) else (None, {})
    try:
        data = datasets.open_dataset(args["data"])
        task = datasets.task_for(data, base)
        config = config_from_flags(args, task)
        task, config = train.with_data(task, data, config)
    except ValueError as err:
        raise UsageError(f"--data {err}") from None
    return task, {**record, "data": data.describe()}, config


def reattach(task, record: dict, config):
    """A resumed run trained from data: the dataset opened again, refused when it changed."""
    from mdnjax import datasets, train

    recorded = record.get("task", {}).get("data")
    if recorded is None:
        return task, config
    try:
        data = datasets.open_dataset(recorded["path"])
    except ValueError as err:
        raise UsageError(f"the run's data: {err}") from None
    if data.fingerprint != recorded["fingerprint"]:
        raise UsageError(
            f"the data at {recorded['path']} changed since the run trained on them (their fingerprint differs): "
            "restore them to continue"
        )
    return train.with_data(datasets.task_for(data, task), data, config)


def run_task(out: Path, record: dict):
    """The task of a run folder: a built-in one from task.json, or the user's, re-imported from
    its recorded file (refused when gone or changed)."""
    from mdnjax import checkpoint, tasks, userspec

    spec = record.get("task", {})
    if "spec" in spec:
        return userspec.reload(spec)
    if "data" in spec and "builtin" not in spec:
        return None  # the data's own task: ``reattach`` finds it
    return tasks.from_record(checkpoint.read_json(out / checkpoint.TASK))


def _rounds(args: dict) -> dict | None:
    """The rounds' settings of a new run (``--rounds``), None without it."""
    from mdnjax.cli.flags import ROUND_FLAGS, round_settings

    if "rounds" not in args:
        given = [flag_name(k) for k in ROUND_FLAGS if k in args]
        if given:
            raise UsageError(f"{' '.join(given)} set(s) sequential rounds: add --rounds R")
        return None
    return round_settings(args)


def _numpy(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def new_run(args: dict, lead: bool):
    if "data" in args:
        task, task_record, config = _data_run(args)
    else:
        task, task_record = task_from_flags(args)
        config = config_from_flags(args, task)
    check_plot_y(task, args.get("plot_y"))
    check_plot_y(task, args.get("observed"), "--observed")
    rounds = _rounds(args)
    checkpoint_every = args.get("checkpoint_every", DEFAULTS["checkpoint_every"])
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    from mdnjax import checkpoint, parallel  # JAX: imported once the flags are known good

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
    if rounds is not None:
        record["rounds"] = rounds
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
