"""The dataset folder's format: manifest, shards and their checksums; ``Dataset`` (an opened folder)
and ``Arrays`` (arrays in memory read the same way); opening with every shard verified, writing
arrays as a new folder, and the task a dataset trains (see ``mdnjax.datasets``)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np

from mdnjax.checkpoint import atomic_write, atomic_writer
from mdnjax.task import Task, as_bounds

FORMAT, VERSION = "mdnjax-dataset", 1
MANIFEST, SHARDS = "manifest.json", "shards"
ONE_SHARD_MAX = 10_000_000  # sources.CHUNK: up to this many draws, one shard from default_rng(seed)
SHARD_SIZE = 2_000_000  # sources.STREAM_CHUNK: beyond it, shards of the chunks a run streams


class DatasetError(ValueError):
    """A dataset that cannot be written or read as asked; the message is one line."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Hashing:
    """A file object that hashes what is written through it."""

    def __init__(self, f):
        self.f, self.hash = f, hashlib.sha256()

    def write(self, b) -> int:
        self.hash.update(b)
        return self.f.write(b)


def _save(path, a: np.ndarray) -> str:
    """Writes ``a`` as ``.npy`` at ``path`` atomically; returns the file's SHA-256 (hashed as written)."""
    with atomic_writer(path) as f:
        w = _Hashing(f)
        np.lib.format.write_array(w, np.ascontiguousarray(a), allow_pickle=False)
    return w.hash.hexdigest()


def _file_sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_rows(path, lo: int, hi: int, out: np.ndarray) -> None:
    """Rows ``lo:hi`` of the ``.npy`` at ``path`` into ``out``, read straight from the file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if fortran or dtype != out.dtype or tuple(shape[1:]) != out.shape[1:]:
            raise DatasetError(f"{path}: an array of {dtype} {shape}, not the {out.dtype} rows the manifest records")
        row = out[0].nbytes if len(out) else 0
        f.seek(f.tell() + lo * row)
        if f.readinto(memoryview(out).cast("B")) != (hi - lo) * row:
            raise DatasetError(f"{path} is truncated")


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _shape(a: np.ndarray) -> list[int]:
    return [int(v) for v in a.shape[1:]]


class Dataset:
    """An opened dataset folder: ``count`` rows of (θ, y) over its shards, in order."""

    def __init__(self, path: Path, manifest: dict, records: list[dict]):
        self.path, self.manifest, self.records = path, manifest, records
        self.starts = np.cumsum([0] + [r["rows"] for r in records])
        self.count = int(self.starts[-1])

    @property
    def y_kind(self) -> str:
        return self.manifest["y"]["kind"]

    @property
    def y_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["y"]["shape"])

    @property
    def support(self):
        return as_bounds([tuple(b) for b in self.manifest["support"]]) if self.manifest.get("support") else None

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the shards' checksums, in order: equal exactly when the rows are."""
        text = "".join(r["theta_sha256"] + r["y_sha256"] for r in self.records)
        return _sha(text.encode())

    def describe(self) -> dict:
        """The dataset's record in a run folder: where it is and what it held."""
        task = self.manifest.get("task") or {}
        return {
            "path": str(self.path.resolve()),
            "rows": self.count,
            "fingerprint": self.fingerprint,
            "task": task.get("name"),
        }

    def read(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``lo:hi`` as (θ, y) arrays in memory (read into them: no other copy)."""
        lo, hi = max(0, lo), min(hi, self.count)
        m = self.manifest
        theta = np.empty((max(hi - lo, 0), *m["theta"]["shape"]), m["theta"]["dtype"])
        y = np.empty((max(hi - lo, 0), *m["y"]["shape"]), m["y"]["dtype"])
        for i, r in enumerate(self.records):
            a, b = max(lo, int(self.starts[i])), min(hi, int(self.starts[i + 1]))
            if a >= b:
                continue
            base, s = self.path / SHARDS / f"{r['index']:05d}", int(self.starts[i])
            _read_rows(f"{base}.theta.npy", a - s, b - s, theta[a - lo : b - lo])
            _read_rows(f"{base}.y.npy", a - s, b - s, y[a - lo : b - lo])
        return theta, y

    def chunks(self, lo: int, hi: int, size: int):
        """(θ, y) of rows ``lo:hi`` in pieces of at most ``size`` rows."""
        for a in range(lo, hi, size):
            yield self.read(a, min(hi, a + size))


class Arrays:
    """Arrays in memory with a dataset's reading interface (``mdnjax.fit_arrays``)."""

    def __init__(self, theta, y, support=None):
        theta, y = np.asarray(theta), np.asarray(y)
        _check_pair(theta, y)
        self.theta, self.y, self.count = theta, y, len(theta)
        counts = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
        self.y_kind, self.y_shape = ("counts" if counts else "continuous"), tuple(y.shape[1:])
        self.support = None if support is None else as_bounds(support)
        self.fingerprint = _sha(_npy(theta) + _npy(y))
        self.path = None

    def describe(self) -> dict:
        return {"path": None, "rows": self.count, "fingerprint": self.fingerprint, "task": None}

    def read(self, lo: int, hi: int):
        return self.theta[lo:hi], self.y[lo:hi]

    def chunks(self, lo: int, hi: int, size: int):
        for a in range(lo, hi, size):
            yield self.read(a, min(hi, a + size))


def _check_pair(theta: np.ndarray, y: np.ndarray) -> None:
    if theta.ndim == 0 or y.ndim == 0:
        raise DatasetError("theta and y must be arrays with one row per simulation")
    if len(theta) != len(y):
        raise DatasetError(f"theta has {len(theta):,} rows and y {len(y):,}: one row of each per simulation")
    if len(theta) == 0:
        raise DatasetError("the data hold no simulations")
    if not np.issubdtype(theta.dtype, np.number):
        raise DatasetError(f"theta has dtype {theta.dtype}; expected numbers")
    if not np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.bool_):
        raise DatasetError(f"y has dtype {y.dtype}; expected numbers")


