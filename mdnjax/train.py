"""Training: the fused step, the epoch loop, and the command line.

    python -m mdnjax.train --prior beta      # or gamma; --help for every flag

The step is a pure function ``step(params, opt_state, data) -> (params, opt_state, loss)``;
``log_every`` epochs run inside one ``jax.lax.scan`` per dispatch, so XLA reuses its buffers
and Python is out of the loop. A non-finite loss freezes the parameters at the last finite
point and stops the run.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdnjax import buckets as buckets_lib
from mdnjax import loss as loss_lib
from mdnjax import model, xla
from mdnjax.config import (
    BACKENDS,
    DEFAULT_RECIPE,
    LAYOUTS,
    RECIPES,
    SCHEDULES,
    WEIGHTINGS,
    Config,
    ConfigError,
)
from mdnjax.loss import Data, to_data  # noqa: F401  (re-exported)
from mdnjax.posterior import Posterior, atomic_write


class Result(NamedTuple):
    """What ``fit`` returns."""

    posterior: Posterior
    losses: np.ndarray  # (epochs_run,)
    timings: dict
    buckets: buckets_lib.Buckets
    diverged_at: int | None  # first epoch with a non-finite loss, or None
    stopped_at: int | None = None  # epoch at which ``should_stop`` ended training, or None


CHUNK = 10_000_000  # above this many simulations, simulation and bucketing stream
STREAM_CHUNK = 2_000_000  # simulations per streamed chunk (~100 MB of scratch)


def _simulate(config: Config, task, rng: np.random.Generator, n: int):
    """``n`` simulated (θ, y) pairs, θ in the fitting space."""
    theta, y = task.simulate(rng, n)
    if config.space == "unconstrained":
        theta = task.to_unconstrained(theta.astype(np.float64)).astype(np.float32)
    return theta, y


def simulation_chunks(config: Config, chunk: int | None = None):
    """A function returning an iterator over (θ, y) chunks of ``chunk`` (default ``STREAM_CHUNK``)
    of the run's simulations.

    Chunk i draws from ``default_rng([seed, i])``, so every pass yields the same chunks. θ is
    already in the fitting space.
    """
    task = config.task()
    chunk = STREAM_CHUNK if chunk is None else chunk

    def chunks():
        for i, start in enumerate(range(0, config.samples, chunk)):
            yield _simulate(config, task, np.random.default_rng([config.seed, i]), min(chunk, config.samples - start))

    return chunks


def simulate_and_bucket(config: Config, timings: dict | None = None, shards: int = 1) -> buckets_lib.Buckets:
    """Simulates ``config.samples`` pairs and buckets them in the configured layout.

    Up to ``CHUNK`` samples are drawn at once from ``default_rng(seed)``; beyond that (packed
    layout), simulation and bucketing stream in chunks of ``STREAM_CHUNK`` (``buckets.bucket_streamed``)
    so that memory stays near the final layout (4 bytes per slot), which ends with the empty
    rows ``to_data`` needs for ``shards`` devices so that it moves to the device without a copy.
    """
    timings = {} if timings is None else timings
    task = config.task()
    if config.samples > CHUNK and config.layout == "packed":
        t0 = time.perf_counter()
        b = buckets_lib.bucket_streamed(simulation_chunks(config), spare_rows=loss_lib.spare_rows(shards=shards))
        timings["simulate_s"], timings["bucket_s"] = 0.0, time.perf_counter() - t0  # interleaved: one figure
        if b.num_y == 0:
            raise ConfigError(f"no y value has 2 or more of the {config.samples} samples: increase --samples")
        return b
    t0 = time.perf_counter()
    theta, y = _simulate(config, task, np.random.default_rng(config.seed), config.samples)
    timings["simulate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if config.layout == "packed":
        b = buckets_lib.bucket_packed(theta, y)
    else:
        b = buckets_lib.bucket(theta, y)
    timings["bucket_s"] = time.perf_counter() - t0
    if b.num_y == 0:
        raise ConfigError(f"no y value has 2 or more of the {config.samples} samples: increase --samples")
    return b


def device_mesh(devices: int | None):
    """A 1-D ``Mesh`` over the first ``devices`` devices (``None``: all), or None for one device."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ConfigError(f"--devices {n}: this machine has {len(available)} {available[0].platform} device(s)")
    if n == 1:
        return None
    return jax.sharding.Mesh(np.array(available[:n]), ("rows",))


