"""What a trained posterior is, as data: the network's shape, the fitting space and support, the
input scaling and the training samples per y (``posterior.json`` beside ``posterior.npz``); for
the per-sample layout also the observation's kind, θ's standardisation and the embedding network.

Example:
    >>> spec = PosteriorSpec.from_json({"name": "beta", "components": 8, "hidden": [64], "space": "raw",
    ...     "bounds": [[0.0, 1.0]], "embedding": [0.0, 100.0], "y_range": [0, 100]}, [3, 4], [10, 12])
    >>> spec.dim, spec.inputs, spec.to_json()["space"]
    (1, 1, 'raw')
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mdnjax.embeddings import Embedding
from mdnjax.task import Bound


@dataclasses.dataclass(frozen=True)
class PosteriorSpec:
    """What a posterior is, as data (``posterior.json``)."""

    name: str
    components: int
    hidden: tuple[int, ...]
    space: str  # "raw" or "unconstrained"
    bounds: tuple[Bound, ...]
    embedding: tuple[float, float]  # x = (y − shift) / scale
    y_range: tuple[float, float]
    y_values: np.ndarray = dataclasses.field(repr=False)  # (num_y,) or (num_y, M) trained y
    counts: np.ndarray = dataclasses.field(repr=False)  # (num_y,) training samples at each
    dim: int = 1  # D, parameters
    inputs: int = 1  # M, the length of an observation
    y_kind: str = "counts"  # or "continuous": any finite float y
    # the network's θ is z = (u − shift) / scale per coordinate (None: z = u), each (D,)
    theta_standard: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    network: Embedding = Embedding("none")  # the embedding network between y and the backbone
    per_sample: bool = False  # trained on single pairs: no training samples per y are recorded
    linear_skip: bool = False  # the MDN's linear map from its inputs to the means (``mdnjax.model``)

    @classmethod
    def of(cls, task, config, embedding, y_values, counts) -> PosteriorSpec:
        y_values = np.asarray(y_values, np.int64)
        return cls(
            name=task.name,
            components=config.components,
            hidden=tuple(config.hidden),
            space=config.space,
            bounds=tuple(task.support),
            embedding=_embedding(embedding),
            y_range=tuple(float(v) for v in task.y_range),
            y_values=y_values,
            counts=np.asarray(counts, np.int64),
            dim=len(task.support),
            inputs=1 if y_values.ndim == 1 else int(y_values.shape[1]),
            linear_skip=config.linear_skip,
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "components": self.components,
            "hidden": list(self.hidden),
            "space": self.space,
            "bounds": [[b.low, b.high] for b in self.bounds],
            "embedding": [list(e) if isinstance(e, tuple) else e for e in self.embedding],
            "y_range": list(self.y_range),
            "dim": self.dim,
            "inputs": self.inputs,
            "y_kind": self.y_kind,
            "theta_standard": None if self.theta_standard is None else [list(v) for v in self.theta_standard],
            "network": self.network.to_json(),
            "per_sample": self.per_sample,
            "linear_skip": self.linear_skip,
        }

    @classmethod
    def from_json(cls, d: dict, y_values, counts) -> PosteriorSpec:
        """The spec of ``posterior.json``; ``ValueError`` (one line) for a value it cannot hold."""
        if d.get("space") not in ("raw", "unconstrained"):
            raise ValueError(f"posterior.json: space must be 'raw' or 'unconstrained', got {d.get('space')!r}")
        if d.get("y_kind", "counts") not in ("counts", "continuous"):
            raise ValueError(f"posterior.json: y_kind must be 'counts' or 'continuous', got {d.get('y_kind')!r}")
        standard = d.get("theta_standard")
        y_dtype = np.float64 if d.get("y_kind") == "continuous" else np.int64
        return cls(
            name=str(d["name"]),
            components=int(d["components"]),
            hidden=tuple(int(h) for h in d["hidden"]),
            space=str(d["space"]),
            bounds=tuple(Bound(float(lo), float(hi)) for lo, hi in d["bounds"]),
            embedding=_embedding(d["embedding"]),
            y_range=(float(d["y_range"][0]), float(d["y_range"][1])),
            y_values=np.asarray(y_values, y_dtype),
            counts=np.asarray(counts, np.int64),
            dim=int(d.get("dim", 1)),
            inputs=int(d.get("inputs", 1)),
            y_kind=str(d.get("y_kind", "counts")),
            theta_standard=None if standard is None else tuple(tuple(float(v) for v in s) for s in standard),
            network=Embedding.from_json(d.get("network")),
            per_sample=bool(d.get("per_sample", False)),
            linear_skip=bool(d.get("linear_skip", False)),
        )


def _embedding(e) -> tuple:
    """(shift, scale): floats for a scalar y, tuples of floats (one per component) for a vector y."""
    as_value = lambda v: tuple(float(x) for x in v) if np.ndim(v) else float(v)  # noqa: E731
    return as_value(e[0]), as_value(e[1])