def task_record(task, spec: dict | None = None) -> dict:
    """The task's record in a manifest: ``describe()`` and, for a user's file, its spec and hash."""
    record = dict(task.describe())
    if spec is not None:
        record["spec"] = spec
    return record


def _manifest(task_rec, support, theta: np.ndarray, y: np.ndarray, kind: str) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": task_rec,
        "support": None if support is None else [[b.low, b.high] for b in support],
        "theta": {"dtype": "float64", "shape": _shape(theta)},
        "y": {"dtype": str(y.dtype), "shape": _shape(y), "kind": kind},
        "parts": [],
    }


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if not file.is_file():
        what = "does not exist" if not path.exists() else f"holds no {MANIFEST}"
        raise DatasetError(f"{path} {what}: not a dataset (write one with python -m mdnjax simulate)")
    try:
        m = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{file} cannot be read: {err}") from None
    if m.get("format") != FORMAT or not isinstance(m.get("version"), int):
        raise DatasetError(f"{file} is not a {FORMAT} manifest")
    if m["version"] > VERSION:
        raise DatasetError(f"{file} is format version {m['version']}; this mdnjax reads up to {VERSION}: upgrade it")
    return m


def _shard_record(path: Path, index: int) -> dict | None:
    file = path / SHARDS / f"{index:05d}.json"
    return json.loads(file.read_text()) if file.is_file() else None


def _verify(path: Path, record: dict) -> str | None:
    """None when the shard's arrays match its record, else what is wrong (one phrase)."""
    base = path / SHARDS / f"{record['index']:05d}"
    for part in ("theta", "y"):
        file = Path(f"{base}.{part}.npy")
        if not file.is_file():
            return f"{file.name} is missing"
        if _file_sha(file) != record[f"{part}_sha256"]:
            return f"{file.name} is corrupted or truncated (its SHA-256 differs from the record)"
    return None


def open_dataset(path, verify: bool = True) -> Dataset:
    """Opens a dataset folder; with ``verify`` every shard is checked against its record.

    Raises:
        DatasetError: no manifest, a shard missing, incomplete, corrupted or truncated (named), or
            no simulations at all.
    """
    path = Path(path)
    m = _read_manifest(path)
    records = []
    for part in m["parts"]:
        for index in range(part["first"], part["first"] + part["shards"]):
            r = _shard_record(path, index)
            if r is None:
                raise DatasetError(
                    f"{path}: shard {index} of the part with seed {part['seed']} is incomplete: "
                    "run the same simulate command again to finish it"
                )
            problem = _verify(path, r) if verify else None
            if problem:
                raise DatasetError(f"{path}: shard {index}: {problem}; delete it and simulate again to redo it")
            records.append(r)
    if not records:
        raise DatasetError(f"{path} holds no simulations")
    return Dataset(path, m, records)


def _sizes(samples: int, shard_size: int | None) -> tuple[list[int], str]:
    if shard_size is None:
        if samples <= ONE_SHARD_MAX:
            return [samples], "run"
        shard_size = SHARD_SIZE
    return [min(shard_size, samples - s) for s in range(0, samples, shard_size)], "shard"


def _write_shard(path: Path, index: int, seed, theta: np.ndarray, y: np.ndarray) -> dict:
    base = path / SHARDS / f"{index:05d}"
    t = _save(f"{base}.theta.npy", np.asarray(theta, np.float64))
    v = _save(f"{base}.y.npy", y)
    record = {"index": index, "rows": int(len(theta)), "seed": seed, "theta_sha256": t, "y_sha256": v}
    atomic_write(f"{base}.json", json.dumps(record).encode())
    return record