def _host(tree):
    """NumPy copies of (possibly multi-process, replicated) arrays: reads this process's copy."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = a.addressable_data(0)
        return np.array(a, copy=True)

    return jax.tree_util.tree_map(one, tree)


def shard(data: Data, state, mesh):
    """Data parallel: bucket rows split over the mesh, everything else replicated.

    XLA's SPMD partitioner then runs each device's rows and inserts the all-reduces of the loss
    and of the gradients; the optimizer update is replicated.
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    # from host copies: with several processes, each one places its own devices' shards
    put = lambda tree, spec: jax.device_put(_host(tree), NamedSharding(mesh, spec))  # noqa: E731
    data = Data(
        x=put(data.x, P()),
        theta=put(data.theta, P(None, "rows", None)),
        row_count=put(data.row_count, P(None, "rows")),
        row_y=put(data.row_y, P(None, "rows")),
        weight=put(data.weight, P(None, "rows")),
    )
    return data, put(state, P())


def learning_rate(config: Config):
    """The learning rate, or an optax schedule of the step count."""
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, config.epochs)
    return config.lr


def loss_fn(layout: str, graphdef) -> Callable:
    """``loss(params, data)`` for a layout: the fast rows loss or the padded reference."""
    if layout == "padded":

        def padded(params, d):
            rows = lambda a: a.reshape(-1, a.shape[-1])[: d.x.shape[0]]  # noqa: E731  one row per y
            return loss_lib.padded_loss(params, graphdef, d.x, rows(d.theta), rows(d.mask))

        return padded
    return lambda params, d: loss_lib.rows_loss(params, graphdef, d)


