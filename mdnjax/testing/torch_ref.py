"""The PyTorch reference: the notebook's loop, a vectorized torch peer, and weight transfer.

Used by tests and benchmarks only; no core module imports it. torch is an optional extra
(``pip install torch==2.13.0`` for the CPU build, then ``pip install -e ".[torch]"``).

Two training paths, both full-batch Adam with one step per epoch:

* **notebook loop** (``train(..., loop=True)``): the notebook's algorithm as written — θ kept in
  a dict of lists by y, a tensor built per y each epoch, ``log(softmax)`` weights, the per-y
  mean NLL summed over every y with ≥ 2 samples.
* **vectorized** (``train(..., loop=False)``): the same objective on the padded (num_y, max_n) layout
  with a mask, one forward pass for all y; ``torch.compile`` when it works.

Example:
    >>> from mdnjax import model                                 # doctest: +SKIP
    >>> from mdnjax.testing import torch_ref                      # doctest: +SKIP
    >>> net = torch_ref.TorchMDN(8)                               # doctest: +SKIP
    >>> graphdef, template = model.init(jax.random.key(0), 8)     # doctest: +SKIP
    >>> params = torch_ref.torch_to_flax(net.state_dict(), template)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None
    nn = None

INSTALL_HINT = 'torch is not installed: run `pip install torch==2.13.0 && pip install -e ".[torch]"`'
LOG_2PI = math.log(2 * math.pi)


def require_torch():
    """Returns the torch module, or raises ``ImportError`` saying how to install it."""
    if torch is None:
        raise ImportError(INSTALL_HINT)
    return torch


if nn is not None:

    class TorchMDN(nn.Module):
        """The notebook's ``MixtureDensityNN`` (its ``state_dict`` names), with configurable widths."""

        def __init__(self, num_components: int = 8, hidden: Sequence[int] = (24, 25, 16)):
            super().__init__()
            self.num_components = num_components
            layers, width = [], 1
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.backbone = nn.Sequential(*layers)
            self.logits_head = nn.Linear(width, num_components)
            self.means_head = nn.Linear(width, num_components)
            self.log_vars_head = nn.Linear(width, num_components)

        def forward(self, x):
            """x (B, 1) → weights, means, log_vars, each (B, K)."""
            features = self.backbone(x)
            weights = torch.softmax(self.logits_head(features), dim=-1)
            return weights, self.means_head(features), self.log_vars_head(features)

        def mixture(self, x):
            """x (B, 1) → logits, means, log_vars (raw logits, for the vectorized loss)."""
            features = self.backbone(x)
            return self.logits_head(features), self.means_head(features), self.log_vars_head(features)


def mixture_negative_log_likelihood(theta_samples, weights, means, log_vars):
    """The notebook's loss for one y: θ (N, 1); weights, means, log_vars (1, K)."""
    vars_ = torch.exp(log_vars)
    theta_exp = theta_samples.expand(-1, vars_.shape[1])
    log_probs = -0.5 * (log_vars + LOG_2PI + (theta_exp - means) ** 2 / vars_)
    log_weighted = torch.log(weights) + log_probs
    return -torch.logsumexp(log_weighted, dim=1).mean()


def mvn_mixture_loss(theta_by_y: list, logits, means, scales):
    """Σ_y mean −log q(θ | y) for mixtures on ℝ^D with ``torch.distributions``: a
    ``MixtureSameFamily`` of ``MultivariateNormal`` with precision L Lᵀ built from the scales as
    ``mdnjax.mixture.precision_factor`` does (diagonal exp(−s_d/2), then the strictly lower part).

    Args:
        theta_by_y: per y a tensor (n_y, D).
        logits (U, K), means (U, K, D), scales (U, K, D(D+1)/2): tensors (may require grad).
    """
    dim = means.shape[-1]
    rows, cols = np.tril_indices(dim, -1)
    diag = torch.diag_embed(torch.exp(-0.5 * scales[..., :dim]))
    lower = torch.zeros_like(diag)
    lower[..., rows, cols] = scales[..., dim:]
    factor = diag + lower
    precision = factor @ factor.transpose(-1, -2)
    total = 0.0
    for j, theta in enumerate(theta_by_y):
        q = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=logits[j]),
            torch.distributions.MultivariateNormal(means[j], precision_matrix=precision[j]),
        )
        total = total - q.log_prob(theta).mean()
    return total


