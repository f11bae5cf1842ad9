"""An overdispersed count model: θ an event rate, y ~ NegativeBinomial with mean 20θ.

python -m mdnjax.train --task examples/negbin.py:TASK --out runs/negbin
"""

import numpy as np
from scipy import stats

import mdnjax


def simulate(rng, n):  # numpy Generator in, (theta (n,), integer y (n,)) out
    theta = rng.gamma(2.0, 1 / 3.0, size=n)  # an event rate
    return theta, rng.negative_binomial(5, 5 / (5 + 20 * theta))  # overdispersed counts


TASK = mdnjax.Task(
    name="negbin",
    simulate=simulate,
    support=[(0.0, np.inf)],  # (low, high) per parameter; -inf / inf allowed
    log_prior=lambda t: stats.gamma.logpdf(t, 2.0, scale=1 / 3.0),  # optional: a quadrature reference
    log_likelihood=lambda t, y: stats.nbinom.logpmf(y, 5, 5 / (5 + 20 * np.asarray(t))),  # optional
)
