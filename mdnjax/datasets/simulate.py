"""Simulating a task into a dataset folder: shards with their own seeds, resumed where a killed run
stopped, written by local worker processes or by one share of many jobs (see ``mdnjax.datasets``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mdnjax import simulation
from mdnjax.checkpoint import atomic_write
from mdnjax.datasets.folder import (
    MANIFEST,
    SHARDS,
    Dataset,
    DatasetError,
    _manifest,
    _read_manifest,
    _registered,
    _shard_record,
    _sizes,
    _task_of,
    _verify,
    _write_shard,
    open_dataset,
    task_record,
)


def _simulate_shard(task, path: Path, index: int, seed, rows: int) -> dict:
    rng = np.random.default_rng(seed)
    theta, y, _ = simulation.draw(task, rng, rows, "raw", np.float64)
    return _write_shard(path, index, seed, theta, y)


_worker_task: list = []  # a --workers process's task, set once as it starts (that process's own state)


def _start_worker(task_or_record) -> None:
    _worker_task.append(_task_of(task_or_record))


def _worker(args):  # one shard in a --workers process
    path, index, seed, rows = args
    return _simulate_shard(_worker_task[0], Path(path), index, seed, rows)


def _jax_started() -> bool:
    """Whether this process has started JAX's runtime (its threads make forking unsafe)."""
    import sys

    bridge = sys.modules.get("jax._src.xla_bridge")
    check = getattr(bridge, "backends_are_initialized", None)
    return True if bridge is not None and check is None else bool(check and check())


def _context(task):
    """Forked workers start at once and inherit the task (the command line: NumPy simulators,
    JAX not started); otherwise fresh processes that re-import the task from its record."""
    import multiprocessing as mp

    fork = getattr(task, "simulator", "numpy") == "numpy" and "fork" in mp.get_all_start_methods()
    return mp.get_context("fork" if fork and not _jax_started() else "spawn")


