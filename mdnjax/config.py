"""Every setting of a training run, in one frozen dataclass.

``Config`` is what the CLI builds from its flags, what ``fit`` consumes and what a run
directory stores as ``config.json``. ``None`` fields mean "the task's default" and are filled
by ``Config.resolve``; ``Config.validate`` raises ``ValueError`` with a one-line message
for anything out of range.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from mdnjax import tasks

LAYOUTS = ("packed", "padded")
BACKENDS = ("jax", "torch", "torch-loop")
WEIGHTINGS = ("per-y", "per-sample")
SCHEDULES = ("constant", "cosine")
SPACES = ("raw", "unconstrained")
# A recipe fills every training setting left unset, per task.
RECIPES = {
    # Measured at 10^6 samples (README): per-sample NPE objective, cosine decay from 1e-2, a wider
    # backbone (free: it sees only the ~100–400 distinct y), and the mixture fitted to logit(θ)
    # or log(θ), where these posteriors are closer to Gaussian and no mass leaks off the support.
    "fast": {
        name: {
            "epochs": 4000,
            "lr": 1e-2,
            "weighting": "per-sample",
            "schedule": "cosine",
            "space": "unconstrained",
            "hidden": (64, 64, 64),
        }
        for name in ("beta", "gamma")
    }
    | {  # the bimodal middle y are rare under this prior: equal weight per y serves them better
        "beta-mixture": {
            "epochs": 4000,
            "lr": 3e-3,
            "weighting": "per-y",
            "schedule": "cosine",
            "space": "unconstrained",
            "hidden": (64, 64, 64),
        }
    },
    "notebook": {  # the notebook's: equal weight per y, constant learning rate, raw θ, 24-25-16
        name: {
            "epochs": 1000,
            "lr": lr,
            "weighting": "per-y",
            "schedule": "constant",
            "space": "raw",
            "hidden": (24, 25, 16),
        }
        for name, lr in (("beta", 1e-3), ("gamma", 1e-2), ("beta-mixture", 1e-3))
    },
}
DEFAULT_RECIPE = "fast"


class ConfigError(ValueError):
    """A setting or an input that cannot be used; its message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one run; defaults reproduce the notebook's recipe.

    Attributes:
        prior: task name, ``"beta"`` or ``"gamma"``.
        alpha, beta, trials: prior parameters and n (``None``: the task's default).
        mix_weights, mix_alpha, mix_beta: the ``beta-mixture`` prior's components (``None``: the
            default, 0.5·Beta(10, 30) + 0.5·Beta(30, 10)).
        samples: number of simulations.
        components: K, Gaussians in the mixture.
        hidden: widths of the ReLU backbone (recipe default).
        recipe: fills ``epochs``, ``lr``, ``weighting``, ``schedule``, ``space`` and ``hidden``
            when they are ``None`` (see ``RECIPES``).
        epochs: full-batch Adam steps.
        lr: Adam (peak) learning rate.
        weighting: ``"per-y"`` (the notebook: Σ_y of each y's mean NLL) or ``"per-sample"``
            (the mean NLL over all (θ, y) pairs, the standard NPE objective).
        schedule: learning-rate schedule, ``"constant"`` or ``"cosine"`` (decay to 0).
        seed: seeds the simulation and the network initialisation.
        plot_y: observations to plot and report (``None``: the notebook's).
        space: ``"raw"`` fits the mixture to θ; ``"unconstrained"`` fits it to logit(θ) (beta) or
            log(θ) (gamma) and maps the density back with its Jacobian (no mass off the support).
        layout: ``"packed"`` (fast) or ``"padded"`` (reference) bucket layout.
        backend: ``"jax"``, ``"torch"`` (vectorized) or ``"torch-loop"`` (the notebook's loop).
        log_every: epochs between printed losses; also the epochs run per dispatch.
        torch_threads: threads for the torch backends.
        devices: devices the JAX backend splits the bucket rows over (``None``: all).
    """

    prior: str = "beta"
    alpha: float | None = None
    beta: float | None = None
    trials: int = 100
    mix_weights: tuple[float, ...] | None = None
    mix_alpha: tuple[float, ...] | None = None
    mix_beta: tuple[float, ...] | None = None
    samples: int = 1_000_000
    components: int = 8
    hidden: tuple[int, ...] | None = None
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None
    lr: float | None = None
    weighting: str | None = None
    schedule: str | None = None
    seed: int = 0
    plot_y: tuple[int, ...] | None = None
    space: str | None = None
    layout: str = "packed"
    backend: str = "jax"
    log_every: int = 50
    torch_threads: int = 1
    devices: int | None = None

    def task(self):
        """The task these settings describe."""
        if self.prior == "beta-mixture":
            mix = (self.mix_weights, self.mix_alpha, self.mix_beta)
            if all(m is None for m in mix):
                return tasks.BetaMixtureTask(trials=int(self.trials))
            if any(m is None for m in mix) or len({len(m) for m in mix}) != 1:
                raise ConfigError("--mix-weights, --mix-alpha and --mix-beta must be given together, equally long")
            comps = tuple((float(w), float(a), float(b)) for w, a, b in zip(*mix))
            return tasks.BetaMixtureTask(comps, int(self.trials))
        if any(m is not None for m in (self.mix_weights, self.mix_alpha, self.mix_beta)):
            raise ConfigError("--mix-weights, --mix-alpha and --mix-beta apply to --prior beta-mixture only")
        return tasks.make_task(self.prior, self.alpha, self.beta, self.trials)

    def resolve(self) -> Config:
        """A copy with every ``None`` replaced by the task's default."""
        task = self.task()
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe][self.prior]
        pick = lambda name: recipe[name] if getattr(self, name) is None else getattr(self, name)  # noqa: E731
        if self.prior == "beta-mixture" and (self.alpha is not None or self.beta is not None):
            raise ConfigError("--alpha/--beta do not apply to beta-mixture: use --mix-alpha/--mix-beta")
        return dataclasses.replace(
            self,
            alpha=getattr(task, "alpha", None),
            beta=getattr(task, "beta", None),
            epochs=int(pick("epochs")),
            lr=float(pick("lr")),
            weighting=pick("weighting"),
            schedule=pick("schedule"),
            plot_y=task.default_plot_y() if self.plot_y is None else tuple(int(v) for v in self.plot_y),
            hidden=tuple(int(h) for h in pick("hidden")),
            space=pick("space"),
        )

    def validate(self) -> Config:
        """Checks every field; returns the resolved config or raises ``ConfigError``."""
        try:
            return self._validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _validate(self) -> Config:
        if self.prior not in tasks.PRIORS:
            raise ConfigError(f"unknown prior {self.prior!r}: choose one of {', '.join(tasks.PRIORS)}")
        cfg = self.resolve()
        task = cfg.task()  # checks alpha, beta, trials
        if cfg.samples < 2:
            raise ConfigError(f"--samples must be >= 2 to form a bucket, got {cfg.samples}")
        if cfg.components < 1:
            raise ConfigError(f"--components must be >= 1, got {cfg.components}")
        if not cfg.hidden or min(cfg.hidden) < 1:
            raise ConfigError(f"--hidden widths must be >= 1, got {cfg.hidden}")
        if cfg.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
        if not (math.isfinite(cfg.lr) and cfg.lr > 0):
            raise ConfigError(f"--lr must be a finite number > 0, got {cfg.lr}")
        if cfg.log_every < 1:
            raise ConfigError(f"--log-every must be >= 1, got {cfg.log_every}")
        if cfg.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {cfg.weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if cfg.space not in SPACES:
            raise ConfigError(f"unknown space {cfg.space!r}: choose one of {', '.join(SPACES)}")
        if cfg.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {cfg.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if cfg.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
        if cfg.layout == "padded" and cfg.weighting != "per-y":
            raise ConfigError("--layout padded computes the notebook's per-y objective only: use --recipe notebook")
        if cfg.backend != "jax" and (cfg.weighting != "per-y" or cfg.schedule != "constant" or cfg.space != "raw"):
            raise ConfigError("the torch backends train the notebook's objective: use --recipe notebook")
        if cfg.devices is not None and cfg.devices < 1:
            raise ConfigError(f"--devices must be >= 1, got {cfg.devices}")
        if cfg.layout == "padded" and cfg.devices not in (None, 1):
            raise ConfigError("--layout padded runs on one device: use --devices 1")
        if cfg.torch_threads < 1:
            raise ConfigError(f"--torch-threads must be >= 1, got {cfg.torch_threads}")
        for y in cfg.plot_y:
            task.check_y(y)
        return cfg

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuilds a config from ``config.json``; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"config has unknown fields: {', '.join(sorted(unknown))}")
        data = dict(data)
        for key in ("hidden", "plot_y", "mix_weights", "mix_alpha", "mix_beta"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)
