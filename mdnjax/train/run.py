"""``mdnjax.fit``: the layout chosen (``mdnjax.layout.choose``), then the bucketed path
(``mdnjax.train.bucketed``) or the per-sample one (``mdnjax.train.minibatch``).

Example:
    >>> import mdnjax
    >>> result = fit("beta", mdnjax.Config(samples=20_000, epochs=100))
    >>> result.config.layout, result.report["layout"]["layout"]
    ('binned', 'binned')
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mdnjax import datasets, layout, simulation, sources
from mdnjax.config import AUTO, PER_SAMPLE_LAYOUT, Config
from mdnjax.train import bucketed, loop, minibatch, streamed


def with_data(task, data, config: Config | dict | None = None):
    """(a ``sources.StoredTask`` over ``data``, the config with ``samples`` its training rows).

    ``data`` is a dataset folder (``mdnjax.datasets``), an opened ``Dataset`` or ``Arrays``; the
    last ``holdout`` share of its rows (at most ``sources.HOLDOUT_CAP``) is held out of training.
    ``task`` may be None when the data record one, or record θ's support.
    """
    config = Config.of(config)
    if not isinstance(data, (datasets.Dataset, datasets.Arrays)):
        data = datasets.open_dataset(data)
    task = datasets.task_for(data, bucketed.resolve_task(task) if task is not None else None)
    heldout = datasets.heldout_rows(data.count, config.holdout, sources.HOLDOUT_CAP)
    if data.count - heldout < 2:
        raise datasets.DatasetError(f"the data hold {data.count:,} simulations: too few to train on")
    stored = sources.StoredTask(task, data, heldout)
    return stored, dataclasses.replace(config, samples=stored.train_rows)


def fit_arrays(theta, y, config: Config | dict | None = None, *, support=None, task=None, **options):
    """Trains on simulations already in memory: θ (n,) or (n, D), y (n,) or (n, M) (counts or
    floats), from any program. ``support`` gives θ's (low, high) per parameter (default: every
    parameter real) unless ``task`` is given; the last ``config.holdout`` share is held out.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> theta = rng.normal(size=4000)
        >>> result = fit_arrays(theta, theta + rng.normal(size=4000), {"epochs": 5})
        >>> result.config.layout
        'per-sample'
    """
    if support is None and task is None:
        dim = 1 if np.ndim(theta) == 1 else np.shape(theta)[1]
        support = [(-np.inf, np.inf)] * dim
    return fit(task, config, data=datasets.Arrays(theta, y, support), **options)


def fit(task, config: Config | dict | None = None, *, choice: layout.Choice | None = None, data=None, **options):
    """Simulates and trains an MDN posterior q(θ | y) for ``task`` on the layout ``config`` asks
    for (``"auto"`` by default: binned when the observations repeat, per sample otherwise).

    Args:
        task: a ``mdnjax.Task`` or a built-in task's name (None with ``data`` that record one).
        config: a ``Config`` or a dict of its fields (default ``Config()``); settings left unset
            come from the recipe of the layout trained on.
        choice: the layout already decided (``chosen``), to skip deciding again.
        data: train on stored simulations instead of simulating (``with_data``): a dataset folder
            (``python -m mdnjax simulate``), a ``datasets.Dataset`` or ``datasets.Arrays``.
        **options: ``init_state``, ``history``, ``callback``, ``on_stage``, ``on_checkpoint``,
            ``checkpoint_every``, ``should_stop`` (see ``mdnjax.train.bucketed.fit``); ``buckets``
            (the bucketed layouts) or ``pairs`` (the per-sample layout).

    Returns:
        ``bucketed.Result`` or ``minibatch.Result``; both carry ``posterior``, ``state``,
        ``losses``, ``timings``, ``report`` (with the layout's choice and reason) and ``config``
        (resolved, its layout the one trained on).
    """
    if data is not None:
        task, config = with_data(task, data, config)
    task = bucketed.resolve_task(task) if sources.stored(task) is None else task
    raw = Config.of(config)
    if options.get("buckets") is not None:
        checked, choice = raw.resolve(task), None
    elif options.get("pairs") is not None and (raw.layout == AUTO or raw.per_sample):
        choice = layout.Choice(PER_SAMPLE_LAYOUT, "pairs given", 1, None)
        checked = dataclasses.replace(raw, layout=PER_SAMPLE_LAYOUT).resolve(task)
    elif choice is None:
        checked, choice = chosen(task, raw)
    else:
        checked = dataclasses.replace(raw, layout=choice.layout).resolve(task)
    if checked.per_sample:
        options.pop("buckets", None)
        if options.get("pairs") is None and streamed.needed(task, checked):
            return streamed.fit(task, checked, choice=choice, **options)
        return minibatch.fit(task, checked, choice=choice, **options)
    options.pop("pairs", None)
    if choice is not None:
        options.setdefault("min_count", choice.min_count)
    return bucketed.fit(task, checked, choice=choice, **options)


def chosen(task, config: Config | dict | None = None):
    """(the config resolved for the layout it trains on, the ``layout.Choice``): what ``fit``
    trains. Settings left unset come from that layout's recipe, so pass ``config`` unresolved."""
    raw = Config.of(config)
    choice = layout.choose(task, raw.resolve(task))
    return dataclasses.replace(raw, layout=choice.layout).resolve(task), choice


def state_template(task, config: Config, inputs: int | None = None):
    """A state of the shapes a run of ``config`` (layout decided) checkpoints, to read one back:
    zeros of each leaf's shape and dtype, traced abstractly (nothing drawn or compiled)."""
    if inputs is None:
        shape = simulation.observation_shape(task, config.seed) or ()
        inputs = shape[0] if shape else 1
    if config.per_sample:
        shapes = jax.eval_shape(lambda: minibatch.template(task, config, inputs))
    else:
        shapes = jax.eval_shape(lambda: loop.initial_state(config, len(task.support), inputs))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
