"""Loss kernels: one signature, ``nll(logits, means, log_vars, data) -> scalar``.

Each computes −Σ_rows weight · Σ_{real samples} log q(θ) for per-y mixtures (num_y, K) over a
``mdnjax.data.Data`` and is tested against the autodiff reference ``mdnjax.objective.reference_nll``.

* ``tiles``: cache-sized tiles, a cheap shift with a per-tile safe fallback, the hand-written
  gradient (the CPU path).
* ``single-pass``: the same gradient in one pass with the always-safe per-sample shift (the
  accelerator path: no tile loop, no data-dependent branch).
* ``full``: θ ∈ ℝ^D, full-covariance components, the same two passes (``mdnjax.kernels.full``).
* ``reference``: the vmapped, masked logsumexp with autodiff (``mdnjax.objective``).

Example:
    >>> select(backend="cpu").__name__, select(backend="gpu").__name__, select(reference=True).__name__
    ('nll', 'nll_single_pass', 'reference_nll')
"""

from __future__ import annotations

import jax

from mdnjax import objective
from mdnjax.kernels import full, tiles

KERNELS = {"tiles": tiles.nll, "single-pass": tiles.nll_single_pass, "reference": objective.reference_nll}
FULL_KERNELS = {"tiles": full.nll, "single-pass": full.nll_single_pass, "reference": objective.reference_nll}
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


def select(reference: bool = False, backend: str | None = None, dim: int = 1):
    """The kernel to train with on a backend (default: JAX's default backend): the autodiff
    reference when asked (the padded layout's ``Plan.reference``); otherwise tiles on CPU and the
    single pass on an accelerator. For θ ∈ ℝ^D (``dim`` > 1) the full-covariance kernels of
    ``mdnjax.kernels.full``."""
    table = KERNELS if dim == 1 else FULL_KERNELS
    if reference:
        return table["reference"]
    backend = jax.default_backend() if backend is None else backend
    return table["single-pass" if backend in ACCELERATORS else "tiles"]
