"""A user's task named on the command line: ``path/to/file.py:NAME`` or ``package.module:NAME``.

NAME is a ``mdnjax.Task`` or a function of no arguments returning one. The run folder records the
spec, the file's absolute path and its SHA-256, so that ``--resume`` and ``calibrate`` re-import the
same code, and refuse in one line when the file is gone or has changed.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.py"
    >>> _ = path.write_text(
    ...     "import mdnjax\\n"
    ...     "def simulate(rng, n):\\n"
    ...     "    theta = rng.uniform(size=n)\\n"
    ...     "    return theta, rng.binomial(10, theta)\\n"
    ...     "TASK = mdnjax.Task('coin', simulate, support=[(0.0, 1.0)])\\n"
    ... )
    >>> task, record = load(f"{path}:TASK")
    >>> task.name, record["sha256"] == file_hash(path)
    ('coin', True)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from mdnjax.simulation import UserCodeError
from mdnjax.task import Task


class SpecError(ValueError):
    """A task spec that does not resolve; the message is one line."""


def file_hash(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _split(spec: str) -> tuple[str, str]:
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise SpecError(f"--task {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    return where, name


def _import_file(path: Path):
    if not path.is_file():
        raise SpecError(f"--task: no file {path}")
    module_name = f"mdnjax_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"--task: cannot import {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
        sys.modules.pop(module_name, None)
        raise UserCodeError(f"importing {path}", err) from err
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise SpecError(f"--task: no module {name!r} (is it installed, or on PYTHONPATH?)") from None
        raise UserCodeError(f"importing {name}", err) from err
    except Exception as err:  # noqa: BLE001
        raise UserCodeError(f"importing {name}", err) from err


def load(spec: str):
    """The task a spec names, and the record that finds it again.

    Returns:
        (task, {"spec", "file", "sha256"})

    Raises:
        SpecError: the spec does not resolve to a task.
        UserCodeError: the user's module or function raised.
    """
    where, name = _split(spec)
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    module = _import_file(Path(where).resolve()) if is_file else _import_module(where)
    if not hasattr(module, name):
        raise SpecError(f"--task {spec!r}: {where} defines no {name!r}")
    obj = getattr(module, name)
    if not isinstance(obj, Task) and callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except Exception as err:  # noqa: BLE001
            raise UserCodeError(f"{name}()", err) from err
    if not isinstance(obj, Task):
        raise SpecError(
            f"--task {spec!r}: {name} is a {type(obj).__name__}, not a mdnjax.Task (or a function returning one)"
        )
    file = Path(getattr(module, "__file__", "") or "")
    record = {"spec": spec, "file": str(file.resolve()) if file.name else None}
    record["sha256"] = file_hash(file) if file.name and file.is_file() else None
    return obj, record


def reload(record: dict):
    """The task of a recorded spec, from the same file, unchanged since the run.

    Raises:
        SpecError: the file is gone or has changed.
    """
    file = record.get("file")
    if file:
        if not Path(file).is_file():
            raise SpecError(f"the task file {file} is gone: the run cannot re-import its task")
        if record.get("sha256") and file_hash(file) != record["sha256"]:
            raise SpecError(f"the task file {file} has changed since the run (SHA-256 differs): restore it to continue")
        _, name = _split(record["spec"])
        if record["spec"].rpartition(":")[0].endswith(".py") or "/" in record["spec"]:
            return load(f"{file}:{name}")[0]
    return load(record["spec"])[0]
