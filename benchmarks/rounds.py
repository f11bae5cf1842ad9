"""Sequential rounds (TSNPE, ``mdnjax.fit_rounds``) against amortized training at the same budget.

* ``--task beta``: the beta task at y_o = 95 (about 7 of 10^6 prior draws land there): KL(p‖q)
  at y_o against the exact Beta posterior, amortized (``mdnjax.fit`` on the whole budget) and in
  R rounds of budget / R each.
* ``--sbibm``: sbibm tasks, 10 rounds of 10^4 (as the sbibm paper ran SNPE), C2ST at each
  observation against sbibm's reference draws, beside the published SNPE figures and mdnjax's
  amortized figure at the same budget (``results/sbibm.json``).

Results are written after every run (a run already in the JSON is skipped), so a long grid runs in
the background and resumes.

    python benchmarks/rounds.py --task beta                       # beta at y_o = 95, 10^6 in all
    python benchmarks/rounds.py --sbibm two_moons --obs 1 2 3     # TSNPE on sbibm
    python benchmarks/rounds.py --quick                           # beta at 10^5, one sbibm obs at 2×5·10^3
    python benchmarks/rounds.py --figure-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import mdnjax
from mdnjax import metrics, tasks, xla
from mdnjax.c2st import c2st
from mdnjax.tasks import sbibm
from mdnjax.train.rounds import fit_rounds

RESULTS = Path(__file__).parent / "results"
PUBLISHED_SNPE = {  # sbibm paper, SNPE-C (APT, NSF), 10 rounds, 10^5 simulations, mean over obs 1-10
    "two_moons": 0.530,
    "slcp": 0.666,
    "gaussian_linear": 0.507,
    "gaussian_mixture": 0.533,
    "bernoulli_glm": 0.525,
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _kl_at(post, task, y: int) -> float:
    return metrics.compare(task, y, *(np.asarray(a) for a in post.mixture(y)), space=post.spec.space)["kl"]


def beta(
    data: dict, path: Path, budget: int, rounds: list[int], y_o: int, seeds: list[int], margin: float, epochs
) -> None:
    task = tasks.from_name("beta")
    for seed in seeds:
        for r in rounds:
            key = f"beta/y{y_o}/{budget}/R{r}/seed{seed}" + (f"/margin{margin:g}" if margin != 1 and r > 1 else "")
            key += f"/epochs{epochs}" if epochs else ("/epochs-default" if r > 1 else "")
            if key in data["runs"]:
                continue
            t0 = time.perf_counter()
            if r == 1:
                result = mdnjax.fit(task, mdnjax.Config(samples=budget, seed=seed, epochs=epochs))
                post, records = result.posterior, []
            else:
                config = mdnjax.Config(samples=budget, seed=seed, epochs=epochs)
                out = fit_rounds(task, config, observed=y_o, rounds=r, margin=margin)
                post, records = out.result.posterior, out.rounds
            entry = {
                "kl": _kl_at(post, task, y_o),
                "wall_s": time.perf_counter() - t0,
                "training_samples_at_y_o": int(post.training_samples(y_o)),
                "rounds": records,
            }
            data["runs"][key] = entry
            _save(path, data)
            print(f"{key}: KL at y_o {entry['kl']:.5f} ({entry['wall_s']:.0f} s)", flush=True)


def on_sbibm(
    data: dict,
    path: Path,
    names: list[str],
    obs: list[int],
    rounds: int,
    per_round: int,
    skip: bool | None = None,
    components: int | None = None,
) -> None:
    for name in names:
        task = tasks.from_name(name)
        for i in obs:
            key = f"{name}/{rounds}x{per_round}/obs{i}"
            if key in data["runs"]:
                continue
            y_o, ref = sbibm.observation(task, i), sbibm.reference(task, i)
            t0, c0 = time.perf_counter(), time.process_time()
            more = {} if components is None else {"components": components}
            config = mdnjax.Config(seed=0, linear_skip=skip, **more)
            out = fit_rounds(task, config, observed=y_o, rounds=rounds, per_round=per_round)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            draws = np.asarray(out.result.posterior.sample(jax.random.key(1000 + i), y_o, len(ref)), np.float64)
            nan = int(np.sum(~np.isfinite(draws)))
            entry = {
                "c2st": c2st(ref, draws) if nan == 0 else None,
                "nan_draws": nan,
                "wall_s": wall,
                "cpu_s": cpu,
                "rounds": [{k: v for k, v in r.items() if k != "at_observed"} for r in out.rounds],
                "last_round": {  # what trained the q that was scored (the skip's default counts all rounds')
                    "linear_skip": out.result.config.linear_skip,
                    "ema": out.result.config.ema,
                    "components": out.result.config.components,
                },
            }
            data["runs"][key] = entry
            _save(path, data)
            print(f"{key}: C2ST {entry['c2st']} ({wall:.0f} s)", flush=True)


def figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    amortized = _load(RESULTS / "sbibm.json")["runs"]
    if path == RESULTS / "rounds.json":  # the beta runs kept in a file of their own join the figure
        data = {**data, "runs": {**_load(RESULTS / "rounds_beta_epochs.json")["runs"], **data["runs"]}}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    series: dict[str, dict[int, list[float]]] = {}  # variant -> rounds -> KL over seeds
    for k, v in data["runs"].items():
        if k.startswith("beta/"):
            parts = k.split("/")
            variant = "/".join(parts[5:]) or "4,000 epochs (the recipe)"
            series.setdefault(variant, {}).setdefault(int(parts[3][1:]), []).append(v["kl"])
    all_r = sorted({r for runs in series.values() for r in runs})
    for j, (variant, runs) in enumerate(sorted(series.items())):
        rs = sorted(runs)
        ax.semilogy(rs, [np.median(runs[r]) for r in rs], "o-", color=f"C{j}", label=f"{variant} (median)")
        for r in rs:
            ax.semilogy([r] * len(runs[r]), runs[r], ".", color=f"C{j}", alpha=0.5)
    if series:
        ax.axhline(0.002, color="red", ls=":", label="target 0.002")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_r, [("amortized" if r == 1 else f"{r} rounds") for r in all_r])
        ax.minorticks_off()
        ax.set_ylabel("KL(p‖q) at y_o = 95")
        ax.set_title("beta task, 10^6 simulations in all (dots: seeds)")
        ax.legend(fontsize=7)
    ax = axes[1]
    names = sorted({k.split("/")[0] for k in data["runs"] if not k.startswith("beta/")})
    for j, name in enumerate(names):
        scores = [v["c2st"] for k, v in data["runs"].items() if k.startswith(name + "/") and v["c2st"] is not None]
        ax.plot([j - 0.2] * len(scores), scores, "o", color="C0", alpha=0.5, label="TSNPE (mdnjax)" if j == 0 else None)
        amort = amortized.get(f"{name}/100000", {}).get("c2st", {})
        ax.plot(
            [j] * len(amort),
            list(amort.values()),
            "s",
            color="C1",
            alpha=0.5,
            label="amortized (mdnjax)" if j == 0 else None,
        )
        if name in PUBLISHED_SNPE:
            ax.plot(
                [j + 0.2], [PUBLISHED_SNPE[name]], "*", color="k", ms=12, label="SNPE, published" if j == 0 else None
            )
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_ylabel("C2ST (0.5 = indistinguishable)")
    ax.set_title("sbibm, 10^5 simulations in all")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)


def table(data: dict) -> str:
    """Markdown: per sbibm task, TSNPE's C2ST per observation and mean, mdnjax amortized on the same
    observations (10^5, ``results/sbibm.json``) and the published SNPE mean over 1-10."""
    amortized = _load(RESULTS / "sbibm.json")["runs"]
    lines = [
        "| task | observations | TSNPE, mdnjax (mean) | amortized, mdnjax, same obs | SNPE, published (1–10) |",
        "|---|---|---|---|---|",
    ]
    for name in sorted({k.split("/")[0] for k in data["runs"] if not k.startswith("beta/")}):
        runs = {int(k.rsplit("obs", 1)[1]): v for k, v in data["runs"].items() if k.startswith(name + "/")}
        obs = sorted(i for i, v in runs.items() if v["c2st"] is not None)
        ours = [runs[i]["c2st"] for i in obs]
        amort = amortized.get(f"{name}/100000", {}).get("c2st", {})
        same = [amort[str(i)] for i in obs if str(i) in amort]
        shown = ", ".join(f"{i}: {c:.3f}" for i, c in zip(obs, ours))
        published = PUBLISHED_SNPE.get(name, float("nan"))
        same_mean = f"{np.mean(same):.3f}" if same else "–"
        lines.append(f"| {name} | {len(obs)} | {np.mean(ours):.3f} ({shown}) | {same_mean} | {published:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["beta"])
    parser.add_argument("--observed", type=int, default=95)
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--margin", type=float, default=1.0, help="the region's q widened this much (sd)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    parser.add_argument("--sbibm", nargs="+", default=[])
    parser.add_argument("--obs", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--sbibm-rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10_000)
    parser.add_argument(
        "--linear-skip",
        action=argparse.BooleanOptionalAction,
        help="--sbibm: Config.linear_skip on or off instead of the default (another --out)",
    )
    parser.add_argument("--components", type=int, help="--sbibm: K instead of the default (another --out)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--figure-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    xla.configure_cpu()
    path = args.out or RESULTS / ("rounds_quick.json" if args.quick else "rounds.json")
    data = _load(path)
    data["device"] = (
        f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    if not args.figure_only:
        if args.quick:
            beta(data, path, 100_000, [1, 2], args.observed, [0], args.margin, args.epochs)
            on_sbibm(data, path, ["two_moons"], [1], 2, 5_000)
        if args.task == "beta":
            beta(data, path, args.budget, args.rounds, args.observed, args.seeds, args.margin, args.epochs)
        if args.sbibm:
            on_sbibm(
                data, path, args.sbibm, args.obs, args.sbibm_rounds, args.per_round, args.linear_skip, args.components
            )
    figure(data, path)
    print(table(data))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