def group_by_y(theta: np.ndarray, y: np.ndarray) -> dict:
    """The notebook's ``theta_by_y``: a dict of lists, keys in order of first appearance."""
    theta_by_y = defaultdict(list)
    for t, v in zip(theta.tolist(), y.tolist()):
        theta_by_y[v].append(t)
    return theta_by_y


def notebook_loss(
    model, theta_by_y: dict, trials: int, dtype=None, tensors: dict | None = None, weighting: str = "per-y"
):
    """Σ_y mean NLL as the notebook computes it: one forward per y, tensors built per y.

    Args:
        model: a ``TorchMDN``.
        theta_by_y: dict y → list of θ (the notebook's layout).
        trials: n, to form the input y / n.
        dtype: torch dtype (default float32).
        tensors: optional dict y → prebuilt (N, 1) θ tensors; same arithmetic, no list conversion.
        weighting: ``"per-y"`` (the notebook: Σ_y of each y's mean) or ``"per-sample"`` (the mean
            over every sample: each y's mean weighted by n_y / N).
    """
    dtype = dtype or torch.float32
    total = 0.0
    kept = sum(len(t) for t in theta_by_y.values() if len(t) >= 2)
    for y_val, thetas in theta_by_y.items():
        if len(thetas) < 2:
            continue
        x_in = torch.tensor([[y_val / trials]], dtype=dtype)
        weights, means, log_vars = model(x_in)
        if tensors is not None:
            theta_tensor = tensors[y_val]
        else:
            theta_tensor = torch.tensor(thetas, dtype=dtype).view(-1, 1)
        nll = mixture_negative_log_likelihood(theta_tensor, weights, means, log_vars)
        total = total + (nll if weighting == "per-y" else nll * (len(thetas) / kept))
    return total


def padded_tensors(b, trials: int, dtype=None):
    """Torch tensors of a padded bucket layout: x = y / n (num_y, 1), θ (num_y, max_n), mask."""
    dtype = dtype or torch.float32
    x = torch.tensor(b.y_values / trials, dtype=dtype).view(-1, 1)
    return x, torch.tensor(b.theta, dtype=dtype), torch.tensor(b.mask)


def vectorized_loss(model, x, theta, mask, weighting: str = "per-y"):
    """The objective on the padded layout: one forward for every y, masked logsumexp.

    Args:
        model: a ``TorchMDN``.
        x: (num_y, 1) inputs; theta, mask: (num_y, max_n).
        weighting: ``"per-y"`` (Σ_y of each y's mean NLL) or ``"per-sample"`` (the mean NLL).
    """
    logits, means, log_vars = model.mixture(x)  # (num_y, K)
    log_w = torch.log_softmax(logits, dim=-1)
    theta = torch.where(mask, theta, torch.zeros((), dtype=theta.dtype))
    d = theta[:, :, None] - means[:, None, :]  # (num_y, max_n, K)
    comp = -0.5 * (LOG_2PI + log_vars[:, None, :] + d * d * torch.exp(-log_vars)[:, None, :])
    ll = torch.logsumexp(log_w[:, None, :] + comp, dim=-1)  # (num_y, max_n)
    ll = torch.where(mask, ll, torch.zeros((), dtype=ll.dtype))
    if weighting == "per-sample":
        return -ll.sum() / mask.sum().to(ll.dtype)
    return -(ll.sum(dim=1) / mask.sum(dim=1).to(ll.dtype)).sum()


# ----------------------------------------------------------------------------- weight transfer


def _flax_layers(params) -> list[tuple[str, dict]]:
    """(torch prefix, flax layer dict) pairs in the notebook's naming."""
    backbone = params["backbone"]
    pairs = [(f"backbone.{2 * i}", backbone[i]) for i in sorted(backbone)]
    return pairs + [(name, params[name]) for name in ("logits_head", "means_head", "log_vars_head")]