def make_step(loss: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """One full-batch Adam step: ``step(params, opt_state, data) -> (params, opt_state, loss)``."""

    def step(params, opt_state, data):
        value, grads = jax.value_and_grad(loss)(params, data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _select(pred, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def make_run_epochs(step: Callable) -> Callable:
    """``run(state, data, num) -> (state, losses)``: ``num`` epochs in one ``lax.scan``.

    ``state`` is ``(params, opt_state, last_finite_params, ok)``. Once a loss or gradient is not
    finite, ``ok`` turns False and the parameters stop moving; ``last_finite_params`` are the
    last ones whose loss was finite.
    """

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
    def run(state, data, num):
        def body(carry, _):
            params, opt_state, good, ok = carry
            new_params, new_opt_state, value = step(params, opt_state, data)
            finite = ok & jnp.isfinite(value)
            good = _select(finite, params, good)
            finite &= _all_finite(new_params)
            return (_select(finite, new_params, params), _select(finite, new_opt_state, opt_state), good, finite), value

        return jax.lax.scan(body, state, None, length=num)

    return run


def _progress(epoch: int, total: int, loss: float, ms: float) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    done = int(width * epoch / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {epoch}/{total}  loss {loss:.4f}  {ms:.2f} ms/epoch ")
    if epoch == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


class Checkpoint(NamedTuple):
    """Everything needed to continue a run exactly: the epoch reached, parameters, optimizer
    state (its step count drives the schedule) and the losses so far. The data are re-simulated
    from the config's seed, and training itself draws no random numbers."""

    epoch: int
    params: dict
    opt_state: tuple
    losses: np.ndarray


def fit(
    config: Config,
    *,
    verbose: bool = True,
    buckets: buckets_lib.Buckets | None = None,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """Simulates, buckets and trains an MDN posterior for ``config``.

    Args:
        config: run settings (validated here).
        verbose: print the loss every ``log_every`` epochs and a progress bar on a terminal.
        buckets: reuse an existing layout instead of simulating.
        resume: continue from this checkpoint (the result is bitwise that of an uninterrupted run).
        on_checkpoint: called with a ``Checkpoint`` every ``checkpoint_every`` epochs (at the end of
            a ``log_every`` chunk), when stopped, and at the end.
        checkpoint_every: epochs between checkpoints (0: only when stopped and at the end).
        should_stop: polled after every chunk; when it returns True, training stops there
            (``Result.stopped_at``) after a checkpoint.

    Returns:
        ``Result`` with the trained ``Posterior``, the loss per epoch and timings.

    Example:
        >>> result = fit(Config(prior="beta", samples=20_000, epochs=200), verbose=False)
        >>> float(result.posterior.mean(30)) > 0
        True
    """
    config = config.validate()
    if config.backend != "jax":
        from mdnjax import torch_ref

        return torch_ref.fit(config, verbose=verbose, buckets=buckets)
    timings: dict = {}
    mesh = device_mesh(1 if config.layout == "padded" else config.devices)
    shards = 1 if mesh is None else mesh.size
    b = buckets if buckets is not None else simulate_and_bucket(config, timings, shards)
    block = None if config.layout == "padded" else loss_lib.BLOCK
    data = to_data(b, config.trials, block=block, weighting=config.weighting, shards=shards)
    b = b.without_samples()  # the samples now live in ``data``
    graphdef, params = model.init(jax.random.key(config.seed), config.components, config.hidden)
    optimizer = optax.adam(learning_rate(config))
    opt_state = optimizer.init(params)
    losses, epoch = [], 0
    if resume is not None:
        epoch, params, opt_state = resume.epoch, resume.params, resume.opt_state
        losses = [np.asarray(resume.losses, np.float32)] if len(resume.losses) else []
    run = make_run_epochs(make_step(loss_fn(config.layout, graphdef), optimizer))
    state = (params, opt_state, jax.tree_util.tree_map(jnp.copy, params), jnp.array(True))
    if mesh is not None:
        data, state = shard(data, state, mesh)

    def checkpoint(at: int) -> None:
        if on_checkpoint is not None:
            history = np.concatenate(losses) if losses else np.zeros(0, np.float32)
            on_checkpoint(Checkpoint(at, _host(state[0]), _host(state[1]), history))  # copies: state is donated

    chunk = min(config.log_every, config.epochs)
    t0 = time.perf_counter()
    compiled = {chunk: run.lower(state, data, chunk).compile()}
    timings["compile_s"] = time.perf_counter() - t0

    diverged_at, stopped_at, train_s, start = None, None, 0.0, epoch
    while epoch < config.epochs:
        num = min(chunk, config.epochs - epoch)
        if num not in compiled:
            t0 = time.perf_counter()
            compiled[num] = run.lower(state, data, num).compile()
            timings["compile_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, chunk_losses = compiled[num](state, data)
        chunk_losses = _host(chunk_losses)
        train_s += time.perf_counter() - t0
        losses.append(chunk_losses)
        bad = np.flatnonzero(~np.isfinite(chunk_losses))
        if verbose:
            print(f"[epoch {epoch:5d}] loss = {chunk_losses[0]:.4f}", flush=True)
            _progress(epoch + num, config.epochs, float(chunk_losses[-1]), 1e3 * train_s / (epoch + num - start))
        if bad.size or not bool(_host(state[3])):
            diverged_at = epoch + int(bad[0]) if bad.size else epoch + num
            break
        epoch += num
        if epoch < config.epochs and should_stop is not None and should_stop():
            stopped_at = epoch
            checkpoint(epoch)
            break
        if checkpoint_every and epoch < config.epochs and epoch % checkpoint_every < num:
            checkpoint(epoch)
    if diverged_at is None and stopped_at is None:
        checkpoint(epoch)
    history = np.concatenate(losses) if losses else np.zeros(0, np.float32)
    epochs_run = max(history.size - start, 1)
    timings["train_s"] = train_s
    timings["epochs_per_s"] = epochs_run / train_s if train_s > 0 else float("nan")
    timings["ms_per_epoch"] = 1e3 * train_s / epochs_run
    if verbose and diverged_at is None and stopped_at is None:
        print(f"[epoch {history.size - 1:5d}] loss = {history[-1]:.4f}", flush=True)
    final = _host(state[2] if diverged_at is not None else state[0])
    return Result(Posterior(config, final, graphdef), history, timings, b, diverged_at, stopped_at)


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind):
    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if kind is int:
            if not math.isfinite(value) or value != int(value):
                raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
            return int(value)
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mdnjax.train", description="Train an MDN posterior for a conjugate model.")
    p.add_argument("--prior", default="beta", help="task: beta, gamma or beta-mixture (default beta)")
    p.add_argument("--alpha", type=_number(float), help="prior α (default 2)")
    p.add_argument("--beta", type=_number(float), help="prior β (default 5 for beta, rate 3 for gamma)")
    p.add_argument("--trials", type=_number(int), default=100, help="n: Binomial trials / Poisson exposure")
    p.add_argument("--mix-weights", type=_number(float), nargs="+", help="beta-mixture prior: component weights")
    p.add_argument("--mix-alpha", type=_number(float), nargs="+", help="beta-mixture prior: component α")
    p.add_argument("--mix-beta", type=_number(float), nargs="+", help="beta-mixture prior: component β")
    p.add_argument(
        "--samples",
        type=_number(int),
        default=1_000_000,
        help="simulations (default 1e6; above 1e7 they stream in chunks)",
    )
    p.add_argument("--components", type=_number(int), default=8, help="K, Gaussians in the mixture")
    p.add_argument("--hidden", type=_number(int), nargs="+", help="backbone widths (recipe default)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"training defaults: {', '.join(RECIPES)}")
    p.add_argument("--epochs", type=_number(int), help="full-batch Adam steps (recipe default)")
    p.add_argument("--lr", type=_number(float), help="Adam learning rate (recipe default)")
    p.add_argument("--weighting", help=f"objective: {' or '.join(WEIGHTINGS)} (recipe default)")
    p.add_argument("--schedule", help=f"learning-rate schedule: {' or '.join(SCHEDULES)} (recipe default)")
    p.add_argument("--seed", type=_number(int), default=0, help="seeds simulation and initialisation")
    p.add_argument("--plot-y", type=_number(int), nargs="+", help="observations to plot and report")
    p.add_argument("--space", help="raw (fit θ) or unconstrained (fit logit θ / log θ) (recipe default)")
    p.add_argument("--layout", default="packed", help=f"bucket layout: {' or '.join(LAYOUTS)}")
    p.add_argument("--backend", default="jax", help=f"training path: {', '.join(BACKENDS)}")
    p.add_argument("--devices", type=_number(int), help="devices to split the rows over (default: all)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="several processes: the coordinator's address")
    p.add_argument("--num-processes", type=_number(int), help="several processes: how many")
    p.add_argument("--process-id", type=_number(int), help="several processes: this one's rank (0 writes the outputs)")
    p.add_argument("--torch-threads", type=_number(int), default=1, help="threads for torch backends")
    p.add_argument("--log-every", type=_number(int), default=50, help="epochs between printed losses")
    p.add_argument("--out", help="output folder (default: runs/PRIOR-TIMESTAMP)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--checkpoint-every",
        type=_number(int),
        default=500,
        help="epochs between resumable checkpoints (state.npz; 0: only at the end or on Ctrl-C)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR (other flags ignored)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The ``Config`` of the parsed flags (each flag is named after its field; lists become tuples)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in fields})


def prepare_out(out: str | None, prior: str) -> Path:
    """Creates the output folder; refuses a file, a non-empty folder or an unwritable place."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{prior}-{stamp}"
        n = 1
        while path.exists():
            path = Path("runs") / f"{prior}-{stamp}-{n}"
            n += 1
    else:
        path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"--out {path} exists and is not empty: choose a new folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to --out {path}: {err.strerror or err}") from None
    return path


def write_outputs(result: Result, out: Path, plots: bool = True) -> dict:
    """Writes checkpoint, config, metrics and figures of a run into ``out``."""
    from mdnjax import metrics
    from mdnjax import plots as plots_lib

    post = result.posterior
    post.save(out)
    b = result.buckets
    t0 = time.perf_counter()
    plotted = metrics.evaluate(post, post.config.plot_y)
    dense = metrics.evaluate(post, b.y_values[b.counts >= 100])
    payload = {
        "status": "diverged" if result.diverged_at is not None else "ok",
        "diverged_at_epoch": result.diverged_at,
        "loss": [float(v) for v in result.losses],
        "final_loss": float(result.losses[-1]),
        "timings": {k: float(v) for k, v in result.timings.items()},
        "layout": {
            "rows": int(b.theta.shape[0]),
            "width": int(b.theta.shape[1]),
            "num_y": b.num_y,
            "samples": b.num_samples,
            "slots_per_sample": buckets_lib.layout_ratio(b),
        },
        "plotted": plotted,
        "plotted_summary": metrics.summarize(plotted),
        "per_y": dense,
        "per_y_summary": metrics.summarize(dense),
        "device": str(jax.devices()[0]),
    }
    if plots:
        plots_lib.posterior_grid(post, post.config.plot_y, out / "posterior.png")
        plots_lib.kl_by_y(
            dense,
            out / "kl.png",
            post.config.plot_y,
            title=f"{post.config.prior}: KL(exact ‖ MDN) per y (K={post.config.components})",
        )
        plots_lib.loss_curve(
            result.losses, out / "loss.png", title=f"{post.config.prior}: loss per epoch (K={post.config.components})"
        )
    payload["timings"]["report_s"] = time.perf_counter() - t0
    atomic_write(out / "metrics.json", json.dumps(payload, indent=2).encode())
    return payload


def format_table(rows: list[dict]) -> str:
    lines = [f"{'y':>5} {'KL(exact||MDN)':>15} {'exact mean':>11} {'MDN mean':>9} {'exact sd':>9} {'MDN sd':>9}"]
    for r in rows:
        lines.append(
            f"{r['y']:>5} {r['kl']:>15.5f} {r['exact_mean']:>11.5f} {r['mdn_mean']:>9.5f} "
            f"{r['exact_sd']:>9.5f} {r['mdn_sd']:>9.5f}"
        )
    kls = [r["kl"] for r in rows]
    lines.append(f"mean KL over plotted y: {np.mean(kls):.5f} nats")
    return "\n".join(lines)


def _resume_point(run_dir: Path, config: Config) -> Checkpoint:
    """The training state saved in ``run_dir`` (``ConfigError`` if absent or unreadable)."""
    from mdnjax.posterior import STATE, load_state

    _, params = model.init(jax.random.key(config.seed), config.components, config.hidden)
    opt_state = optax.adam(learning_rate(config)).init(params)
    try:
        epoch, params, opt_state, losses = load_state(run_dir / STATE, params, opt_state)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Checkpoint(epoch, params, opt_state, losses)


def _load_run_config(run_dir: Path) -> Config:
    from mdnjax.posterior import CONFIG

    try:
        return Config.from_dict(json.loads((run_dir / CONFIG).read_text())).validate()
    except FileNotFoundError:
        raise ConfigError(f"--resume {run_dir}: no {CONFIG} there, not a run directory") from None
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ConfigError(f"--resume {run_dir}: unreadable {CONFIG} ({err})") from None


def _init_distributed(args) -> bool:
    """Joins a multi-process run when ``--coordinator`` is given; returns whether this process leads.

    Must run before any JAX computation. On CPU the processes talk through gloo.
    """
    given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if not any(given):
        return True
    if not all(given):
        raise ConfigError("--coordinator, --num-processes and --process-id go together")
    if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
        raise ConfigError(f"--process-id must be in 0..{args.num_processes - 1}, got {args.process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    return args.process_id == 0


def _discard_new_run(out: Path, existed: bool) -> None:
    """Removes what a run that failed before training wrote: its config.json, and the folder if
    the run created it and it is empty."""
    from mdnjax.posterior import CONFIG

    try:
        (out / CONFIG).unlink(missing_ok=True)
        if not existed and not any(out.iterdir()):
            out.rmdir()
    except OSError:
        pass


def main(argv=None) -> int:
    import signal

    from mdnjax.posterior import CONFIG, STATE, save_state

    t_start = time.perf_counter()
    xla.configure_cpu()  # before the first JAX computation
    args = build_parser().parse_args(argv)
    prog = "mdnjax.train"
    try:
        lead = _init_distributed(args)
        if args.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
        if args.resume is not None:
            out = Path(args.resume)
            config = _load_run_config(out)
            resume = _resume_point(out, config)
        else:
            config = config_from_args(args).validate()
            device_mesh(1 if config.layout == "padded" else config.devices)  # check --devices before any output
            existed = args.out is not None and Path(args.out).exists()
            out = prepare_out(args.out, config.prior) if lead else Path(args.out or ".")
            resume = None
            if lead:
                atomic_write(out / CONFIG, config.to_json().encode())  # a killed run can be resumed
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(
        f"mdnjax: prior={config.prior} samples={config.samples:,} K={config.components} recipe={config.recipe} "
        f"(epochs={config.epochs} lr={config.lr} {config.weighting} {config.schedule}) "
        f"backend={config.backend} layout={config.layout} "
        f"device={jax.devices()[0].platform} -> {out}"
        + (f" (resuming at epoch {resume.epoch})" if resume is not None else ""),
        flush=True,
    )

    stop: list[int] = []  # signals received, set by the handler below
    handler = lambda signum, frame: stop.append(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    save = lambda c: save_state(out / STATE, c.epoch, c.params, c.opt_state, c.losses)  # noqa: E731
    try:
        result = fit(
            config,
            resume=resume,
            on_checkpoint=save if config.backend == "jax" and lead else None,
            checkpoint_every=args.checkpoint_every,
            should_stop=lambda: bool(stop),
        )
    except ConfigError as err:  # e.g. too few samples to form a bucket, torch missing
        if resume is None and lead:  # nothing was trained: leave no half-made run folder behind
            _discard_new_run(out, existed)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a checkpoint could not be written: the previous one is intact
        print(
            f"{prog}: error: cannot write a checkpoint to {out}: {err.strerror or err}; "
            f"the last checkpoint written is intact",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if not lead:  # other processes of a multi-process run write nothing
        return 0 if result.diverged_at is None and result.stopped_at is None else 1
    if result.stopped_at is not None:
        print(
            f"{prog}: interrupted at epoch {result.stopped_at}; state saved. "
            f"Resume with: python -m mdnjax.train --resume {out}",
            file=sys.stderr,
        )
        return 130
    try:
        payload = write_outputs(result, out, plots=not args.no_plots)
    except OSError as err:
        print(f"{prog}: error: cannot write results to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    t = result.timings
    print(format_table(payload["plotted"]))
    dense = payload["per_y_summary"]
    if dense:
        print(
            f"mean KL over the {dense['count']} y with >= 100 samples: {dense['kl_mean']:.5f} "
            f"(worst {dense['kl_max']:.4f} at y={dense['kl_max_y']})"
        )
    wall = time.perf_counter() - t_start
    payload["timings"]["wall_s"] = wall
    atomic_write(out / "metrics.json", json.dumps(payload, indent=2).encode())
    print(
        f"simulate {t.get('simulate_s', 0):.2f} s, bucket {t.get('bucket_s', 0):.2f} s, "
        f"compile {t.get('compile_s', 0):.2f} s, train {t['train_s']:.2f} s "
        f"({t['ms_per_epoch']:.2f} ms/epoch), wall {wall:.1f} s"
    )
    print(
        f"saved to {out}/ (config.json, checkpoint.npz, state.npz, metrics.json"
        f"{', posterior.png, kl.png, loss.png' if not args.no_plots else ''})"
    )
    if result.diverged_at is not None:
        print(
            f"{prog}: error: loss became non-finite at epoch {result.diverged_at}; "
            f"the checkpoint holds the last finite parameters",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
