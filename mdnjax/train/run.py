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

from mdnjax import layout, simulation
from mdnjax.config import Config
from mdnjax.train import bucketed, loop, minibatch


def fit(task, config: Config | dict | None = None, *, choice: layout.Choice | None = None, **options):
    """Simulates and trains an MDN posterior q(θ | y) for ``task`` on the layout ``config`` asks
    for (``"auto"`` by default: binned when the observations repeat, per sample otherwise).

    Args:
        task: a ``mdnjax.Task`` or a built-in task's name.
        config: a ``Config`` or a dict of its fields (default ``Config()``); settings left unset
            come from the recipe of the layout trained on.
        choice: the layout already decided (``chosen``), to skip deciding again.
        **options: ``init_state``, ``history``, ``callback``, ``on_stage``, ``on_checkpoint``,
            ``checkpoint_every``, ``should_stop`` (see ``mdnjax.train.bucketed.fit``); ``buckets``
            (the bucketed layouts) or ``pairs`` (the per-sample layout).

    Returns:
        ``bucketed.Result`` or ``minibatch.Result``; both carry ``posterior``, ``state``,
        ``losses``, ``timings``, ``report`` (with the layout's choice and reason) and ``config``
        (resolved, its layout the one trained on).
    """
    task = bucketed.resolve_task(task)
    raw = Config.of(config)
    if options.get("buckets") is not None:
        checked, choice = raw.resolve(task), None
    elif options.get("pairs") is not None and raw.layout in ("auto", "per-sample"):
        choice = layout.Choice("per-sample", "pairs given", 1, None)
        checked = dataclasses.replace(raw, layout="per-sample").resolve(task)
    elif choice is None:
        checked, choice = chosen(task, raw)
    else:
        checked = dataclasses.replace(raw, layout=choice.layout).resolve(task)
    if checked.layout == "per-sample":
        options.pop("buckets", None)
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
    """A state of the shapes a run of ``config`` (layout decided) checkpoints, to read one back."""
    if inputs is None:
        shape = simulation.observation_shape(task, config.seed) or ()
        inputs = shape[0] if shape else 1
    if config.layout == "per-sample":
        return minibatch.template(task, config, inputs)
    return loop.initial_state(config, len(task.support), inputs)