def torch_to_flax(state_dict, template):
    """Converts a ``TorchMDN`` state_dict into Flax parameters shaped like ``template``.

    torch's ``Linear.weight`` is (out, in); Flax's ``kernel`` is (in, out).
    """
    out = jax.tree_util.tree_map(lambda a: a, template)
    for prefix, layer in _flax_layers(out):
        # copies: jnp.asarray may alias host memory, and torch updates its tensors in place
        w = state_dict[f"{prefix}.weight"].detach().cpu().numpy().copy()
        b = state_dict[f"{prefix}.bias"].detach().cpu().numpy().copy()
        if w.T.shape != layer["kernel"].shape:
            raise ValueError(f"{prefix}: torch weight {w.shape} does not fit kernel {layer['kernel'].shape}")
        dtype = np.float64 if w.dtype == np.float64 else layer["kernel"].dtype
        layer["kernel"] = jnp.asarray(w.T, dtype)
        layer["bias"] = jnp.asarray(b, dtype)
    return out


def flax_to_torch(params, model) -> None:
    """Copies Flax parameters into a ``TorchMDN`` in place (keeping the model's dtype)."""
    state = model.state_dict()
    with torch.no_grad():
        for prefix, layer in _flax_layers(params):
            w, b = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
            w.copy_(torch.from_numpy(np.asarray(layer["kernel"]).T.copy()).to(w.dtype))
            b.copy_(torch.from_numpy(np.asarray(layer["bias"]).copy()).to(b.dtype))


def grads_to_flax(model, template):
    """The ``.grad`` of every torch parameter, in the Flax layout of ``template``."""
    return torch_to_flax({k: p.grad for k, p in model.named_parameters()}, template)


# ----------------------------------------------------------------------------- the notebook's data


def notebook_setup(prior: str = "beta", num_samples: int = 10**6, components: int = 8, seed: int = 123):
    """Reproduces the notebook's seeding and draws: returns (model, theta, y).

    random, numpy and torch are seeded with ``seed``; the model is built before scipy draws
    θ from the prior and y from the likelihood, as in the notebook.
    """
    require_torch()
    from scipy import stats

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = TorchMDN(components)
    if prior == "beta":
        theta = stats.beta.rvs(2.0, 5.0, size=num_samples)
        y = stats.binom.rvs(n=100, p=theta)
    else:
        theta = stats.gamma.rvs(a=2.0, loc=0, scale=1 / 3.0, size=num_samples)
        y = stats.poisson.rvs(mu=theta * 100)
    return net, theta, y


# ----------------------------------------------------------------------------- training backends


def _compiled(fn):
    try:
        return torch.compile(fn, dynamic=False)
    except Exception:  # noqa: BLE001 - torch.compile is an optional accelerator
        return fn


def train(
    theta,
    y,
    trials: int,
    *,
    components: int = 8,
    hidden=(24, 25, 16),
    epochs: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    loop: bool = True,
    log_every: int = 0,
):
    """The notebook's recipe in torch (per-y objective, constant-lr Adam, raw θ).

    Args:
        theta, y: the simulations (N,).
        trials: n, for the inputs y / n.
        loop: the notebook's loop (dict of lists), else the vectorized padded layout.
        log_every: print the loss every this many epochs (0: never).

    Returns:
        (flax params shaped like ``mdnjax.model.init``'s, losses (epochs,), timings dict).
    """
    require_torch()
    from mdnjax import layout
    from mdnjax import model as model_lib

    timings: dict = {}
    t0 = time.perf_counter()
    if loop:
        theta_by_y = group_by_y(np.asarray(theta, np.float32), np.asarray(y))
        loss_fn = None
    else:
        b = layout.bucket(np.asarray(theta, np.float32), np.asarray(y))
    timings["bucket_s"] = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = TorchMDN(components, hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    if loop:
        loss_fn = lambda: notebook_loss(net, theta_by_y, trials)  # noqa: E731
    else:
        x, th, mask = padded_tensors(b, trials)
        loss_fn = _compiled(lambda: vectorized_loss(net, x, th, mask))
    losses, train_s = [], 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        value = loss_fn()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        dt = time.perf_counter() - t0
        if epoch == 0:
            timings["compile_s"] = dt  # first step: compilation or warm-up
        else:
            train_s += dt
        losses.append(float(value.item()))
        if log_every and epoch % log_every == 0:
            print(f"[epoch {epoch:5d}] loss = {losses[-1]:.4f}", flush=True)
    timings["train_s"] = train_s
    timings["ms_per_epoch"] = 1e3 * train_s / max(epochs - 1, 1)
    graphdef, template = model_lib.init(jax.random.key(0), components, hidden)
    return torch_to_flax(net.state_dict(), template), np.asarray(losses), timings
