"""Loss kernels: one signature, ``nll(logits, means, log_vars, data) -> scalar``.

Each computes −Σ_rows weight · Σ_{real samples} log q(θ) for per-y mixtures (num_y, K) over a
``mdnjax.layout.Data`` and is tested against the autodiff reference ``mdnjax.objective.reference_nll``.

* ``tiles``: cache-sized tiles with a hand-written gradient (the CPU fast path).
* ``reference``: the vmapped, masked logsumexp with autodiff (``mdnjax.objective``).
"""

from __future__ import annotations

from mdnjax import objective
from mdnjax.kernels import tiles

KERNELS = {"tiles": tiles.nll, "reference": objective.reference_nll}


def for_layout(layout: str):
    """The kernel a layout trains with: ``packed`` → tiles, ``padded`` → the reference."""
    return KERNELS["reference" if layout == "padded" else "tiles"]