def simulate(
    task,
    samples: int,
    out,
    seed: int = 0,
    shard_size: int | None = None,
    workers: int = 1,
    share: tuple[int, int] = (0, 1),
    spec: dict | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Dataset | None:
    """Simulates ``samples`` pairs of ``task`` into the dataset folder ``out`` (created, resumed
    or appended to: a new seed adds a part; the same seed and size finish what is missing).

    Args:
        share: ``(i, n)``: this process writes shards i, i + n, … only (any scheduler can run the n
            shares, on one shared folder); the dataset opens once every share is done.
        workers: local processes (the task must be a built-in or a user's file: ``spec``).
        spec: the user's task-file record (``userspec.load``), so workers and readers find the task.
        progress: called with (rows done, rows planned, seconds) after each shard.

    Returns:
        The opened ``Dataset``, or None when shards of other shares are still missing.
    """
    if isinstance(task, str):
        from mdnjax import tasks

        task = tasks.from_name(task)
    out = Path(out)
    if samples < 1:
        raise DatasetError(f"--samples must be at least 1, got {samples}")
    sizes, seeding = _sizes(int(samples), shard_size)
    rec = task_record(task, spec)
    manifest = _read_manifest(out) if (out / MANIFEST).is_file() else None
    if manifest is None:
        probe_t, probe_y, _ = simulation.draw(task, np.random.default_rng([seed, 0xC0DE]), 4, "raw", np.float64)
        kind = "continuous" if probe_y.dtype == np.float64 else "counts"
        manifest = _manifest(rec, task.support, probe_t, probe_y, kind)
    elif manifest.get("task") != rec:
        raise DatasetError(
            f"{out} holds simulations of {json.dumps(manifest.get('task'))}; this run simulates {json.dumps(rec)}: "
            "write to another folder"
        )
    part = next((p for p in manifest["parts"] if p["seed"] == seed), None)
    if part is not None and (part["samples"], part["sizes"]) != (samples, sizes):
        raise DatasetError(
            f"{out} already holds seed {seed} with {part['samples']:,} samples in {part['shards']} shards; "
            f"this run asks {samples:,} in {len(sizes)}: the same settings finish it, another --seed appends"
        )
    if part is None:
        first = sum(p["shards"] for p in manifest["parts"])
        part = {"seed": seed, "samples": samples, "shards": len(sizes), "first": first, "seeding": seeding}
        part["sizes"] = sizes
        manifest["parts"].append(part)
        (out / SHARDS).mkdir(
            parents=True, exist_ok=True
        )  # after the simulator's first draws: a failing one leaves nothing
        atomic_write(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    todo = []
    for k, rows in enumerate(sizes):
        index = part["first"] + k
        if k % share[1] != share[0]:
            continue
        r = _shard_record(out, index)
        if r is not None and _verify(out, r) is None:
            continue  # complete: kept
        todo.append((index, seed if seeding == "run" else [seed, k], rows))
    planned, done, t0 = sum(rows for _, _, rows in todo), 0, time.perf_counter()
    if workers > 1 and len(todo) > 1:
        import concurrent.futures as cf

        context = _context(task)
        handed = task if context.get_start_method() == "fork" or not (spec or _registered(task)) else rec
        with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(handed,)) as pool:
            jobs = [pool.submit(_worker, (str(out), i, s, rows)) for i, s, rows in todo]
            for job in cf.as_completed(jobs):
                done += job.result()["rows"]
                if progress:
                    progress(done, planned, time.perf_counter() - t0)
    else:
        for index, s, rows in todo:
            done += _simulate_shard(task, out, index, s, rows)["rows"]
            if progress:
                progress(done, planned, time.perf_counter() - t0)
    try:
        return open_dataset(out)
    except DatasetError:
        if share[1] > 1:
            return None  # other shares still running
        raise


def merge(out, sources) -> Dataset | None:
    """Merges the shares of one simulation written to separate folders (``--shard i/N`` on machines
    without a shared disk) into ``out``: every source must hold the same plan (task, support,
    dtypes and parts); each complete, verified shard is copied once. Returns the dataset when every
    shard is there, else None (shares still missing).

    Raises:
        DatasetError: sources of different tasks, seeds or sizes (both named), a damaged shard.
    """
    import shutil

    out = Path(out)
    plans = [(Path(s), _read_manifest(Path(s))) for s in sources]
    if not plans:
        raise DatasetError("merge needs at least one dataset folder")
    first, plan = plans[0]
    for path, m in plans[1:]:
        if m != plan:
            what = lambda m: f"{json.dumps(m.get('task'))} seeds {[p['seed'] for p in m['parts']]}"  # noqa: E731
            raise DatasetError(f"{first} holds {what(plan)} but {path} holds {what(m)}: they are not shares of one run")
    if (out / MANIFEST).is_file() and _read_manifest(out) != plan:
        raise DatasetError(f"{out} already holds another dataset: merge into a new folder")
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for path, _ in plans:
        for record_file in sorted((path / SHARDS).glob("*.json")):
            record = json.loads(record_file.read_text())
            if _shard_record(out, record["index"]) is not None:
                continue
            problem = _verify(path, record)
            if problem:
                raise DatasetError(f"{path}: shard {record['index']}: {problem}")
            base = f"{record['index']:05d}"
            for part in ("theta", "y"):
                shutil.copyfile(path / SHARDS / f"{base}.{part}.npy", out / SHARDS / f".{base}.{part}.npy.tmp")
                os.replace(out / SHARDS / f".{base}.{part}.npy.tmp", out / SHARDS / f"{base}.{part}.npy")
            atomic_write(out / SHARDS / f"{base}.json", json.dumps(record).encode())
    atomic_write(out / MANIFEST, json.dumps(plan, indent=1).encode())
    try:
        return open_dataset(out)
    except DatasetError:
        return None
