"""mdnjax against the `sbi` library's MDN posterior, on the same simulations, timed the same way.

    pip install sbi            # an optional peer; install torch==2.13.0 first (the CPU build)
    python benchmarks/peers.py --quick      # 10^5 simulations (~2 minutes)
    python benchmarks/peers.py              # 10^6 simulations (sbi needs ~10 minutes per task)

Both estimators see the same (θ, y) pairs (mdnjax's simulator, same seed) and use K = 8 Gaussians;
sbi trains with its defaults (batch 200, Adam 5e-4, early stopping on 10% held out), mdnjax with
its default recipe. Quality: mean KL(exact‖q) at the plotted y and over every y with ≥ 100
samples, by the same float64 quadrature (sbi's raw MDN density, without its leakage correction).
Time: seconds of training (mdnjax: compile + train; sbi: ``train()``), one torch thread.
Writes ``results/peers[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mdnjax import xla

xla.configure_cpu()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mdnjax  # noqa: E402
from mdnjax import Config, layout, metrics, tasks  # noqa: E402

OUT = Path(__file__).parent / "results"


def torch_prior(task):
    """The task's prior as a torch distribution, for sbi (the conjugate tasks this comparison covers)."""
    if isinstance(task, tasks.BetaBinomial):
        prior = torch.distributions.Beta(torch.tensor([task.alpha]), torch.tensor([task.beta]))
    elif isinstance(task, tasks.GammaPoisson):
        prior = torch.distributions.Gamma(torch.tensor([task.alpha]), torch.tensor([task.beta]))
    else:
        raise SystemExit(f"peers.py compares on BetaBinomial and GammaPoisson tasks, not {task.name}")
    return torch.distributions.Independent(prior, 1)


def sbi_mdn(task, theta, y, components: int, seed: int):
    """Trains sbi's NPE with an MDN; returns (log q(θ_grid | y) function, train seconds, epochs).

    sbi writes TensorBoard logs into ``./sbi-logs``: it runs inside a temporary folder instead.
    """
    import os
    import tempfile

    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    torch.manual_seed(seed)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            npe = NPE(prior=torch_prior(task), density_estimator=posterior_nn(model="mdn", num_components=components))
            t_theta = torch.tensor(theta, dtype=torch.float32)[:, None]
            t_x = torch.tensor(y, dtype=torch.float32)[:, None]
            t0 = time.perf_counter()
            estimator = npe.append_simulations(t_theta, t_x).train(show_train_summary=False)
            seconds = time.perf_counter() - t0
        finally:
            os.chdir(here)
    epochs = npe.summary["epochs_trained"][-1] if "epochs_trained" in npe.summary else None

    def log_q(grid, y_obs):
        with torch.no_grad():
            g = torch.tensor(grid, dtype=torch.float32)[None, :, None]  # (sample, batch=1, dim) layout
            cond = torch.tensor([[float(y_obs)]], dtype=torch.float32)
            try:
                out = estimator.log_prob(g, condition=cond)
            except Exception:  # noqa: BLE001 - older layouts: (batch, dim)
                out = estimator.log_prob(g[0], condition=cond.expand(g.shape[1], 1))
        return out.reshape(-1).double().numpy()

    return log_q, seconds, epochs


def kl_of(task, log_q, ys) -> list[float]:
    kls = []
    for y in ys:
        exact = task.exact_posterior(int(y))
        grid = np.linspace(exact.ppf(1e-12), exact.isf(1e-12), metrics.GRID)
        log_p = exact.logpdf(grid)
        kls.append(float(np.trapezoid(np.exp(log_p) * (log_p - log_q(grid, y)), grid)))
    return kls


def main() -> None:
    p = argparse.ArgumentParser(description="mdnjax vs sbi's MDN.")
    p.add_argument("--quick", action="store_true", help="10^5 simulations")
    p.add_argument("--samples", type=float)
    p.add_argument("--tasks", nargs="+", default=["beta", "gamma"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    n = int(args.samples or (1e5 if args.quick else 1e6))
    rows = []
    for name in args.tasks:
        task = tasks.from_name(name)
        cfg = Config(samples=n, seed=args.seed).resolve(task)
        b, _ = layout.build_layout(task, cfg)
        dense_y = b.y_values[b.counts >= 100]
        theta, y = task.simulate(np.random.default_rng(cfg.seed), n)  # the same pairs mdnjax bucketed

        res = mdnjax.fit(task, cfg, buckets=b)
        ours_s = res.timings["compile_s"] + res.timings["train_s"]
        ours_plot = [r["kl"] for r in metrics.evaluate(res.posterior, task, task.plot_y)]
        ours_all = [r["kl"] for r in metrics.evaluate(res.posterior, task, dense_y)]

        log_q, sbi_s, sbi_epochs = sbi_mdn(task, theta, y, cfg.components, args.seed)
        sbi_plot = kl_of(task, log_q, task.plot_y)
        sbi_all = kl_of(task, log_q, dense_y)
        row = {
            "task": name,
            "samples": n,
            "K": cfg.components,
            "mdnjax": {
                "recipe": cfg.recipe,
                "epochs": cfg.epochs,
                "train_s": ours_s,
                "kl_plotted": float(np.mean(ours_plot)),
                "kl_all": float(np.mean(ours_all)),
            },
            "sbi": {
                "train_s": sbi_s,
                "epochs": sbi_epochs,
                "kl_plotted": float(np.mean(sbi_plot)),
                "kl_all": float(np.mean(sbi_all)),
            },
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    import sbi

    meta = {"sbi": sbi.__version__, "torch": torch.__version__, "torch_threads": 1, "date": time.strftime("%Y-%m-%d")}
    (OUT / f"peers{'_quick' if args.quick else ''}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\n{'task':6} {'N':>8} {'':8} {'KL plotted':>11} {'KL all y':>9} {'train s':>8}")
    for r in rows:
        for who in ("mdnjax", "sbi"):
            v = r[who]
            print(
                f"{r['task']:6} {r['samples']:>8.0e} {who:8} {v['kl_plotted']:>11.5f} {v['kl_all']:>9.5f} "
                f"{v['train_s']:>8.1f}"
            )


if __name__ == "__main__":
    main()
