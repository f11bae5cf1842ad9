"""How to train: model, optimisation, data and runtime settings, in one frozen dataclass.

``Config`` holds no task parameters: the task is a separate object (``mdnjax.Task``). ``None``
fields are filled by ``Config.resolve(task)`` from the recipe (``RECIPES``) and the task's own
recommendations (``Task.recommended``). Every check raises ``ConfigError`` naming the field.

Example:
    >>> from mdnjax import tasks
    >>> cfg = Config(samples=10_000).resolve(tasks.BetaBinomial())
    >>> cfg.epochs, cfg.lr, cfg.weighting, cfg.hidden
    (4000, 0.01, 'per-sample', (64, 64, 64))
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

import numpy as np

PER_SAMPLE_LAYOUT = "per-sample"  # every (θ, y) pair its own bucket, trained in minibatches
SKIP_FROM = 100_000  # simulations from which the per-sample layout's linear skip is on by default
# (``samples``, or every row of stored simulations: their held-out share counts, as a simulated
# run's validation share does)
LAYOUTS = ("packed", "padded", "binned", PER_SAMPLE_LAYOUT)  # what a run trains on ("auto" picks one)
AUTO = "auto"
WEIGHTINGS = ("per-y", "per-sample")
SCHEDULES = ("constant", "cosine", "plateau")  # plateau: the per-sample layout's step size halved on plateaus
SPACES = ("raw", "unconstrained")
# A recipe fills every training setting left unset; a task may adjust it (``Task.recommended``).
RECIPES = {
    # Measured at 10^6 samples (README): the per-sample NPE objective, cosine decay from 1e-2, a
    # wider backbone (free: it sees only the distinct y), the mixture fitted in the unconstrained space.
    "fast": {
        "epochs": 4000,
        "lr": 1e-2,
        "weighting": "per-sample",
        "schedule": "cosine",
        "space": "unconstrained",
        "hidden": (64, 64, 64),
    },
    # The notebook's: equal weight per y, constant learning rate, raw θ, a 24-25-16 backbone.
    "notebook": {
        "epochs": 1000,
        "lr": 1e-3,
        "weighting": "per-y",
        "schedule": "constant",
        "space": "raw",
        "hidden": (24, 25, 16),
    },
}
# The per-sample layout's settings (single (θ, y) pairs in minibatches, early stopping on a
# validation split): measured on sbibm tasks (docs/quality.md); ``epochs`` is the most passes.
PER_SAMPLE = {
    "epochs": 1000,
    "lr": 1e-3,
    "weighting": "per-sample",
    "schedule": "plateau",
    "space": "unconstrained",
    "hidden": (64, 64),
}
DEFAULT_RECIPE = "fast"
MAX_EPOCHS = 1_000_000
MAX_COMPONENTS = 64
MAX_WIDTH = 4096
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A setting that cannot be used. ``field`` names it; the message is one line."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _integer(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; integral floats (1e4) and numpy scalars are accepted."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok and not isinstance(value, numbers.Integral):
        ok = math.isfinite(value) and value == int(value)
    if not ok:
        raise ConfigError(f"{name} must be an integer, got {value!r}", name)
    value = int(value)
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"{name} must be {span}, got {value}", name)
    return value


def _share(name: str, value) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}", name)
    return float(value)


MAX_BINNED_DIM = 3  # the binned layout's cells per y are bins^D: beyond D = 3 they grow too coarse


def _layout(value, task) -> str:
    """The layout; above ``MAX_BINNED_DIM`` parameters the binned one gives way to the packed one."""
    chosen = _choice("layout", value, (*LAYOUTS, AUTO))
    if chosen == "binned" and task is not None and len(getattr(task, "support", ())) > MAX_BINNED_DIM:
        return "packed"
    return chosen


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}", name)
    return value


def _budget(value):
    if value is None:
        return None
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"memory_budget must be a number of GiB > 0, got {value!r}", "memory_budget")
    return float(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", name)
    return value


def _skip(value, chosen_layout: str, samples: int, embedding) -> bool:
    if value is None:  # the default: where it was measured to help (docs/quality.md); never beside a set
        # encoder (a linear map of the padded trials would undo its invariance to their order)
        kind = getattr(embedding, "kind", "mlp")  # unset: an MLP for a vector y, none for a scalar
        return chosen_layout == PER_SAMPLE_LAYOUT and samples >= SKIP_FROM and kind in ("mlp", "none")
    return _flag("linear_skip", value)


def _ema(value) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"ema must be a finite number of passes >= 0, got {value!r}", "ema")
    return float(value)


def _validation(value) -> float:
    share = _share("validation", value)
    if not 0.0 < share < 1.0:
        raise ConfigError(f"validation must be a share strictly between 0 and 1, got {value!r}", "validation")
    return share


def _embedding(value):
    """None (chosen from y's shape when training) or an ``Embedding``."""
    if value is None:
        return None
    from mdnjax.embeddings import Embedding

    try:
        return Embedding.of(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err).splitlines()[0], "embedding") from None


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one training run.

    Attributes:
        samples: number of simulations N.
        components: K, Gaussians in the mixture.
        hidden: widths of the ReLU backbone (recipe default).
        recipe: fills ``epochs``, ``lr``, ``weighting``, ``schedule``, ``space`` and ``hidden``
            when they are ``None`` (``RECIPES``, adjusted by the task's ``recommended``).
        epochs: full-batch Adam steps.
        lr: Adam (peak) learning rate.
        weighting: ``"per-y"`` (the notebook: Σ_y of each y's mean NLL) or ``"per-sample"``
            (the mean NLL over all (θ, y) pairs, the standard NPE objective).
        schedule: ``"constant"``, ``"cosine"`` (decay to 0 at ``epochs``) or ``"plateau"`` (the
            per-sample layout halves the step size after every ``patience // 4`` passes without a
            better validation loss; constant on the bucketed layouts).
        space: ``"raw"`` fits the mixture to θ; ``"unconstrained"`` to u = f(θ), f from θ's
            support (``mdnjax.task.Bound``), with the Jacobian in the density.
        layout: ``"binned"`` (the default: each y's draws as ``bins`` bins, two points per bin,
            an epoch whose cost does not grow with N), ``"packed"`` (every draw, cache-sized
            tiles: the exact per-sample objective) or ``"padded"`` (one row per y, the autodiff
            reference). For θ ∈ ℝ^D (D ≤ 3) the binned layout summarises each y with many draws
            cell by cell (``layout.bin_nd``); above D = 3 ``resolve`` trains on ``"packed"``.
        bins: B, bins per y of the binned layout for a scalar θ (θ ∈ ℝ^D: ``layout.CELLS`` cells per y).
        seed: seeds the simulation and the network initialisation (0 ≤ seed < 2^32).
        holdout: extra simulations, as a share of ``samples`` (at most 2·10^5), that training
            never sees; they check q(θ | y) bucket by bucket (``mdnjax.heldout``).
        log_every: epochs run per dispatch (and between progress reports).
        devices: devices the bucket rows are split over (``None``: all).
        batch_size: the per-sample layout's minibatch of (θ, y) pairs.
        patience: the per-sample layout stops after this many passes without a better
            validation loss, and keeps the best parameters.
        validation: the per-sample layout's share of the simulations kept for validation.
        embedding: the per-sample layout's embedding network for y (``mdnjax.embeddings``): a
            kind (``"none"``, ``"mlp"``, ``"set"``, ``"conv"``), a dict of its fields, or None
            (an MLP for a vector y, none for a scalar).
        ema: the per-sample layout's moving average of the parameters: its time constant in
            passes over the training pairs (after every step a ← d·a + (1 − d)·params with
            d = 1 − 1/(ema · steps per pass); 0 turns it off). The average is what is validated,
            kept as the best and saved (measured: docs/quality.md).
        linear_skip: a linear map from the standardised y straight to every component's mean,
            beside the network (``mdnjax.model.MDN``). The per-sample layout sets it to the
            least-squares map of the standardised θ on y over the training pairs (the inputs
            whose coefficient is significant, ``batches.skip_kernel``) and keeps it fixed, so the
            network learns what is left; the bucketed layouts train it from zero. ``None`` (the
            default): on for the per-sample layout from ``SKIP_FROM`` simulations (``samples``,
            or every row of stored simulations, held-out ones included) with an MLP embedding (or
            none), off otherwise (measured: docs/quality.md).
        memory_budget: GiB the per-sample layout may hold of stored simulations (None: half of
            the memory available); above it a run streams them from disk chunk by chunk
            (``mdnjax.train.streamed``).

    ``layout="auto"`` (the default) trains on the binned layout when the observations repeat
    enough to pay off and per sample otherwise (``mdnjax.layout.choose``); ``"per-sample"``
    forces single pairs, whose defaults come from ``PER_SAMPLE`` rather than the recipe.
    """

    samples: int = 1_000_000
    components: int = 8
    hidden: tuple[int, ...] | None = None
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None
    lr: float | None = None
    weighting: str | None = None
    schedule: str | None = None
    space: str | None = None
    layout: str = AUTO
    bins: int = 256
    seed: int = 0
    holdout: float = 0.1
    log_every: int = 50
    devices: int | None = None
    batch_size: int = 128
    patience: int = 20
    validation: float = 0.1
    embedding: Any = None
    memory_budget: float | None = None
    ema: float = 1.0
    linear_skip: bool | None = None

    @property
    def per_sample(self) -> bool:
        """Whether the run trains on single pairs in minibatches (the per-sample layout)."""
        return self.layout == PER_SAMPLE_LAYOUT

    def resolve(self, task=None) -> Config:
        """A validated copy with every ``None`` training setting filled from the recipe and the task.

        Raises:
            ConfigError: a setting out of range, naming the field.
        """
        recipe = dict(RECIPES[_choice("recipe", self.recipe, RECIPES)])
        recipe.update(getattr(task, "recommended", {}).get(self.recipe, {}))
        if self.per_sample:
            recipe = dict(PER_SAMPLE)
        pick = lambda name: recipe[name] if getattr(self, name) is None else getattr(self, name)  # noqa: E731
        hidden = pick("hidden")
        if isinstance(hidden, (int, float)) or not hasattr(hidden, "__iter__"):
            raise ConfigError(f"hidden must be a sequence of widths, got {hidden!r}", "hidden")
        hidden = tuple(_integer("hidden", h, 1, MAX_WIDTH) for h in hidden)
        if not hidden:
            raise ConfigError("hidden needs at least one width", "hidden")
        lr = pick("lr")
        if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {lr!r}", "lr")
        samples, chosen_layout = _integer("samples", self.samples, 2), _layout(self.layout, task)
        embedding = _embedding(self.embedding)
        from mdnjax import sources  # here: sources builds on this module

        stored = sources.stored(task)  # stored simulations: every row counts, the held-out share too
        simulations = samples if stored is None else stored.data.count
        return dataclasses.replace(
            self,
            samples=samples,
            components=_integer("components", self.components, 1, MAX_COMPONENTS),
            hidden=hidden,
            epochs=_integer("epochs", pick("epochs"), 1, MAX_EPOCHS),
            lr=float(lr),
            weighting=_choice("weighting", pick("weighting"), WEIGHTINGS),
            schedule=_choice("schedule", pick("schedule"), SCHEDULES),
            space=_choice("space", pick("space"), SPACES),
            layout=chosen_layout,
            bins=_integer("bins", self.bins, 1, 65536),
            seed=_integer("seed", self.seed, 0, MAX_SEED),
            holdout=_share("holdout", self.holdout),
            log_every=_integer("log_every", self.log_every, 1),
            devices=None if self.devices is None else _integer("devices", self.devices, 1),
            batch_size=_integer("batch_size", self.batch_size, 1),
            patience=_integer("patience", self.patience, 1),
            validation=_validation(self.validation),
            embedding=embedding,
            memory_budget=_budget(self.memory_budget),
            ema=_ema(self.ema),
            linear_skip=_skip(self.linear_skip, chosen_layout, simulations, embedding),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if hasattr(self.embedding, "to_json"):
            d["embedding"] = self.embedding.to_json()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def of(cls, config) -> Config:
        """A ``Config`` from what a user passes: a ``Config``, None (the defaults) or a dict of its
        fields; ``ConfigError`` in one line otherwise."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        raise ConfigError(f"config must be a mdnjax.Config or a dict of its fields, got {type(config).__name__}")

    @classmethod
    def from_run(cls, data: dict[str, Any]) -> Config:
        """A run folder's ``config.json``: a field it predates gets the value that run trained
        with (``ema`` 0: no average; no linear skip)."""
        return cls.from_dict({"ema": 0.0, "linear_skip": False, **data})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuilds a config from ``config.json``; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"config has unknown fields: {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("hidden") is not None:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)
