"""``fit`` on the per-sample layout: every (θ, y) pair its own bucket, trained in minibatches.

For observations that do not repeat (continuous y, long vectors of counts). θ is moved to the
fitting space and standardised per coordinate, y standardised per component (both stored with the
posterior, which answers on θ's own space). A share of the pairs (``config.validation``) is kept
for validation. Each pass over the training pairs is one dispatch: the data stay on the device, a
permutation from ``fold_in(key(seed), pass)`` cuts them into minibatches, and a ``lax.scan`` runs
the Adam steps (gradients clipped to norm ``passes.CLIP``; a step with a non-finite loss or update is
skipped and counted). After each pass the validation loss decides: a better one keeps the
parameters as the best; ``config.patience`` passes without one stop the run, and the posterior
holds the best parameters. Resuming is handing the ``SampleState`` back (bitwise the same run).

Example:
    >>> import numpy as np, mdnjax
    >>> def simulate(rng, n):
    ...     theta = rng.normal(size=n)
    ...     return theta, theta + 0.5 * rng.normal(size=n)
    >>> task = mdnjax.Task("normal", simulate, support=[(-np.inf, np.inf)])
    >>> result = fit(task, mdnjax.Config(samples=2_000, epochs=3, layout="per-sample"))
    >>> result.losses.shape, result.validation.shape
    ((3,), (3,))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import batches, model, parallel, sources
from mdnjax.config import PER_SAMPLE_LAYOUT, Config, ConfigError
from mdnjax.embeddings import Embedding
from mdnjax.posterior import Posterior, PosteriorSpec
from mdnjax.simulation import summarize_warnings
from mdnjax.train.loop import Progress, kept
from mdnjax.train.passes import Pairs, SampleState, _pass, decay, drive, optimizer, optimizer_key, state_of, timings_of


class Result(NamedTuple):
    """What the per-sample ``fit`` returns."""

    posterior: Posterior
    state: SampleState
    losses: np.ndarray  # (passes,) the mean training NLL of each pass (per pair, θ in the fitting space)
    validation: np.ndarray  # (passes,) the validation loss after each pass (NLL of u, per pair)
    timings: dict
    report: dict  # samples, train/validation sizes, batch, steps per pass, the layout choice, warnings
    config: Config
    diverged_at: int | None  # pass at which every step was skipped (nothing left to learn from)
    stopped_at: int | None  # pass at which ``should_stop`` ended training
    best_epoch: int  # the pass whose parameters the posterior holds
    early_stopped_at: int | None  # pass at which ``patience`` ended training
    heldout: tuple | None = None  # the validation pairs (θ in the fitting space, y)


def default_embedding(config: Config, inputs: int) -> Embedding:
    """The embedding of ``config`` or, left unset, an MLP for a vector y and none for a scalar."""
    if config.embedding is not None:
        return config.embedding
    return Embedding("mlp") if inputs > 1 else Embedding("none")


def fit(
    task,
    config: Config,
    *,
    choice=None,
    pairs: tuple | None = None,
    init_state: SampleState | None = None,
    history: np.ndarray | None = None,
    callback: Callable[[Progress], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_checkpoint: Callable[[SampleState, np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """Trains q(θ | y) on single pairs; arguments as ``mdnjax.fit`` (``config``'s unset settings
    from ``config.PER_SAMPLE``), plus ``pairs``: (θ, y) to train on instead of simulating (θ on its
    own space, (n,) or (n, D); y (n,) or (n, M)). ``history`` is the (passes, 2) training and
    validation losses of the passes ``init_state`` trained, as ``on_checkpoint`` gets them."""
    config = Config.of(config)
    config = dataclasses.replace(config, layout=PER_SAMPLE_LAYOUT).resolve(task)
    stage = on_stage or (lambda text: None)
    report: dict = {"samples": config.samples, "moved_to_interior": 0, "warnings": []}
    timings: dict = {}
    embedding_kind = getattr(config.embedding, "kind", None)
    t0 = time.perf_counter()
    if pairs is None:
        stage(f"{'reading' if sources.stored(task) else 'simulating'} {config.samples:,} draws (per-sample layout)")
        theta, y = batches.simulated_pairs(task, config, embedding_kind == "set", report)
    else:
        theta, y = batches.given_pairs(task, config, *pairs, report)
    timings["simulate_s"] = time.perf_counter() - t0
    n, dim = theta.shape[0], len(task.support)
    theta = theta.reshape(n, dim)
    y_kind = "continuous" if np.issubdtype(np.asarray(y).dtype, np.floating) else "counts"
    y_rows = np.asarray(y, np.float64).reshape(n, -1)
    inputs = y_rows.shape[1]
    embedding = default_embedding(config, inputs)
    try:
        embedding.check(inputs)
    except ValueError as err:
        raise ConfigError(str(err), "embedding") from None
    if n < 2:
        raise ConfigError("the per-sample layout needs at least 2 simulations", "samples")
    train_idx, val_idx = batches.split(n, config.validation, config.seed)
    theta_std = batches.standardise(theta[train_idx])
    y_std = batches.standardise(y_rows[train_idx])
    batch, steps = batches.plan(train_idx.size, config.batch_size)
    report.update(
        {
            "layout": None if choice is None else choice.to_json(),
            "train_pairs": int(train_idx.size),
            "validation_pairs": int(val_idx.size),
            "batch_size": batch,
            "steps_per_pass": steps,
            "embedding": embedding.to_json(),
            "dropped": 0,
        }
    )
    report["warnings"] = summarize_warnings(report["warnings"])
    if report["moved_to_interior"]:
        report["warnings"].append(
            f"{report['moved_to_interior']:,} draws lay on a bound of the support and were moved to the nearest "
            "interior value"
        )
    import warnings

    for line in report["warnings"]:
        warnings.warn(line, RuntimeWarning, stacklevel=3)
    x_all = (y_rows - y_std.shift) / y_std.scale
    z_all = theta_std.apply(theta)
    device_pairs = Pairs(
        x=jnp.asarray(x_all[train_idx], jnp.float32),
        theta=jnp.asarray(z_all[train_idx]),
        val_x=jnp.asarray(x_all[val_idx], jnp.float32),
        val_theta=jnp.asarray(z_all[val_idx]),
    )
    graphdef, params = model.init(
        jax.random.key(config.seed), config.components, config.hidden, dim, inputs, embedding, config.linear_skip
    )
    if config.linear_skip and init_state is None:  # least squares over the training pairs, then fixed (``passes``)
        params["means_skip"]["kernel"] = jnp.asarray(
            batches.skip_kernel(device_pairs.x, device_pairs.theta, config.components)
        )
    opt = optimizer(config, steps)
    state = init_state if init_state is not None else state_of(params, opt, config.ema)
    state = jax.tree_util.tree_map(jnp.asarray, state)
    start = int(state.epoch)
    if start > config.epochs:
        raise ConfigError(f"the run already trained {start} passes: ask for more than that", "epochs")
    stage(f"compiling the training pass ({steps:,} steps of {batch:,} pairs; {val_idx.size:,} for validation)")
    plateau = config.patience // 4 if config.schedule == "plateau" else 0
    rho = decay(config.ema, steps)
    run = kept(_pass, graphdef, optimizer_key(config, steps), batch, steps, plateau, rho)
    key = jax.random.key(config.seed)
    t0 = time.perf_counter()
    compiled = run.lower(state, device_pairs, key).compile()
    timings["compile_s"] = time.perf_counter() - t0
    jacobian = float(np.sum(np.log(theta_std.scale)))  # the validation NLL of u, not of z

    def one_pass(state, epoch):
        state, (tr, va) = compiled(state, device_pairs, key)
        return state, float(tr) + jacobian, float(va) + jacobian

    driven = drive(
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
    timings.update(timings_of(driven))
    report["skipped_steps"] = int(host.skipped)
    best_epoch = int(np.nanargmin(np.asarray(val_hist, np.float64))) + 1 if np.isfinite(val_hist).any() else 0
    report["best_validation"] = float(host.best_loss) + jacobian
    spec = sample_spec(task, config, inputs, y_kind, y_std, theta_std, embedding)
    post = Posterior(spec, jax.tree_util.tree_map(jnp.asarray, host.best_params))
    held_theta = theta[val_idx].astype(np.float32)
    heldout = (held_theta[:, 0] if dim == 1 else held_theta, np.asarray(y)[val_idx])
    return Result(
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


def template(task, config: Config, inputs: int) -> SampleState:
    """A state of the shapes a per-sample run of ``config`` checkpoints (to read one back)."""
    embedding = default_embedding(config, inputs)
    _, params = model.init(
        jax.random.key(config.seed),
        config.components,
        config.hidden,
        len(task.support),
        inputs,
        embedding,
        config.linear_skip,
    )
    return state_of(params, optimizer(config, 1), config.ema)


def sample_spec(task, config: Config, inputs: int, y_kind: str, y_std, theta_std, embedding) -> PosteriorSpec:
    """The ``PosteriorSpec`` of a per-sample run (in memory or streamed): its standardisations and
    embedding, no buckets."""
    return PosteriorSpec(
        name=task.name,
        components=config.components,
        hidden=tuple(config.hidden),
        space=config.space,
        bounds=tuple(task.support),
        embedding=_as_embedding(y_std),
        y_range=tuple(float(v) for v in getattr(task, "y_range", (-np.inf, np.inf))),
        y_values=np.zeros((0,) if inputs == 1 else (0, inputs), np.float64 if y_kind == "continuous" else np.int64),
        counts=np.zeros(0, np.int64),
        dim=len(task.support),
        inputs=inputs,
        y_kind=y_kind,
        theta_standard=(tuple(theta_std.shift.tolist()), tuple(theta_std.scale.tolist())),
        network=embedding,
        per_sample=True,
        linear_skip=config.linear_skip,
    )


def _as_embedding(std: batches.Standard):
    """(shift, scale) of the network input: floats for a scalar y, tuples for a vector."""
    if std.shift.size == 1:
        return float(std.shift[0]), float(std.scale[0])
    return tuple(std.shift.tolist()), tuple(std.scale.tolist())
