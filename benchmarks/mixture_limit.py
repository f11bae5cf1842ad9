"""How well can a Gaussian mixture of K components do at all? The floor of an MDN's C2ST, without
training a network.

At one sbibm observation whose exact posterior is known in closed form, a K-component
full-covariance Gaussian mixture is fitted by EM (scikit-learn ``GaussianMixture``) to 10^5
exact posterior draws in a fitting space, 10,000 of its draws are mapped back to θ, and the
C2ST against sbibm's 10,000 reference draws is taken exactly as ``benchmarks/sbibm.py`` does.
An amortized MDN can only do worse than the mixture fitted at that one y: what this prints is the
best C2ST its mixture family reaches there. ``exact`` (the closed form's own draws) is the floor
of C2ST itself with 10,000 draws a side.

* ``gaussian_linear``: the posterior is N(y/2, 0.05 I), one Gaussian (K = 1 is exact).
* ``gaussian_linear_uniform``: a product of ten normals N(y_d, 0.1) truncated to (−1, 1). The
  ``logit`` space is mdnjax's fitting space for a bounded θ (``mdnjax.task.Bound``); ``probit``
  (u = Φ⁻¹((θ + 1)/2)) and ``raw`` (θ itself, draws outside the box rejected, as sbi does for
  leakage) are alternatives measured beside it.

    MDNJAX_SBIBM=sbibm-1.1.0-py2.py3-none-any.whl python benchmarks/mixture_limit.py
    python benchmarks/mixture_limit.py --figure-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import special, stats

from mdnjax.c2st import c2st
from mdnjax.tasks import sbibm

RESULTS = Path(__file__).parent / "results"
VARIANCE = 0.1  # both tasks' prior and noise variance
SPACES = {  # forward, inverse on (−1, 1)
    "logit": (lambda t: np.log1p(t) - np.log1p(-t), lambda u: np.tanh(u / 2)),
    "probit": (lambda t: special.ndtri((t + 1) / 2), lambda u: 2 * special.ndtr(u) - 1),
    "raw": (lambda t: t, lambda u: u),
}


def exact_draws(name: str, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of the closed-form posterior at y."""
    if name == "gaussian_linear":
        return rng.normal(y / 2, np.sqrt(VARIANCE / 2), size=(n, y.size))
    sd = np.sqrt(VARIANCE)
    a, b = (-1 - y) / sd, (1 - y) / sd
    return stats.truncnorm.rvs(a, b, loc=y, scale=sd, size=(n, y.size), random_state=rng)


def mixture_draws(fit_on: np.ndarray, k: int, space: str, n: int, seed: int) -> np.ndarray:
    """n draws of the K-component mixture fitted by EM to ``fit_on`` in ``space``, mapped back."""
    from sklearn.mixture import GaussianMixture

    forward, inverse = SPACES[space]
    gm = GaussianMixture(k, covariance_type="full", n_init=1, max_iter=500, random_state=seed).fit(forward(fit_on))
    out = np.zeros((0, fit_on.shape[1]))
    while out.shape[0] < n:  # raw: the mixture's mass outside the box is rejected
        u = gm.sample(4 * n)[0]
        theta = inverse(u)
        out = np.concatenate([out, theta[np.all(np.abs(theta) < 1, axis=1)]])
    return np.random.default_rng(seed).permutation(out)[:n]


def figure(data: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    rows = data["runs"]
    names = sorted({r["task"] for r in rows})
    fig = Figure(figsize=(5.0 * len(names), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        mine = [r for r in rows if r["task"] == name]
        exact = [r["c2st"] for r in mine if r["k"] == 0]
        for j, space in enumerate(sorted({r["space"] for r in mine if r["k"]})):
            pts = sorted((r["k"], r["c2st"]) for r in mine if r["space"] == space and r["k"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{j}", label=f"mixture in {space}")
        if exact:
            ax.axhline(np.mean(exact), color="k", ls=":", label="exact draws")
        if name in data.get("mdnjax", {}):
            ax.axhline(data["mdnjax"][name], color="C3", ls="--", label="mdnjax MDN, 10^5 (same obs)")
        if name in data.get("published", {}):
            ax.axhline(data["published"][name], color="grey", ls="-.", label="published NPE, 10^5 (obs 1–10)")
        ax.set(xscale="log", xlabel="components K", ylabel="C2ST", title=f"{name}, observation {mine[0]['obs']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"the best K-component mixture fitted to exact posterior draws — {data['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["gaussian_linear_uniform"])
    p.add_argument("--obs", type=int, default=1)
    p.add_argument("--components", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--spaces", nargs="+", default=["logit", "probit", "raw"], choices=list(SPACES))
    p.add_argument("--fit-draws", type=int, default=100_000)
    p.add_argument("--out", default=str(RESULTS / "mixture_limit.json"))
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    data["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    data["published"] = {"gaussian_linear": 0.506, "gaussian_linear_uniform": 0.509}
    sb = RESULTS / "sbibm.json"
    if sb.is_file():  # mdnjax's own figure at the same observation, where measured
        runs = json.loads(sb.read_text())["runs"]
        data["mdnjax"] = {
            n: runs[f"{n}/100000"]["c2st"][str(args.obs)]
            for n in args.tasks
            if str(args.obs) in runs.get(f"{n}/100000", {}).get("c2st", {})
        }
    if not args.figure_only:
        for name in args.tasks:
            task = sbibm.TASKS[name]()
            y, ref = np.asarray(sbibm.observation(task, args.obs), np.float64), sbibm.reference(task, args.obs)
            fit_on = exact_draws(name, y, args.fit_draws, np.random.default_rng(0))
            jobs = [(0, "exact")] + [(k, s) for s in args.spaces for k in args.components]
            if name == "gaussian_linear":  # one Gaussian is exact in every space on ℝ
                jobs = [(0, "exact")] + [(k, "raw") for k in args.components]
            for k, space in jobs:
                done = any(r["task"] == name and r["k"] == k and r["space"] == space for r in data["runs"])
                if done:
                    continue
                t0 = time.perf_counter()
                if k == 0:
                    draws = exact_draws(name, y, len(ref), np.random.default_rng(1))
                else:
                    draws = mixture_draws(fit_on, k, space, len(ref), seed=1)
                score = c2st(ref, draws)
                elapsed = time.perf_counter() - t0
                data["runs"].append(
                    {"task": name, "obs": args.obs, "k": k, "space": space, "c2st": score, "s": elapsed}
                )
                print(f"{name} obs {args.obs} {space:7s} K={k:3d}: C2ST {score:.3f}", flush=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, path)
    figure(data, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
