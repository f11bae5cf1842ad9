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
* ``slcp``: no closed form, but the likelihood is (four draws of a 2-D Gaussian), so exact draws
  come by rejection from the prior box times that likelihood, proposed from a 16-component
  mixture fitted to sbibm's reference draws with its covariances doubled (5% of proposals uniform
  on the box); the bound is the largest weight of all the proposals made (as many as it takes to
  accept the draws asked for: 1.3·10^6–2.8·10^7 here). ``exact`` scores those draws against the
  reference: near 0.5 checks the sampler. θ/3 is fitted in the spaces on (−1, 1).

    MDNJAX_SBIBM=sbibm-1.1.0-py2.py3-none-any.whl python benchmarks/mixture_limit.py
    MDNJAX_SBIBM=... python benchmarks/mixture_limit.py --tasks slcp --obs $(seq 1 10) --components 8 16 32 \
        --spaces logit --n-init 4 --out benchmarks/results/mixture_limit_slcp.json
    python benchmarks/mixture_limit.py --figure-only --out benchmarks/results/mixture_limit_slcp.json \
        --with-mdn benchmarks/results/sbibm.json benchmarks/results/sbibm_slcp_k{16,32,64}.json

EM finds local optima: what a fit prints is what a mixture of K components reaches at least
(an upper bound on the family's best C2ST), not its floor.
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


BOX = {"gaussian_linear": 1.0, "gaussian_linear_uniform": 1.0, "slcp": 3.0}  # θ / BOX is fitted on (−1, 1)


def slcp_log_likelihood(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p(y | θ) of slcp (θ (n, 5), y (8,): four draws of N((θ1, θ2), Σ(θ)), as simulated)."""
    x = y.reshape(4, 2)
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
    a, c, b = s1**2 + 1e-6, s2**2 + 1e-6, rho * s1 * s2
    det = a * c - b * b
    d = x[None] - theta[:, None, :2]  # (n, 4, 2)
    quad = (c[:, None] * d[..., 0] ** 2 - 2 * b[:, None] * d[..., 0] * d[..., 1] + a[:, None] * d[..., 1] ** 2) / det[
        :, None
    ]
    return -0.5 * quad.sum(1) - 2.0 * np.log(det) - 4.0 * np.log(2 * np.pi)


def slcp_draws(y: np.ndarray, ref: np.ndarray, n: int, rng: np.random.Generator, info: dict) -> np.ndarray:
    """n exact draws of slcp's posterior at y by rejection (the module's docstring); ``info``
    receives the acceptance rate, the proposals' effective sample share and the gap between the
    two largest log weights (a small gap: the bound is not set by one lone proposal)."""
    from scipy.special import logsumexp
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(16, covariance_type="full", max_iter=500, random_state=0).fit(ref)
    w, mu, cov = gm.weights_, gm.means_, 2.0 * gm.covariances_
    chol = np.linalg.cholesky(cov)
    log_box = -5 * np.log(6.0)  # the uniform prior's density (and the defensive part's)

    def propose(m):
        k = rng.choice(w.size, m, p=w)
        theta = mu[k] + np.einsum("nij,nj->ni", chol[k], rng.normal(size=(m, 5)))
        box = rng.random(m) < 0.05
        theta[box] = rng.uniform(-3, 3, size=(int(box.sum()), 5))
        theta = theta[np.all(np.abs(theta) < 3, axis=1)]  # a proposal outside the box: prior 0
        comp = [np.log(wk) + stats.multivariate_normal(mu[j], cov[j]).logpdf(theta) for j, wk in enumerate(w)]
        log_q = np.logaddexp(np.log(0.95) + logsumexp(comp, axis=0), np.log(0.05) + log_box)
        return theta, slcp_log_likelihood(theta, y) + log_box - log_q

    pool = [propose(10**6), propose(10**6)]
    while True:
        log_w = np.concatenate([lw for _, lw in pool])
        bound = np.max(log_w)
        keep = np.log(rng.random(log_w.size)) < log_w - bound
        if keep.sum() >= n:
            break
        pool.append(propose(10**6))
    theta = np.concatenate([th for th, _ in pool])[keep]
    top = np.sort(log_w)[-2:]
    ww = np.exp(log_w - bound)
    info.update(
        {
            "acceptance": float(keep.mean()),
            "proposed": int(log_w.size),
            "ess_share": float(ww.sum() ** 2 / (ww.size * (ww**2).sum())),
            "top_log_weight_gap": float(top[1] - top[0]),
        }
    )
    return rng.permutation(theta)[:n]


def exact_draws(name: str, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of the closed-form posterior at y."""
    if name == "gaussian_linear":
        return rng.normal(y / 2, np.sqrt(VARIANCE / 2), size=(n, y.size))
    sd = np.sqrt(VARIANCE)
    a, b = (-1 - y) / sd, (1 - y) / sd
    return stats.truncnorm.rvs(a, b, loc=y, scale=sd, size=(n, y.size), random_state=rng)


def mixture_draws(fit_on: np.ndarray, k: int, space: str, n: int, seed: int, n_init: int = 1) -> np.ndarray:
    """n draws of the K-component mixture fitted by EM to ``fit_on`` in ``space`` (the best of
    ``n_init`` starts), mapped back."""
    from sklearn.mixture import GaussianMixture

    forward, inverse = SPACES[space]
    gm = GaussianMixture(k, covariance_type="full", n_init=n_init, max_iter=500, random_state=seed).fit(forward(fit_on))
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
    fig = Figure(figsize=(max(7.0, 5.0 * len(names)), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        mine = [r for r in rows if r["task"] == name]
        obs = sorted({r["obs"] for r in mine})

        def mean(k, space, mine=mine, obs=obs):
            vals = [r["c2st"] for r in mine if r["k"] == k and r["space"] == space]
            return np.mean(vals) if len(vals) == len(obs) else np.nan  # only over every observation

        for j, space in enumerate(sorted({r["space"] for r in mine if r["k"]})):
            ks = sorted({r["k"] for r in mine if r["space"] == space})
            ax.plot(ks, [mean(k, space) for k in ks], "o-", color=f"C{j}", label=f"mixture in {space}")
        if any(r["k"] == 0 for r in mine):
            ax.axhline(mean(0, "exact"), color="k", ls=":", label="exact draws")
        if name in data.get("mdnjax", {}):
            ax.axhline(data["mdnjax"][name], color="C3", ls="--", label="mdnjax MDN, 10^5, default (same obs)")
        trained = sorted(data.get("mdnjax_by_k", {}).get(name, {}).items(), key=lambda kv: int(kv[0]))
        if trained:  # networks trained with other K (``--with-mdn``), scored on the same observations
            ks = [int(k) for k, _ in trained]
            ax.plot(ks, [v for _, v in trained], "s--", color="C3", label="mdnjax MDN, 10^5, by K (same obs)")
        if name in data.get("published", {}):
            ax.axhline(data["published"][name], color="grey", ls="-.", label="published NPE, 10^5 (obs 1–10)")
        spans = obs == list(range(obs[0], obs[-1] + 1))
        where = (
            f"observation {obs[0]}"
            if len(obs) == 1
            else f"mean over observations {obs[0]}–{obs[-1]}"
            if spans
            else f"mean over observations {', '.join(map(str, obs))}"
        )
        ax.set(xscale="log", xlabel="components K", ylabel="C2ST", title=f"{name}, {where}")
        ticks = sorted({r["k"] for r in mine if r["k"]} | {int(k) for k, _ in trained})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"K-component mixtures fitted by EM to exact posterior draws — {data['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["gaussian_linear_uniform"], choices=list(BOX))
    p.add_argument("--obs", type=int, nargs="+", default=[1])
    p.add_argument("--components", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--spaces", nargs="+", default=["logit", "probit", "raw"], choices=list(SPACES))
    p.add_argument("--fit-draws", type=int, default=100_000)
    p.add_argument("--n-init", type=int, default=1, help="EM's starts per fit (the best kept; EM finds local optima)")
    p.add_argument(
        "--with-mdn",
        nargs="+",
        default=[],
        help="benchmarks/sbibm.py result files of networks trained with other K, drawn beside the fits",
    )
    p.add_argument("--out", default=str(RESULTS / "mixture_limit.json"))
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    data["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    data["published"] = {"gaussian_linear": 0.506, "gaussian_linear_uniform": 0.509, "slcp": 0.831}
    if not args.figure_only:
        for name in args.tasks:
            task = sbibm.TASKS[name]()
            for obs in args.obs:
                run_task(name, task, obs, args, data, path)
    sb = RESULTS / "sbibm.json"
    if sb.is_file():  # mdnjax's own figure at the same observations, where measured
        runs = json.loads(sb.read_text())["runs"]
        data["mdnjax"] = {}
        for name in {r["task"] for r in data["runs"]}:
            mine = runs.get(f"{name}/100000", {}).get("c2st", {})
            obs = sorted({r["obs"] for r in data["runs"] if r["task"] == name})
            if all(str(i) in mine for i in obs):
                data["mdnjax"][name] = float(np.mean([mine[str(i)] for i in obs]))
        _save(path, data)
    for other in args.with_mdn:  # trained networks by K, averaged over the observations fitted here
        for key, run in json.loads(Path(other).read_text())["runs"].items():
            name = key.split("/")[0]
            obs = sorted({r["obs"] for r in data["runs"] if r["task"] == name})
            plain = run["settings"].get("linear_skip", "False") == "False"
            if plain and key.endswith("/100000") and obs and all(str(i) in run["c2st"] for i in obs):
                k = run["settings"]["components"]
                data.setdefault("mdnjax_by_k", {}).setdefault(name, {})[k] = float(
                    np.mean([run["c2st"][str(i)] for i in obs])
                )
        _save(path, data)
    figure(data, path.with_suffix(".png"))
    return 0


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_task(name: str, task, obs: int, args, data: dict, path: Path) -> None:
    """Every (K, space) of ``args`` at one observation of one task, skipping what ``data`` holds."""
    y, ref = np.asarray(sbibm.observation(task, obs), np.float64), sbibm.reference(task, obs)
    jobs = [(0, "exact")] + [(k, s) for s in args.spaces for k in args.components]
    if name == "gaussian_linear":  # one Gaussian is exact in every space on ℝ
        jobs = [(0, "exact")] + [(k, "raw") for k in args.components]
    todo = [
        (k, s)
        for k, s in jobs
        if not any(r["task"] == name and r["obs"] == obs and r["k"] == k and r["space"] == s for r in data["runs"])
    ]
    if not todo:
        return
    info: dict = {}
    t0 = time.perf_counter()
    if name == "slcp":  # exact draws by rejection: the fit's and the scored ones from one sampler
        both = slcp_draws(y, ref, args.fit_draws + len(ref), np.random.default_rng(obs), info)
        fit_on, exact = both[: args.fit_draws], both[args.fit_draws :]
        print(f"{name} obs {obs}: exact draws in {time.perf_counter() - t0:.0f} s, {info}", flush=True)
    else:
        fit_on = exact_draws(name, y, args.fit_draws, np.random.default_rng(0))
        exact = exact_draws(name, y, len(ref), np.random.default_rng(1))
    box = BOX[name]
    for k, space in todo:
        t0 = time.perf_counter()
        draws = exact if k == 0 else box * mixture_draws(fit_on / box, k, space, len(ref), 1, args.n_init)
        score = c2st(ref, draws)
        row = {"task": name, "obs": obs, "k": k, "space": space, "c2st": score, "s": time.perf_counter() - t0}
        if k:
            row["n_init"] = args.n_init
        if k == 0 and info:
            row["sampler"] = info
        data["runs"].append(row)
        print(f"{name} obs {obs} {space:7s} K={k:3d}: C2ST {score:.3f}", flush=True)
        _save(path, data)


if __name__ == "__main__":
    raise SystemExit(main())
