"""One call of a task's simulator: its output checked and θ moved to the fitting space.

``draw`` calls the task's simulator once and checks what it returns (shapes, dtypes, finite
values, θ inside the declared support). Chunks of draws come from ``mdnjax.sources``; their
layouts from ``mdnjax.layout``.

An exception raised inside the user's simulator becomes a ``UserCodeError`` that names the
function and keeps the original exception (and its frames) as ``__cause__``.

Example:
    >>> import numpy as np
    >>> from mdnjax import tasks
    >>> u, y, stats = draw(tasks.BetaBinomial(), np.random.default_rng(0), 1000, "unconstrained")
    >>> u.dtype, y.dtype, stats["moved_to_interior"]
    (dtype('float32'), dtype('int64'), 0)
"""

from __future__ import annotations

import re
import warnings

import numpy as np

Y_MIN, Y_MAX = -(2**31), 2**31 - 1  # the layouts keep observations as 32-bit integers


class UserCodeError(Exception):
    """An exception raised inside a user's function; ``__cause__`` holds the original."""

    def __init__(self, function: str, err: BaseException):
        super().__init__(f"{function} raised {type(err).__name__}: {err}")
        self.function = function


class SimulationError(ValueError):
    """The simulator returned something that cannot be trained on; the message is one line."""


def _function_name(task) -> str:
    fn = getattr(task, "_simulate", None) or task.simulate
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    return f"{task.name}: simulate ({name})"


def _as_column(a: np.ndarray, what: str, n: int) -> np.ndarray:
    if a.shape == (n, 1):
        return a[:, 0]
    if a.shape != (n,):
        raise SimulationError(f"simulate returned {what} of shape {a.shape}; expected ({n},) or ({n}, 1)")
    return a


def _as_rows(a: np.ndarray, what: str, n: int, width: int) -> np.ndarray:
    if a.shape != (n, width):
        raise SimulationError(f"simulate returned {what} of shape {a.shape}; expected ({n}, {width})")
    return a


