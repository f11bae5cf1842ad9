"""``layout="auto"``: bucketed (binned) when the observations repeat enough to pay off, per sample
otherwise; the choice comes with its reason, for the console and the run folder.

Continuous observations never repeat: per sample. Counts are judged on a pilot of simulations from
a random stream of their own (the run's draws stay as they are): the share of the run's samples
expected to fall in buckets of at least ``REPEAT`` samples. At ``AUTO_SHARE`` or more the binned
layout pays off (an epoch's cost bounded in N, each y learnt from its own draws); below it each
pair is trained on its own. The share in buckets of at least ``DENSE`` is recorded beside it. On auto
nothing is dropped: the bucketed layouts keep a y seen once as a bucket of one.

Example:
    >>> from mdnjax import tasks
    >>> from mdnjax.config import Config
    >>> choice = choose(tasks.BetaBinomial(), Config(samples=100_000))
    >>> choice.layout, choice.min_count
    ('binned', 1)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mdnjax import sources
from mdnjax.config import AUTO, MAX_BINNED_DIM, PER_SAMPLE_LAYOUT, Config
from mdnjax.simulation import draw, observation_kind

REPEAT = 10  # samples per bucket from which a y counts as repeating
DENSE = 100  # the bucket budget's dense buckets (recorded)
AUTO_SHARE = 0.8  # share of samples in repeating buckets from which the bucketed layout pays off
PILOT_STREAM = 0xA070  # the pilot's own random stream
PILOT_MIN, PILOT_MAX = 10_000, 200_000


class Choice(NamedTuple):
    """The layout a run trains on and why."""

    layout: str
    reason: str
    min_count: int  # a y needs this many samples to form a bucket (1 on auto: nothing dropped)
    repeat_share: float | None  # the share of samples expected in buckets of >= REPEAT (counts only)
    dense_share: float | None = None  # ... and in buckets of >= DENSE

    def to_json(self) -> dict:
        return {
            "layout": self.layout,
            "reason": self.reason,
            "min_count": self.min_count,
            "repeat_share": self.repeat_share,
            "dense_share": self.dense_share,
        }


def choose(task, config: Config) -> Choice:
    """The layout of ``config.layout`` (``"auto"`` decided here); see the module docstring."""
    from mdnjax.layout.build import MIN_COUNT

    if config.layout != AUTO:
        return Choice(config.layout, f"layout {config.layout} asked for", MIN_COUNT, None)
    if observation_kind(task, config.seed) == "continuous":
        reason = "continuous observations never repeat: each (θ, y) pair is its own bucket"
        return Choice(PER_SAMPLE_LAYOUT, reason, 1, None)
    n = config.samples
    pilot = int(min(n, max(PILOT_MIN, min(PILOT_MAX, n // 10))))
    if sources.stored(task) is not None:  # stored rows are in random order: the first ones are a pilot
        y = np.asarray(task.data.read(0, pilot)[1])
    else:
        _, y, _ = draw(task, np.random.default_rng([config.seed, PILOT_STREAM]), pilot, "raw")
    _, counts = np.unique(y.reshape(pilot, -1), axis=0, return_counts=True)
    expected = counts * (n / pilot)  # samples each y seen in the pilot should get in the run
    share = float(counts[expected >= REPEAT].sum() / pilot)
    dense = float(counts[expected >= DENSE].sum() / pilot)
    bucketed = "binned" if len(task.support) <= MAX_BINNED_DIM else "packed"
    seen = (
        f"{100 * share:.1f}% of samples expected in buckets of >= {REPEAT} ({100 * dense:.1f}% in buckets of "
        f">= {DENSE}; pilot of {pilot:,} draws)"
    )
    if share >= AUTO_SHARE:
        return Choice(bucketed, f"observations repeat: {seen}", 1, share, dense)
    reason = f"observations rarely repeat: {seen}, below {100 * AUTO_SHARE:.0f}%"
    return Choice(PER_SAMPLE_LAYOUT, reason, 1, share, dense)
