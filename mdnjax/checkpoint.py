"""The on-disk format of a run folder: file names, atomic writes, npz trees, one loader each.

A run folder holds:

| file | what it holds |
|---|---|
| ``run.json`` | the run's claim on the folder; how it was started (task, command-line options) |
| ``config.json`` | the ``Config``, its defaults filled in when training starts (the layout as asked) |
| ``task.json`` | the task's record (``Task.describe()``) |
| ``posterior.npz`` / ``posterior.json`` | the trained posterior: parameters and what ``load`` needs |
| ``checkpoint.npz`` | the resumable training state (``train.TrainState`` and the losses) |
| ``metrics.json`` | losses, timings, metrics |
| ``.lock`` | held (an advisory lock) by the one process training or resuming the run |

Every file is written through a temporary file, fsync and rename, with the permissions a plain
``open`` would give (the process umask); npz files are read with ``allow_pickle=False``.

Example:
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "tree.npz"
    >>> save_tree(path, {"a": np.arange(3), "b": {"c": np.ones(2)}})
    >>> load_tree(path, {"a": np.zeros(3, int), "b": {"c": np.zeros(2)}})["b"]["c"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import jax
import numpy as np

RUN = "run.json"
CONFIG = "config.json"
TASK = "task.json"
POSTERIOR = "posterior.npz"
POSTERIOR_SPEC = "posterior.json"
CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.json"
LOCK = ".lock"


class FormatError(ValueError):
    """A file of a run folder is missing, truncated, corrupt or does not match; one line."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path):
    """A binary file that becomes ``path`` (fsync and rename) when the block ends without an
    error, and is removed when it raises: ``path`` is never half-written.

    The file gets mode 0666 minus the umask, as ``open`` would give it (``mkstemp`` alone: 0600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, fsync and rename (``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(data)


def write_json(path, payload) -> None:
    atomic_write(path, json.dumps(payload, indent=2).encode())


def read_json(path) -> dict:
    """A JSON file of a run folder (``FormatError`` if missing or unreadable)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path.parent} has no {path.name}: not a run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{path} is unreadable ({err})") from None


def _flat(tree, prefix: str = "") -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)  # noqa: E731
    return {prefix + name(path): np.asarray(v) for path, v in leaves}


def save_tree(path, tree, **extra) -> None:
    """Saves a pytree (and named ``extra`` arrays) as a flat ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **_flat(tree, "tree/"), **{f"extra/{k}": np.asarray(v) for k, v in extra.items()})
    atomic_write(path, buf.getvalue())


def load_tree(path, template, extra: tuple[str, ...] = (), *, finite: bool = False):
    """Reads ``save_tree``'s file into the structure and dtypes of ``template``.

    Args:
        path: the ``.npz``.
        template: a pytree with the expected structure, shapes and dtypes.
        extra: names of extra arrays to return too.
        finite: also require every array of the tree to be finite.

    Returns:
        The tree, or ``(tree, {name: array})`` when ``extra`` is given.

    Raises:
        FormatError: missing, truncated, corrupt or mismatched.
    """
    names = _flat(template, "tree/")
    with _npz(path) as data:
        arrays = {name: data[name] for name in names}
        more = {k: data[f"extra/{k}"] for k in extra}
    for name, ref in names.items():
        got = arrays[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise FormatError(
                f"{path}: {name[5:]!r} is {got.dtype}{list(got.shape)}, expected {ref.dtype}{list(ref.shape)}"
            )
        if finite and np.issubdtype(got.dtype, np.floating) and not np.all(np.isfinite(got)):
            raise FormatError(f"{path}: {name[5:]!r} holds non-finite values")
    leaves, treedef = jax.tree_util.tree_flatten(template)
    tree = jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in names])
    return (tree, more) if extra else tree


def tree_names(path) -> list[str]:
    """The names of the arrays of ``save_tree``'s file (``FormatError`` if missing or corrupt)."""
    with _npz(path) as data:
        return list(data.files)


@contextlib.contextmanager
def _npz(path):
    """An ``.npz`` opened without pickles; missing, corrupt or lacking an array read: ``FormatError``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            yield data
    except FileNotFoundError:
        raise FormatError(f"no {Path(path).name} in {Path(path).parent}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise FormatError(f"{path} is corrupt or incomplete ({type(err).__name__}: {err})") from None


def claim_run_dir(path: Path, record: dict) -> bool:
    """Creates ``path`` (if needed) and claims it for one run by creating ``run.json`` exclusively.

    Returns:
        Whether the folder was created here (so a failed run may remove it).

    Raises:
        FormatError: ``path`` is a file, not empty, not writable, or claimed by another run.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FormatError(f"{path} is a file, not a folder")
    created = False
    try:
        path.mkdir(parents=True)
        created = True
    except FileExistsError:
        pass
    except OSError as err:
        raise FormatError(f"cannot create {path}: {err.strerror or err}") from None
    try:
        fd = os.open(path / RUN, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise FormatError(f"{path} is already used by another run: choose a new folder") from None
    except OSError as err:
        raise FormatError(f"cannot write to {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(record, indent=2).encode())
    others = [p.name for p in path.iterdir() if p.name != RUN]
    if others:
        os.unlink(path / RUN)
        raise FormatError(f"{path} exists and is not empty: choose a new folder")
    return created


def lock_run_dir(path: Path) -> int:
    """Holds ``path`` for this process: an exclusive advisory lock on its ``.lock`` file, released
    when the returned descriptor is closed (``unlock_run_dir``) or the process ends, however.

    Raises:
        FormatError: another process holds the run (it is training or resuming there).
    """
    path = Path(path)
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise FormatError(f"cannot write to {path}: {err.strerror or err}") from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        pass
    except OSError:
        os.close(fd)
        raise FormatError(
            f"{path} is in use by another process (training or resuming it): wait for it to end"
        ) from None
    return fd


def unlock_run_dir(fd: int | None) -> None:
    """Lets go of a run folder held by ``lock_run_dir``."""
    if fd is not None:
        os.close(fd)


def release_run_dir(path: Path, created: bool) -> None:
    """Removes what a run that failed before training wrote (every file it made, and the folder if
    new). Call it only for a folder this process claimed (``claim_run_dir`` returned)."""
    path = Path(path)
    for name in (RUN, CONFIG, TASK, LOCK):
        try:
            (path / name).unlink(missing_ok=True)
        except OSError:
            pass
    if created:
        try:
            path.rmdir()
        except OSError:
            pass