def draw(task, rng: np.random.Generator, n: int, space: str, dtype=np.float32, allow_nan: bool = False):
    """``n`` checked simulations with θ in the fitting space.

    Args:
        task: a ``mdnjax.Task``.
        rng: the generator to draw from.
        n: number of simulations.
        space: ``"raw"`` (θ as drawn) or ``"unconstrained"`` (u = f(θ), ``Bound.forward``).

    Returns:
        theta: (n,) in the fitting space, ``dtype`` (float32 unless asked); (n, D) for D parameters
            (each transformed by its own ``Bound``).
        y: integer (n,), or (n, M) for vector observations; float64 for a continuous observation
            (float y, unless the task declares ``y_kind="counts"``), finite (``allow_nan``: NaN
            marks the padding of a set of trials).
        stats: ``moved_to_interior`` (draws on a bound moved inside), ``warnings`` (messages the
            simulator emitted, by text), ``shape`` (the θ shape seen).

    Raises:
        UserCodeError: the simulator raised.
        SimulationError: wrong shapes or dtypes, non-finite values, θ outside the support.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = task.simulate(rng, n)
        except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
            raise UserCodeError(_function_name(task), err) from err
    try:
        theta, y = out
    except (TypeError, ValueError):
        raise SimulationError(f"simulate must return a pair (theta, y), got {type(out).__name__}") from None
    theta, y, stats = check(task, theta, y, n, space, dtype, allow_nan)
    stats["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    return theta, y, stats


def check(
    task, theta, y, n: int, space: str, dtype=np.float32, allow_nan: bool = False, origin: str = "simulate returned"
):
    """``draw``'s checks and transform on pairs already made (a simulator's output, or stored
    simulations): the same (θ, y, stats) as ``draw`` gives for the same arrays, ``warnings`` empty.
    ``origin`` opens each error message (``"simulate returned"``, ``"the data hold"``)."""
    theta, y = np.asarray(theta), np.asarray(y)
    seen = theta.shape
    if not np.issubdtype(theta.dtype, np.floating):
        raise SimulationError(f"{origin} theta of dtype {theta.dtype}; expected a float array")
    counts = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    declared_kind = getattr(task, "y_kind", None)
    if not counts and not np.issubdtype(y.dtype, np.floating):
        raise SimulationError(f"{origin} y of dtype {y.dtype}; expected an integer or float array")
    if not counts and declared_kind == "counts":
        raise SimulationError(
            f"{origin} y of dtype {y.dtype}; the task declares integer observations (y_kind='counts'): "
            "return integers, or declare y_kind='continuous'"
        )
    if declared_kind == "continuous" or not counts:
        y = y.astype(np.float64)
    dim = len(task.support)
    theta = _as_column(theta, "theta", n) if dim == 1 else _as_rows(theta, "theta", n, dim)
    if y.ndim == 2 and y.shape[1] == 0:
        raise SimulationError(f"{origin} y of shape {y.shape}: an observation needs at least one count")
    y = _as_column(y, "y", n) if y.ndim < 2 or y.shape[1] == 1 else _as_rows(y, "y", n, y.shape[1])
    if y.dtype == np.float64:
        _check_finite_y(y, n, allow_nan, origin)
    elif y.size and (y.min() < Y_MIN or y.max() > Y_MAX):
        bad = y.max() if y.max() > Y_MAX else y.min()
        raise SimulationError(
            f"{origin} y = {int(bad)}: observations must lie in {Y_MIN}..{Y_MAX} (32-bit integers); "
            "rescale or offset your counts"
        )
    lo, hi = getattr(task, "y_range", (-np.inf, np.inf))
    if y.size and (np.nanmin(y) < lo or np.nanmax(y) > hi):
        bad = np.nanmin(y) if np.nanmin(y) < lo else np.nanmax(y)
        raise SimulationError(f"{origin} y = {bad:g}, outside the task's declared y_range ({lo:g}, {hi:g})")
    declared = getattr(task, "y_shape", None)
    if declared is not None and tuple(y.shape[1:]) != tuple(declared):
        expected = f"({n}, {declared[0]})" if declared else f"({n},)"
        raise SimulationError(f"{origin} y of shape {y.shape}; the task declares {expected} (y_shape)")
    bad = ~np.isfinite(theta)
    if bad.any():
        raise SimulationError(
            f"{origin} {int(bad.sum())} non-finite theta of {n} "
            f"(first at index {int(np.argmax(bad.reshape(n, -1).any(axis=1)))})"
        )
    columns = theta.reshape(n, dim)
    moved = 0
    out = np.empty(columns.shape, np.float64 if space == "unconstrained" else columns.dtype)
    for d, bound in enumerate(task.support):
        col = columns[:, d]
        outside = (col < bound.low) | (col > bound.high)
        if outside.any():
            first = float(col[np.argmax(outside)])
            which = f"theta[:, {d}]" if dim > 1 else "theta"
            raise SimulationError(
                f"{origin} {int(outside.sum())} {which} of {n} outside the declared support "
                f"{bound.describe()} (e.g. {first:g})"
            )
        if space == "unconstrained":
            inside, m = bound.interior(col)  # float64, before any cast
            out[:, d], moved = bound.forward(inside), moved + m
        else:
            out[:, d] = col
    theta = out[:, 0] if dim == 1 else out
    stats = {"moved_to_interior": moved, "warnings": [], "shape": seen}
    return theta.astype(dtype), y, stats


def _check_finite_y(y: np.ndarray, n: int, allow_nan: bool, origin: str) -> None:
    """Refuses rows of a continuous y that hold ±inf (or NaN, unless NaN marks padding)."""
    bad = np.isinf(y) if allow_nan else ~np.isfinite(y)
    rows = bad.reshape(n, -1).any(axis=1)
    if rows.any():
        raise SimulationError(
            f"{origin} {int(rows.sum()):,} of {n:,} y rows holding NaN or infinite values "
            f"(first at index {int(np.argmax(rows))}): return finite observations, or leave those simulations out"
        )


def observation_kind(task, seed: int = 0) -> str | None:
    """``"counts"`` (integer y: every layout) or ``"continuous"`` (float y: the per-sample layout):
    the task's declaration (``Task.y_kind``) when it makes one, otherwise the dtype of a few draws.
    None when the simulator fails (``fit`` reports that)."""
    declared = getattr(task, "y_kind", None)
    if declared is not None:
        return declared
    try:
        y = draw(task, np.random.default_rng([seed, 0xC0DE]), 16, "raw", allow_nan=True)[1]
    except (UserCodeError, SimulationError):
        return None
    return "continuous" if y.dtype == np.float64 else "counts"


def merge_stats(total: dict, stats: dict) -> None:
    total["moved_to_interior"] += stats["moved_to_interior"]
    total["warnings"].extend(stats["warnings"])
    total["theta_shape"] = list(stats["shape"][1:])


def summarize_warnings(messages: list[str], most: int = 5) -> list[str]:
    """One line per distinct warning, with its count: messages that differ only in their numbers
    (``draw 17 overflowed``, ``draw 18 overflowed``) are one warning, shown by its first message;
    at most ``most`` lines, then one line for the rest.

    Example:
        >>> summarize_warnings(["draw 1 overflowed", "draw 2 overflowed", "bad prior"])
        ['simulate warned 2× — draw 1 overflowed', 'simulate warned — bad prior']
    """
    groups: dict[str, list] = {}
    for m in messages:
        key = re.sub(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", "#", m)
        groups.setdefault(key, [m, 0])[1] += 1
    lines = [f"simulate warned {c}× — {m}" if c > 1 else f"simulate warned — {m}" for m, c in groups.values()]
    if len(lines) > most:
        rest = sum(c for _, c in list(groups.values())[most:])
        lines = lines[:most] + [f"simulate warned {rest:,}× more, in {len(lines) - most:,} other kinds of warning"]
    return lines


def observation_shape(task, seed: int = 0) -> tuple[int, ...] | None:
    """The shape of one observation: ``()`` for a scalar y, ``(M,)`` for a vector of M counts.

    The task's declaration (``Task.y_shape``) when it makes one; otherwise a few checked draws
    from a random stream of their own. None when the simulator fails (``fit`` reports that).
    """
    declared = getattr(task, "y_shape", None)
    if declared is not None:
        return tuple(declared)
    try:
        y = draw(task, np.random.default_rng([seed, 0xC0DE]), 16, "raw", allow_nan=True)[1]
    except (UserCodeError, SimulationError):
        return None
    return () if y.ndim == 1 else (int(y.shape[1]),)
