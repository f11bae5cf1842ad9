"""The collapse check of a binned run: components narrower than the bins they were fitted to.

A mixture trained on bin summaries can fit the summary points rather than the draws when one of
its components becomes narrower than a fraction (``COLLAPSE``) of a bin's width; the report
warns at those y.
"""

from __future__ import annotations

import warnings

import numpy as np

from mdnjax import mixture
from mdnjax.layout.binned import Binned, cells_per_coordinate

COLLAPSE = 0.25  # a component narrower than this share of its y's bin width sees the bins, not the draws


def collapsed(b: Binned, logits, log_vars, min_weight: float = 1e-3) -> list[dict]:
    """The y where some component (weight ≥ ``min_weight``) is narrower than ``COLLAPSE`` × the bin
    width: there the mixture can fit the two-point summaries instead of the draws.

    Args:
        b: the binned layout.
        logits, log_vars: (num_y, K) the trained mixture at ``b.y_values`` (fitting space).

    Returns:
        [{"y", "sd", "bin_width"}] for each such y.
    """
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    sd = np.where(w >= min_weight, np.exp(0.5 * np.asarray(log_vars, np.float64)), np.inf).min(axis=-1)
    width = b.bin_width
    bad = np.flatnonzero((width > 0) & (sd < COLLAPSE * width))
    return [{"y": _json_y(b.y_values[i]), "sd": float(sd[i]), "bin_width": float(width[i])} for i in bad]


def _json_y(y):
    """An observation for a JSON report: an int, or a list of ints for a vector y."""
    return int(y) if np.ndim(y) == 0 else [int(v) for v in np.ravel(y)]


def collapsed_nd(b: Binned, logits, covariances, min_weight: float = 1e-3, bins: int | None = None) -> list[dict]:
    """``collapsed`` for θ ∈ ℝ^D: the summarised y where some component (weight ≥ ``min_weight``) is
    narrower, along some coordinate, than ``COLLAPSE`` × that coordinate's cell width.

    Args:
        b: the layout of ``bin_nd``.
        logits: (num_y, K); covariances: (num_y, K, D, D) the trained components (fitting space).
        bins: the cells per coordinate ``bin_nd`` used (default: its default).

    Returns:
        [{"y", "sd", "cell_width", "coordinate"}] for each such y.
    """
    dim = b.theta.shape[-1]
    bins = bins or cells_per_coordinate(dim)
    dense = b.counts > 2 * dim * bins**dim
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    sd = np.sqrt(np.diagonal(np.asarray(covariances, np.float64), axis1=-2, axis2=-1))  # (num_y, K, D)
    sd = np.where((w >= min_weight)[..., None], sd, np.inf).min(axis=1)  # (num_y, D)
    width = (b.high.astype(np.float64) - b.low) / bins
    bad = dense[:, None] & (width > 0) & (sd < COLLAPSE * width)
    out = []
    for i in np.flatnonzero(bad.any(axis=1)):
        d = int(np.argmax(bad[i] * (width[i] / np.maximum(sd[i], 1e-300))))
        y = b.y_values[i]
        out.append(
            {"y": np.ravel(y).tolist(), "sd": float(sd[i, d]), "cell_width": float(width[i, d]), "coordinate": d}
        )
    return out


def check(payload: dict, b, post) -> None:
    """A binned run: the y where a component is narrower than the bins it was fitted to."""
    if not isinstance(b, Binned):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits, _, scales = (np.asarray(a, np.float64) for a in post.mixture(b.y_values))
    if post.dim == 1:  # a scalar θ (scalar or vector y): the two-point bins
        payload["layout"]["bins"] = b.theta.shape[1] // 2
        flagged, width, points = collapsed(b, logits, scales), "bin_width", "two-point summaries"
        advice = "raise --bins or use --layout packed"
    else:
        covs = np.asarray(mixture.mvn_covariances(scales, post.dim), np.float64)
        flagged, width, points = collapsed_nd(b, logits, covs), "cell_width", "moment points"
        advice = "use --layout packed"
    payload["collapsed"] = flagged
    if flagged:
        worst = min(flagged, key=lambda r: r["sd"] / r[width])
        payload["warnings"].append(
            f"at {len(flagged)} y a component is narrower than {COLLAPSE:g} bin widths (worst y = "
            f"{worst['y']}: sd {worst['sd']:.3g}, bins {worst[width]:.3g}): it may fit the bins' {points} "
            f"rather than the draws; {advice}"
        )
