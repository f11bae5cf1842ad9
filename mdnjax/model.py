"""The Mixture Density Network: y → (logits, means, log_vars | scales) of K Gaussians on ℝ^D.

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

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mdnjax import embeddings
from mdnjax.embeddings import torch_linear as _torch_linear

DEFAULT_HIDDEN = (24, 25, 16)


class MDN(nnx.Module):
    """Mixture Density Network for θ ∈ ℝ^D given an input x ∈ ℝ^M (the standardised y).

    For D = 1 the heads give (logits, means, log_vars), each (B, K). For D > 1 they give
    logits (B, K), means (B, K, D) and scales (B, K, D(D+1)/2), the precision factor of each
    component (``mdnjax.mixture.precision_factor``); the first D scales play the part of the log
    variances, so D = 1 is the same network with the same numbers. Heads start as every other
    layer (small weights), so every component starts near the identity covariance, with nearly
    equal weights.

    Args:
        components: K, the number of Gaussians (K = 1 is a single-Gaussian posterior).
        hidden: widths of the ReLU backbone.
        dim: D, the number of parameters.
        inputs: M, the length of an observation.
        embedding: an ``mdnjax.embeddings.Embedding`` that maps the M inputs first (None: none).
        skip: a linear map from the inputs (before any embedding) added to every component's mean,
            so a location that is linear in y needs no regression through the ReLU layers. It
            starts at zero (the network starts as the one without it) and is drawn after every
            other layer, so the other layers start with the same weights either way; the
            per-sample layout then sets it by least squares and keeps it fixed
            (``batches.skip_kernel``). A NaN input (a set encoder's padding) reads as 0 there.
        rngs: Flax random streams for initialisation.
    """

    def __init__(
        self,
        components: int = 8,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dim: int = 1,
        inputs: int = 1,
        embedding: embeddings.Embedding | None = None,
        skip: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        raw_inputs = inputs
        if embedding is not None and embedding.kind != "none":  # the tree holds "embed" only when used
            self.embed = embeddings.build(embedding, inputs, rngs=rngs)
            inputs = embedding.output_width(inputs)
        widths = (inputs, *hidden)
        self.dim, self.components = dim, components
        self.backbone = nnx.List([_torch_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.logits_head = _torch_linear(widths[-1], components, rngs)
        self.means_head = _torch_linear(widths[-1], components * dim, rngs)
        self.log_vars_head = _torch_linear(widths[-1], components * dim * (dim + 1) // 2, rngs)
        if skip:  # the tree holds "means_skip" only when used, as for "embed"
            self.means_skip = nnx.Linear(
                raw_inputs,
                components * dim,
                use_bias=False,
                kernel_init=nnx.initializers.zeros,
                precision=jax.lax.Precision.HIGHEST,
                rngs=rngs,
            )

    def __call__(self, x: jax.Array):
        """Maps inputs x, shape (B,) for M = 1 or (B, M), to mixture parameters."""
        h = inputs = x[:, None] if x.ndim == 1 else x  # (B, M)
        if hasattr(self, "embed"):
            h = self.embed(h)
        for layer in self.backbone:
            h = jax.nn.relu(layer(h))
        logits, means, scales = self.logits_head(h), self.means_head(h), self.log_vars_head(h)
        if hasattr(self, "means_skip"):
            means = means + self.means_skip(jnp.where(jnp.isnan(inputs), 0.0, inputs))  # NaN: padding
        if self.dim == 1:
            return logits, means, scales
        k = self.components
        return logits, means.reshape(-1, k, self.dim), scales.reshape(-1, k, scales.shape[-1] // k)


def init(
    key: jax.Array,
    components: int = 8,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    dim: int = 1,
    inputs: int = 1,
    embedding: embeddings.Embedding | None = None,
    skip: bool = False,
):
    """Builds an MDN and splits it for a functional training loop.

    Args:
        key: a ``jax.random`` key.
        components: K.
        hidden: backbone widths.
        dim: D, parameters.
        inputs: M, observation length.
        embedding: an embedding network for y (``mdnjax.embeddings``), or None.
        skip: the linear skip from the inputs to the means (``MDN``).

    Returns:
        graphdef: the static structure, for ``apply``.
        params: a pure dict of parameter arrays (a pytree for optax).
    """
    graphdef, _ = structure(components, hidden, dim, inputs, embedding, skip)
    return graphdef, _initializer(components, tuple(hidden), dim, inputs, embedding, bool(skip))(key)


def structure(
    components: int = 8,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    dim: int = 1,
    inputs: int = 1,
    embedding: embeddings.Embedding | None = None,
    skip: bool = False,
):
    """(graphdef, the parameters' shapes and dtypes as ``jax.ShapeDtypeStruct``) of an MDN, traced
    abstractly: nothing is drawn or compiled (what a posterior or a checkpoint template needs)."""
    abstract = nnx.eval_shape(
        lambda: MDN(components, tuple(hidden), dim, inputs, embedding, skip, rngs=nnx.Rngs(params=jax.random.key(0)))
    )
    graphdef, state = nnx.split(abstract, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def _initializer(components, hidden, dim, inputs, embedding, skip):
    """key → parameters, one compiled program per architecture (rather than one small program per
    layer shape), kept for the process when the architecture is hashable."""
    try:
        return _cached_initializer(components, hidden, dim, inputs, embedding, skip)
    except TypeError:  # an unhashable (user's) embedding: compiled anew
        return _one_shot(_build(components, hidden, dim, inputs, embedding, skip))


def _one_shot(fn):
    """``jax.jit(fn)`` for a program that runs once: on XLA:CPU compiled without LLVM's
    optimisations (the threefry draws of every layer take 1.5–2.7 s to optimise and microseconds
    to run; 0.9 s to compile this way). Its numbers are those of running ``fn`` without ``jit``
    (the optimised program contracts the uniform draw's scale-and-shift into one rounding)."""
    if jax.default_backend() != "cpu":
        return jax.jit(fn)
    jitted = jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})

    def run(*args):  # inside another trace (a template by eval_shape) the options do not apply
        return fn(*args) if any(isinstance(a, jax.core.Tracer) for a in args) else jitted(*args)

    return run


def _build(components, hidden, dim, inputs, embedding, skip):
    def build(key):
        model = MDN(components, hidden, dim, inputs, embedding, skip, rngs=nnx.Rngs(params=key))
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    return build


@functools.lru_cache(maxsize=32)
def _cached_initializer(components, hidden, dim, inputs, embedding, skip):
    return _one_shot(_build(components, hidden, dim, inputs, embedding, skip))


def apply(graphdef, params, x: jax.Array):
    """Runs the MDN: x (B,) or (B, M) → mixture parameters (``MDN.__call__``)."""
    return nnx.merge(graphdef, params)(x)
