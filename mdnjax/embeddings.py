"""Embedding networks for y, described as data: an observation of M numbers (standardised) → a
vector the MDN's backbone reads.

An ``Embedding`` is a small frozen record (kind and widths) stored in ``posterior.json``, so
``mdnjax.load`` rebuilds the network without running user code. Kinds:

* ``"none"``: the standardised y itself (the default for a scalar y and the bucketed layouts);
* ``"mlp"``: a ReLU multilayer perceptron (the default for vector y);
* ``"set"``: a permutation-invariant set encoder (DeepSet): y is T iid trials of F numbers each,
  flattened trial by trial (M = T·F); a trial whose numbers are NaN is padding, so simulations may
  hold different numbers of trials. φ maps each trial, a masked mean pools them, and ρ maps the
  pooled vector and the share of trials present;
* ``"conv"``: a 1-D convolutional encoder for a series of M steps (``channels`` numbers per step):
  convolutions of width ``kernel``, each followed by ReLU and a max-pool of 2, then a linear map;
* ``"user"``: your own Flax NNX module, named ``path/to/file.py:NAME`` (``Embedding.of`` takes the
  string): ``NAME(inputs, out, *, rngs)`` maps (B, inputs) to (B, out). Like a task file, the spec
  records the file's SHA-256: loading a posterior re-imports it and refuses in one line when the
  file is gone or has changed.

Weights start as PyTorch's ``nn.Linear`` (uniform in ±1/√fan_in), like the MDN's.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> spec = Embedding("set", widths=(16,), out=8, features=2)
    >>> net = build(spec, inputs=6, rngs=nnx.Rngs(0))
    >>> y = jnp.arange(12.0).reshape(2, 6)
    >>> net(y).shape
    (2, 8)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

KINDS = ("none", "mlp", "set", "conv", "user")


@dataclasses.dataclass(frozen=True)
class Embedding:
    """An embedding network as data.

    Attributes:
        kind: one of ``KINDS``.
        widths: hidden widths (``mlp``: its layers; ``set``: φ's layers, ρ has one of the last
            width; ``conv``: the channels of each convolution).
        out: the length of the embedding (the backbone's input).
        features: ``set``: numbers per trial (F); ``conv``: channels per step of the series.
        kernel: ``conv``: the convolution's width.
        source: ``user``: ``path/to/file.py:NAME`` (the file's absolute path).
        sha256: ``user``: the file's SHA-256 when the spec was made.
    """

    kind: str = "mlp"
    widths: tuple[int, ...] = (64, 64)
    out: int = 32
    features: int = 1
    kernel: int = 5
    source: str | None = None
    sha256: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown embedding {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.out < 1 or self.features < 1 or self.kernel < 1 or any(w < 1 for w in self.widths):
            raise ValueError(f"embedding widths, out, features and kernel must be >= 1, got {self}")
        if self.kind not in ("none", "user") and not self.widths:
            raise ValueError(f"a {self.kind} embedding needs at least one width")
        if self.kind == "user" and not self.source:
            raise ValueError("a user embedding needs its source: path/to/file.py:NAME")

    def output_width(self, inputs: int) -> int:
        """The backbone's input width for observations of length ``inputs``."""
        return inputs if self.kind == "none" else self.out

    def check(self, inputs: int) -> None:
        """``ValueError`` (one line) when this embedding cannot read observations of length M."""
        if self.kind in ("set", "conv") and inputs % self.features:
            what = "trials of" if self.kind == "set" else "steps of"
            raise ValueError(
                f"a {self.kind} embedding reads {what} {self.features} numbers, but y has {inputs} (not a multiple)"
            )

    def to_json(self) -> dict:
        d = {
            "kind": self.kind,
            "widths": list(self.widths),
            "out": self.out,
            "features": self.features,
            "kernel": self.kernel,
        }
        if self.kind == "user":
            d.update({"source": self.source, "sha256": self.sha256})
        return d

    @classmethod
    def from_json(cls, d: dict | None) -> Embedding:
        if d is None:
            return cls("none")
        return cls(
            str(d["kind"]),
            tuple(int(w) for w in d["widths"]),
            int(d["out"]),
            int(d.get("features", 1)),
            int(d.get("kernel", 5)),
            d.get("source"),
            d.get("sha256"),
        )

    @classmethod
    def of(cls, value) -> Embedding:
        """An ``Embedding`` from a kind's name (default widths), a dict of its fields, or itself."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls("none")
        if isinstance(value, str) and ":" in value:  # path/to/file.py:NAME, the user's module
            return user(value)
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            d = dict(value)
            if "widths" in d:
                d["widths"] = tuple(d["widths"])
            return cls(**d)
        raise ValueError(f"embedding must be a kind name ({', '.join(KINDS)}), a dict or an Embedding, got {value!r}")


def torch_linear(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """A linear layer initialised as PyTorch's ``nn.Linear`` (uniform in ±1/√fan_in), full float32
    matmuls on every backend (recent GPUs default to TF32)."""
    bound = 1.0 / math.sqrt(fan_in)

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        fan_in, fan_out, kernel_init=uniform, bias_init=uniform, precision=jax.lax.Precision.HIGHEST, rngs=rngs
    )


class MLP(nnx.Module):
    """ReLU layers of ``widths``, then a linear map to ``out``."""

    def __init__(self, inputs: int, widths, out: int, *, rngs: nnx.Rngs):
        sizes = (inputs, *widths)
        self.layers = nnx.List([torch_linear(a, b, rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = torch_linear(sizes[-1], out, rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return self.head(x)


class SetEncoder(nnx.Module):
    """DeepSet: ρ(mean_t φ(y_t), share of trials present); NaN trials are padding."""

    def __init__(self, inputs: int, widths, out: int, features: int, *, rngs: nnx.Rngs):
        self.features = features
        self.trials = inputs // features
        self.phi = MLP(features, widths[:-1], widths[-1], rngs=rngs)
        self.rho = MLP(widths[-1] + 1, (widths[-1],), out, rngs=rngs)

    def __call__(self, x):
        trials = x.reshape(x.shape[0], self.trials, self.features)
        present = jnp.all(jnp.isfinite(trials), axis=-1)  # (B, T)
        h = jax.nn.relu(self.phi(jnp.where(present[..., None], trials, 0.0)))  # (B, T, H)
        count = jnp.sum(present, axis=-1, keepdims=True).astype(h.dtype)  # (B, 1)
        pooled = jnp.sum(jnp.where(present[..., None], h, 0.0), axis=1) / jnp.maximum(count, 1.0)
        return self.rho(jnp.concatenate([pooled, count / self.trials], axis=-1))


class Conv1D(nnx.Module):
    """Convolutions (width ``kernel``, ReLU, max-pool 2) over a series of ``inputs / channels`` steps."""

    def __init__(self, inputs: int, widths, out: int, channels: int, kernel: int, *, rngs: nnx.Rngs):
        self.channels = channels
        self.steps = inputs // channels
        sizes = (channels, *widths)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(kernel,), padding="SAME", precision=jax.lax.Precision.HIGHEST, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )
        length = self.steps
        for _ in widths:
            length = max(length // 2, 1)
        self.head = torch_linear(length * sizes[-1], out, rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], self.steps, self.channels)
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
            if h.shape[1] >= 2:
                h = nnx.max_pool(h, window_shape=(2,), strides=(2,))
        return self.head(h.reshape(h.shape[0], -1))


def user(source: str, out: int = 32) -> Embedding:
    """The spec of the user's module ``path/to/file.py:NAME`` (its file hashed now)."""
    from pathlib import Path

    from mdnjax.userspec import file_hash

    where, _, name = source.rpartition(":")
    path = Path(where).resolve()
    if not where.endswith(".py") or not name.isidentifier():
        raise ValueError(f"a user embedding is path/to/file.py:NAME, got {source!r}")
    if not path.is_file():
        raise ValueError(f"the embedding file {path} does not exist")
    return Embedding("user", (), out, source=f"{path}:{name}", sha256=file_hash(path))


def _user_module(spec: Embedding, inputs: int, rngs: nnx.Rngs):
    """The user's module, from the recorded file, refused in one line when it changed."""
    from pathlib import Path

    from mdnjax.simulation import UserCodeError
    from mdnjax.userspec import _import_file, file_hash

    where, _, name = spec.source.rpartition(":")
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"the embedding file {path} is gone: the posterior cannot rebuild its embedding")
    if spec.sha256 and file_hash(path) != spec.sha256:
        raise ValueError(f"the embedding file {path} has changed since training (SHA-256 differs): restore it")
    module = _import_file(path)
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"the embedding file {path} defines no {name!r}")
    try:
        net = cls(inputs, spec.out, rngs=rngs)
        shape = net(jnp.zeros((2, inputs), jnp.float32)).shape
    except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
        raise UserCodeError(f"embedding {name}", err) from err
    if shape != (2, spec.out):
        raise ValueError(f"the embedding {name} maps (2, {inputs}) to {shape}; expected (2, {spec.out})")
    return net


def build(spec: Embedding, inputs: int, *, rngs: nnx.Rngs):
    """The module of ``spec`` for observations of length ``inputs`` (None for ``"none"``)."""
    spec.check(inputs)
    if spec.kind == "none":
        return None
    if spec.kind == "user":
        return _user_module(spec, inputs, rngs)
    if spec.kind == "mlp":
        return MLP(inputs, spec.widths, spec.out, rngs=rngs)
    if spec.kind == "set":
        return SetEncoder(inputs, spec.widths, spec.out, spec.features, rngs=rngs)
    return Conv1D(inputs, spec.widths, spec.out, spec.features, spec.kernel, rngs=rngs)
