"""Measures how closely the JAX path agrees with the PyTorch notebook loop, float32 and float64.

    python benchmarks/parity.py            # prints a table, writes benchmarks/results/parity.json

Same weights (torch's initialisation, transferred), same data (10^4 simulations per task).
For each task and K: max relative error of the forward outputs, the loss, every gradient
(over all parameters) and the parameters after one Adam step.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from mdnjax import kernels, layout, model, objective, tasks
from mdnjax.testing import torch_ref
from mdnjax.train import make_step

NOTEBOOK_BETA = {0: 102.4597, 50: 85.9368, 100: -18.2413, 150: -162.8556}  # the notebook's printed losses


def loss_fn(kind, graphdef):
    kernel = kernels.select(reference=layout.plan(kind).reference)
    return lambda params, d: objective.loss(params, graphdef, d, kernel)


OUT = Path(__file__).parent / "results"


def rel(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    errs = [np.max(np.abs(np.asarray(x) - np.asarray(y)) / (np.abs(np.asarray(y)) + 1e-30)) for x, y in zip(la, lb)]
    return float(max(errs))


def rel_nonzero(a, b, floor) -> float:
    """Max relative error over entries whose magnitude is above ``floor`` (tiny gradients are noise)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    errs = []
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        keep = np.abs(y) > floor
        if keep.any():
            errs.append(np.max(np.abs(x[keep] - y[keep]) / np.abs(y[keep])))
    return float(max(errs))


def measure(name: str, k: int, tdtype) -> dict:
    jdtype = jnp.float64 if tdtype == torch.float64 else jnp.float32
    task = tasks.from_name(name)
    theta, y = task.simulate(np.random.default_rng(3), 10_000)
    theta = theta.astype(np.float32)  # the layout's precision, on both sides
    torch.manual_seed(0)
    net = torch_ref.TorchMDN(k).to(tdtype)
    graphdef, template = model.init(jax.random.key(0), k)
    template = jax.tree_util.tree_map(lambda a: a.astype(jdtype), template)
    params = torch_ref.torch_to_flax(net.state_dict(), template)
    x = np.linspace(0, 1, 101)
    with torch.no_grad():
        w_t, m_t, v_t = (a.numpy() for a in net(torch.tensor(x, dtype=tdtype).view(-1, 1)))
    logits, means, log_vars = model.apply(graphdef, params, jnp.asarray(x, jdtype))
    by_y = torch_ref.group_by_y(theta, y)
    value_t = torch_ref.notebook_loss(net, by_y, task.trials, dtype=tdtype)
    net.zero_grad()
    value_t.backward()
    g_t = torch_ref.grads_to_flax(net, params)
    opt_t = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt_t.step()
    after_t = torch_ref.torch_to_flax(net.state_dict(), params)
    data = layout.to_data(layout.bucket_packed(theta, y), (0.0, float(task.trials)), jdtype)
    value_j, g_j = jax.value_and_grad(loss_fn("packed", graphdef))(params, data)
    opt = optax.adam(1e-3)
    after_j, _, _ = make_step(loss_fn("packed", graphdef), opt)(params, opt.init(params), data)
    return {
        "task": name,
        "K": k,
        "dtype": str(jdtype.dtype if hasattr(jdtype, "dtype") else jdtype).split(".")[-1],
        "weights": rel(jax.nn.softmax(logits), w_t),
        "means": rel(means, m_t),
        "log_vars": rel(log_vars, v_t),
        "loss": abs(float(value_j) - value_t.item()) / abs(value_t.item()),
        "grads": rel_nonzero(g_j, g_t, 1e-6 if jdtype == jnp.float32 else 1e-12),
        "adam_step": rel(after_j, after_t),
    }


def notebook_losses(epochs: int = 151) -> dict:
    """The notebook's beta run (its seeding, 10^6 draws, its loop, lr 1e-3) against its printed losses."""
    net, theta, y = torch_ref.notebook_setup("beta")
    by_y = torch_ref.group_by_y(theta, y)
    tensors = {v: torch.tensor(t, dtype=torch.float32).view(-1, 1) for v, t in by_y.items() if len(t) >= 2}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(epochs):
        value = torch_ref.notebook_loss(net, by_y, 100, tensors=tensors)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    return {str(e): {"printed": p, "reproduced": round(losses[e], 4)} for e, p in NOTEBOOK_BETA.items()}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    with jax.default_matmul_precision("highest"):
        for tdtype in (torch.float32, torch.float64):
            if tdtype == torch.float64:
                jax.config.update("jax_enable_x64", True)
            for name in ("beta", "gamma"):
                for k in (1, 8):
                    rows.append(measure(name, k, tdtype))
    cols = ["weights", "means", "log_vars", "loss", "grads", "adam_step"]
    print(f"{'task':6} {'K':>2} {'dtype':8} " + " ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print(f"{r['task']:6} {r['K']:>2} {r['dtype']:8} " + " ".join(f"{r[c]:10.1e}" for c in cols))
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "jax": jax.__version__,
        "torch": torch.__version__,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "note": "max relative error, JAX packed path vs torch notebook loop",
    }
    notebook = notebook_losses()
    for e, v in notebook.items():
        print(f"notebook epoch {e}: printed {v['printed']}, reproduced {v['reproduced']}")
    (OUT / "parity.json").write_text(json.dumps({"meta": meta, "rows": rows, "notebook_losses": notebook}, indent=2))


if __name__ == "__main__":
    main()
