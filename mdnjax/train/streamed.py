"""The per-sample layout over stored simulations larger than memory: each pass streams the dataset
chunk by chunk from disk, the next chunk read while the device trains on the current one.

Used by ``mdnjax.fit`` when the pairs a per-sample run would hold exceed ``config.memory_budget``.
The validation pairs are the resident path's split (``batches.split``; at most ``VALIDATION_CAP``
kept for validation, the rest trained on), read range by range and kept resident; the moments
that standardise θ and y come from one streaming pass (per chunk, combined pairwise). A pass visits
the chunks of training rows in an order drawn from ``fold_in(key(seed), pass)`` and each chunk's
minibatches in a permutation of its rows (chunk 0 from the run's key, chunk c from ``fold_in(key,
c)``); the steps and the pass's end are the resident path's own (``passes.scan_steps``,
``close_pass``). With every training row in one chunk the run is the resident run, bitwise
(tested); with several it shuffles within chunks: a different, equally valid, run. Resuming is
bitwise, as there.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import batches, model, parallel, sources
from mdnjax.config import Config, ConfigError
from mdnjax.posterior import Posterior
from mdnjax.simulation import check
from mdnjax.train import minibatch, passes

VALIDATION_CAP = 200_000  # validation pairs kept resident, at most
CHUNK_SHARE = 8  # a chunk takes at most 1/CHUNK_SHARE of the budget (the current and the next, their copies)
# bytes per number a chunk costs on the host: float64 as read, in the fitting space, standardised
# (float64 and float32), and the device's float32 (measured: benchmarks/from_disk.py --per-sample)
HOST_BYTES = 8 * 5


def resident_bytes(rows: int, inputs: int, dim: int) -> int:
    """Bytes the resident per-sample path holds for ``rows`` pairs (host float64 copies and the
    device's float32)."""
    return rows * (inputs + dim) * (HOST_BYTES + 4)


def budget_bytes(config: Config) -> float:
    """``config.memory_budget`` GiB, or half of the memory available now."""
    if config.memory_budget is not None:
        return config.memory_budget * 2**30
    from mdnjax.resources import available_memory

    free = available_memory()
    return 0.5 * free if free is not None else math.inf


def _read(task, lo: int, hi: int, space: str, allow_nan: bool):
    theta, y = task.data.read(lo, hi)
    theta, y, _ = check(task, theta, y, hi - lo, space, np.float64, allow_nan, "the data hold")
    return theta.reshape(hi - lo, -1), np.asarray(y, np.float64).reshape(hi - lo, -1)


def _combine(a, b):
    """Two (count, mean, var) per column into one (Chan et al.'s pairwise update)."""
    (na, ma, va), (nb, mb, vb) = a, b
    n = na + nb
    safe = np.maximum(n, 1)
    delta = mb - ma
    mean = np.where(n > 0, ma + delta * nb / safe, 0.0)
    var = np.where(n > 0, (na * va + nb * vb + delta * delta * na * nb / safe) / safe, 0.0)
    return n, mean, var


def _column_moments(m: np.ndarray):
    count = np.isfinite(m).sum(0)
    with np.errstate(all="ignore"):
        return count, np.nanmean(m, axis=0), np.nanvar(m, axis=0)


def _standard(mean, var) -> batches.Standard:
    """``batches.standardise``'s rule on given moments: a constant column keeps scale 1."""
    scale = np.sqrt(var)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return batches.Standard(mean, np.where(np.isfinite(scale) & (scale > 0), scale, 1.0))


class Split(NamedTuple):
    """The resident path's validation split, read in chunks: ``val`` the sorted validation rows
    (at most ``VALIDATION_CAP``); training row r (by rank) is data row ``r + searchsorted(shifted, r,
    'right')``."""

    val: np.ndarray
    shifted: np.ndarray

    @classmethod
    def of(cls, n: int, share: float, seed: int) -> Split:
        k = min(max(1, round(share * n)), n - 1)
        perm = np.random.default_rng([seed, batches.SPLIT_STREAM]).permutation(n)  # as batches.split
        val = np.sort(perm[: min(k, VALIDATION_CAP)])
        return cls(val, val - np.arange(len(val)))

    def row(self, rank: int) -> int:
        return int(rank + np.searchsorted(self.shifted, rank, side="right"))


def _training_rows(task, split: Split, lo: int, hi: int, space: str, allow_nan: bool):
    """Training rows of ranks lo:hi (θ, y), read as one range with the validation rows dropped."""
    a, b = split.row(lo), split.row(hi - 1) + 1
    theta, y = _read(task, a, b, space, allow_nan)
    keep = np.ones(b - a, bool)
    keep[split.val[(split.val >= a) & (split.val < b)] - a] = False
    return theta[keep], y[keep]


def _pass_over(task, split: Split, n: int, chunk: int, space: str, allow_nan: bool):
    """One streaming pass: θ and y moments over the training rows (one chunk: exactly
    ``batches.standardise``'s) and the validation rows (θ, y)."""
    moments, val_parts = None, []
    n_train = n - len(split.val)
    for lo in range(0, n_train, chunk):
        theta, y = _training_rows(task, split, lo, min(n_train, lo + chunk), space, allow_nan)
        part = [_column_moments(theta), _column_moments(y)]
        moments = part if moments is None else [_combine(p, q) for p, q in zip(moments, part, strict=True)]
    for lo in range(0, n, chunk):  # the validation rows, range by range
        rows = split.val[(split.val >= lo) & (split.val < min(n, lo + chunk))]
        if len(rows):
            theta, y = _read(task, int(rows[0]), int(rows[-1]) + 1, space, allow_nan)
            val_parts.append((theta[rows - rows[0]], y[rows - rows[0]]))
    val_theta = np.concatenate([p[0] for p in val_parts])
    val_y = np.concatenate([p[1] for p in val_parts])
    return [_standard(m[1], m[2]) for m in moments], val_theta, val_y


def _moments(task, lo: int, hi: int, chunk: int, space: str, allow_nan: bool):
    """Per-column ``Standard`` of θ and y over rows lo:hi, streamed chunk by chunk."""
    moments = None
    for a in range(lo, hi, chunk):
        theta, y = _read(task, a, min(hi, a + chunk), space, allow_nan)
        part = [_column_moments(theta), _column_moments(y)]
        moments = part if moments is None else [_combine(p, q) for p, q in zip(moments, part, strict=True)]
    return [_standard(m[1], m[2]) for m in moments]


def make_chunk(graphdef, opt, batch: int, steps: int, rho: float = 0.0):
    """``run(state, x, theta, key) -> (state, summed loss, finite steps)``: the steps over one
    chunk's minibatches (a permutation of its rows from ``key``)."""

    @functools.partial(jax.jit, donate_argnums=0)
    def run(state, x, theta, key):
        flat, loss, back = passes.flat_state(state, graphdef)
        idx = batches.indices(key, state.epoch, x.shape[0], batch, steps)
        flat, values = passes.scan_steps(loss, opt, flat, x, theta, idx, rho)
        return back(flat), jnp.nansum(values), jnp.sum(jnp.isfinite(values))

    return run


def make_close(graphdef, plateau: int):
    @jax.jit
    def close(state, val_x, val_theta):
        flat, loss, back = passes.flat_state(state, graphdef)
        val = loss(passes.validated(flat), val_x, val_theta)
        return back(passes.close_pass(flat, flat, val, plateau)), val

    return close


def fit(
    task,
    config: Config,
    *,
    choice=None,
    init_state=None,
    history=None,
    callback=None,
    on_stage=None,
    on_checkpoint=None,
    checkpoint_every: int = 0,
    should_stop=None,
) -> minibatch.Result:
    """``minibatch.fit`` streaming a ``sources.StoredTask``'s rows from disk (see the module)."""
    stage = on_stage or (lambda text: None)
    allow_nan = getattr(config.embedding, "kind", None) == "set"
    n, dim = config.samples, len(task.support)
    split = Split.of(n, config.validation, config.seed)
    n_val = len(split.val)
    n_train = n - n_val
    inputs = int(np.prod(task.data.y_shape or (1,)))
    budget = budget_bytes(config)
    per_row = (inputs + dim) * HOST_BYTES
    batch = min(config.batch_size, n_train)
    fits = int(budget / CHUNK_SHARE // per_row)
    chunk = n_train if fits >= n_train else max(batch, fits // batch * batch)  # whole batches, or every row
    stage(
        f"streaming {n_train:,} pairs from {task.data.path} in chunks of {chunk:,} "
        f"(memory budget {budget / 2**30:.3g} GiB)"
    )
    t0 = time.perf_counter()
    (theta_std, y_std), val_theta, val_y = _pass_over(task, split, n, chunk, config.space, allow_nan)
    timings = {"simulate_s": time.perf_counter() - t0}
    embedding = minibatch.default_embedding(config, inputs)
    try:
        embedding.check(inputs)
    except ValueError as err:
        raise ConfigError(str(err), "embedding") from None
    standard = lambda th, y: (
        jnp.asarray((y - y_std.shift) / y_std.scale, jnp.float32),
        jnp.asarray(theta_std.apply(th)),
    )  # noqa: E731
    val_x, val_z = standard(val_theta, val_y)
    starts = list(range(0, n_train, chunk))
    steps_per_pass = sum((min(n_train, a + chunk) - a) // batch for a in starts)
    graphdef, params = model.init(
        jax.random.key(config.seed), config.components, config.hidden, dim, inputs, embedding, config.linear_skip
    )
    if config.linear_skip and init_state is None:  # least squares over the first chunk (every row when it fits)
        first = standard(*_training_rows(task, split, 0, min(n_train, chunk), config.space, allow_nan))
        params["means_skip"]["kernel"] = jnp.asarray(batches.skip_kernel(*first, config.components))
    opt = passes.optimizer(config, steps_per_pass)
    state = init_state if init_state is not None else passes.state_of(params, opt, config.ema)
    state = jax.tree_util.tree_map(jnp.asarray, state)
    start = int(state.epoch)
    if start > config.epochs:
        raise ConfigError(f"the run already trained {start} passes: ask for more than that", "epochs")
    runs = {}
    rho = passes.decay(config.ema, steps_per_pass)
    close = make_close(graphdef, config.patience // 4 if config.schedule == "plateau" else 0)
    key = jax.random.key(config.seed)
    jacobian = float(np.sum(np.log(theta_std.scale)))

    def one_pass(state, epoch):
        pass_key = jax.random.fold_in(key, epoch)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(pass_key, 0xC4), len(starts)))
        total, count = 0.0, 0
        a = starts[order[0]]
        pending = standard(*_training_rows(task, split, a, min(n_train, a + chunk), config.space, allow_nan))
        for j, c in enumerate(order):
            x, z = pending
            rows = x.shape[0]
            if rows >= batch:
                if rows not in runs:
                    runs[rows] = make_chunk(graphdef, opt, batch, rows // batch, rho)
                chunk_key = key if c == 0 else jax.random.fold_in(key, int(c))  # one chunk: the resident run's
                state, s, k = runs[rows](state, x, z, chunk_key)
                total, count = total + s, count + k  # device values: the host reads the next chunk meanwhile
            if j + 1 < len(order):
                a = starts[order[j + 1]]
                pending = standard(*_training_rows(task, split, a, min(n_train, a + chunk), config.space, allow_nan))
        state, va = close(state, val_x, val_z)
        tr = float(total) / max(int(count), 1) + jacobian if int(count) else float("nan")
        return state, tr, float(va) + jacobian

    driven = passes.drive(
        one_pass,
        state,
        config,
        history,
        callback=callback,
        on_checkpoint=on_checkpoint,
        checkpoint_every=checkpoint_every,
        should_stop=should_stop,
    )
    train_hist, val_hist = driven.train, driven.validation
    host = parallel.host(driven.state)
    timings.update(passes.timings_of(driven))
    report = {
        "samples": n,
        "moved_to_interior": 0,
        "warnings": [],
        "layout": None if choice is None else choice.to_json(),
        "train_pairs": n_train,
        "validation_pairs": n_val,
        "batch_size": batch,
        "steps_per_pass": steps_per_pass,
        "embedding": embedding.to_json(),
        "dropped": 0,
        "streamed": {"chunk_rows": chunk, "chunks": len(starts), "memory_budget_gib": budget / 2**30},
        "skipped_steps": int(host.skipped),
        "best_validation": float(host.best_loss) + jacobian,
    }
    y_kind = task.data.y_kind
    spec = minibatch.sample_spec(task, config, inputs, y_kind, y_std, theta_std, embedding)
    post = Posterior(spec, jax.tree_util.tree_map(jnp.asarray, host.best_params))
    best_epoch = int(np.nanargmin(np.asarray(val_hist, np.float64))) + 1 if np.isfinite(val_hist).any() else 0
    held_theta = val_theta.astype(np.float32)
    y_dtype = np.float64 if task.data.y_kind == "continuous" else np.int64
    raw_y = val_y.reshape((n_val, *task.data.y_shape)).astype(y_dtype)  # counts are exact in float64
    heldout = (held_theta[:, 0] if dim == 1 else held_theta, raw_y)
    return minibatch.Result(
        post,
        host,
        np.asarray(train_hist, np.float32),
        np.asarray(val_hist, np.float32),
        timings,
        report,
        config,
        driven.diverged_at,
        driven.stopped_at,
        best_epoch,
        driven.early_stopped_at,
        heldout,
    )


def needed(task, config: Config) -> bool:
    """Whether a per-sample run of ``config`` on ``task`` streams: stored rows above the budget."""
    data = sources.stored(task)
    if data is None:
        return False
    inputs = int(np.prod(data.data.y_shape or (1,)))
    return resident_bytes(config.samples, inputs, len(task.support)) > budget_bytes(config)