def write_arrays(
    theta, y, out, support=None, task=None, names=None, shard_size: int = SHARD_SIZE, drop_nonfinite: bool = False
) -> Dataset:
    """Stores simulations made anywhere (arrays θ (n,) or (n, D), y (n,) or (n, M)) as a new
    dataset folder ``out`` in shards of ``shard_size`` rows (rows with NaN or ±inf refused, or
    with ``drop_nonfinite`` left out and counted in the manifest); ``support`` ((low, high) per parameter) lets it train
    without a task. Refuses a folder that already holds a dataset."""
    out = Path(out)
    theta, y = np.asarray(theta), np.asarray(y)
    _check_pair(theta, y)
    if (out / MANIFEST).exists():
        raise DatasetError(f"{out} already holds a dataset: import into a new folder")
    bounds = as_bounds(support) if support is not None else (task.support if task is not None else None)
    counts = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    y = y.astype(np.int64) if counts else y.astype(np.float64)
    bad = ~np.isfinite(theta.reshape(len(theta), -1)).all(axis=1)
    if not counts:
        bad |= ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any() and not drop_nonfinite:
        raise DatasetError(
            f"{int(bad.sum()):,} of {len(theta):,} rows hold NaN or infinite values "
            f"(first at row {int(np.argmax(bad))}): leave them out, or drop them (--drop-nonfinite)"
        )
    dropped = int(bad.sum())
    if dropped:
        theta, y = theta[~bad], y[~bad]
        _check_pair(theta, y)
    rec = task_record(task) if task is not None else None
    if rec is not None and names:
        rec["names"] = list(names)
    m = _manifest(rec, bounds, theta, y, "counts" if counts else "continuous")
    sizes = _sizes(len(theta), shard_size)[0]
    m["parts"].append({"seed": None, "samples": len(theta), "shards": len(sizes), "first": 0, "seeding": "imported"})
    m["parts"][0]["sizes"] = sizes
    if names:
        m["names"] = list(names)
    m["parts"][0]["dropped_nonfinite"] = dropped
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, len(theta), shard_size)):
        _write_shard(out, i, None, theta[lo : lo + shard_size], y[lo : lo + shard_size])
    atomic_write(out / MANIFEST, json.dumps(m, indent=1).encode())
    return open_dataset(out)


def _no_simulator(rng, n):
    raise RuntimeError("this task has no simulator: it was made from stored simulations")


def task_for(data, task=None):
    """The task that stored simulations train: ``task`` when given (checked against the data's
    record and shapes), else the one the manifest records (a built-in, or a user's file found by
    its spec and hash), else a task of the recorded support without a simulator.

    Raises:
        DatasetError: the task differs from the data's, or neither names θ's support.
    """
    from mdnjax import tasks

    m = getattr(data, "manifest", {})
    recorded = m.get("task")
    if task is not None:
        task = tasks.from_name(task) if isinstance(task, str) else task
        mine = {k: v for k, v in task_record(task).items() if k != "spec"}
        theirs = {k: v for k, v in (recorded or {}).items() if k not in ("spec", "names")}
        if recorded is not None and mine != theirs:
            raise DatasetError(f"the data hold simulations of {json.dumps(theirs)}, not of {json.dumps(mine)}")
    elif recorded is not None and (recorded.get("spec") or recorded.get("name") in tasks.REGISTRY):
        task = _task_of(recorded)
    elif data.support is not None:
        name = (recorded or {}).get("name") or (Path(data.path).name if data.path else "arrays")
        task = Task(name, _no_simulator, support=data.support, y_kind=data.y_kind)
    else:
        raise DatasetError("the data record no task and no support for theta: name the task, or give support=")
    theta, _ = data.read(0, 1)
    dim = 1 if theta.ndim == 1 else theta.shape[1]
    if dim != len(task.support):
        raise DatasetError(f"the data hold theta with {dim} parameters; the {task.name} task has {len(task.support)}")
    declared = getattr(task, "y_shape", None)
    if declared is not None and tuple(declared) != tuple(data.y_shape):
        raise DatasetError(f"the data hold y of shape {data.y_shape}; the {task.name} task declares {tuple(declared)}")
    return task


def _task_of(spec):
    from mdnjax import tasks, userspec

    if isinstance(spec, Task):
        return spec
    if spec.get("spec"):
        return userspec.reload(spec["spec"])  # the file as it was when simulated
    return tasks.from_record({k: v for k, v in spec.items() if k != "support"})


def _registered(task) -> bool:
    from mdnjax import tasks

    return task.name in tasks.REGISTRY and type(task) is tasks.REGISTRY[task.name]


def heldout_rows(count: int, share: float, cap: int) -> int:
    """Rows at the end of a dataset held out of training: ``share`` of them, at most ``cap``."""
    return min(math.floor(share * count), cap)
