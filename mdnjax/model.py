"""The Mixture Density Network: y/n → (logits, means, log_vars) of K Gaussians.

The default architecture is the notebook's: a 1→24→25→16 ReLU backbone and three linear heads.
Weights and biases start as in PyTorch's ``nn.Linear`` (uniform in ±1/√fan_in), so the
notebook's learning rates carry over and the PyTorch reference can share initial weights.

Training uses the functional Flax NNX loop: ``init`` splits the module into a static graph
definition and a pure dict of parameters; ``apply`` merges them inside ``jax.jit``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> graphdef, params = init(jax.random.key(0), components=8)
    >>> logits, means, log_vars = apply(graphdef, params, jnp.array([0.1, 0.3]))
    >>> logits.shape
    (2, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

DEFAULT_HIDDEN = (24, 25, 16)


def _torch_linear(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    bound = 1.0 / math.sqrt(fan_in)

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    # "highest": full float32 matmuls on every backend (recent GPUs default to TF32, which would
    # break the parity tolerances); on CPU this changes nothing
    return nnx.Linear(
        fan_in, fan_out, kernel_init=uniform, bias_init=uniform, precision=jax.lax.Precision.HIGHEST, rngs=rngs
    )


class MDN(nnx.Module):
    """Mixture Density Network for a scalar θ given a scalar input x = y / n.

    Args:
        components: K, the number of Gaussians (K = 1 is a single-Gaussian posterior).
        hidden: widths of the ReLU backbone.
        rngs: Flax random streams for initialisation.
    """

    def __init__(self, components: int = 8, hidden: Sequence[int] = DEFAULT_HIDDEN, *, rngs: nnx.Rngs):
        widths = (1, *hidden)
        self.backbone = nnx.List([_torch_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.logits_head = _torch_linear(widths[-1], components, rngs)
        self.means_head = _torch_linear(widths[-1], components, rngs)
        self.log_vars_head = _torch_linear(widths[-1], components, rngs)

    def __call__(self, x: jax.Array):
        """Maps inputs x, shape (B,), to mixture parameters, each of shape (B, K)."""
        h = x[:, None]  # (B, 1)
        for layer in self.backbone:
            h = jax.nn.relu(layer(h))
        return self.logits_head(h), self.means_head(h), self.log_vars_head(h)


def init(key: jax.Array, components: int = 8, hidden: Sequence[int] = DEFAULT_HIDDEN):
    """Builds an MDN and splits it for a functional training loop.

    Args:
        key: a ``jax.random`` key.
        components: K.
        hidden: backbone widths.

    Returns:
        graphdef: the static structure, for ``apply``.
        params: a pure dict of parameter arrays (a pytree for optax).
    """
    model = MDN(components, tuple(hidden), rngs=nnx.Rngs(params=key))
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def apply(graphdef, params, x: jax.Array):
    """Runs the MDN: x (B,) → (logits, means, log_vars), each (B, K)."""
    return nnx.merge(graphdef, params)(x)
