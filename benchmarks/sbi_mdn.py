"""sbi's MDN (``posterior_nn("mdn")``, sbi 0.27, PyTorch) on the same simulations as mdnjax, scored
with the same C2ST, for the sbibm comparison (CPU seconds on one thread).

Two steps, because sbi and mdnjax live in different environments:

    # 1. with mdnjax: write the simulations mdnjax trains on (seed 0: the same draws as its fit)
    python benchmarks/sbi_mdn.py export --tasks two_moons slcp --budget 100000 --dir /tmp/sims
    # 2. with sbi==0.27 and scikit-learn (and MDNJAX_SBIBM for the sbibm files):
    python benchmarks/sbi_mdn.py train --dir /tmp/sims --observations 1 2 3

Step 2 needs neither jax nor mdnjax: it reads the sbibm files from the wheel itself and scores
with a copy of sbibm's C2ST (``mdnjax/c2st.py``'s definition). Results go to
``benchmarks/results/sbi_mdn.json``; ``benchmarks/sbibm.py`` reads them for its table.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
BOUNDS = {  # the prior of each task for sbi: a box (uniform) or a Gaussian (mean 0, covariance)
    "two_moons": ("box", 1.0),
    "slcp": ("box", 3.0),
    "slcp_distractors": ("box", 3.0),
    "gaussian_linear_uniform": ("box", 1.0),
    "gaussian_mixture": ("box", 10.0),
    "gaussian_linear": ("gauss", None),
    "bernoulli_glm": ("gauss", None),
    "bernoulli_glm_raw": ("gauss", None),
}


def export(args) -> None:
    from mdnjax import tasks

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        task = tasks.from_name(name)
        theta, y = task.simulate(np.random.default_rng(0), args.budget)  # mdnjax's fit: default_rng(seed)
        cov = np.cov(task.sample_prior(np.random.default_rng(1), 200_000).T) if BOUNDS[name][0] == "gauss" else None
        np.savez(out / f"{name}_{args.budget}.npz", theta=theta, y=y, prior_cov=cov if cov is not None else np.zeros(0))
        print(f"wrote {out / f'{name}_{args.budget}.npz'}", flush=True)


def _sbibm_csv(rel: str) -> np.ndarray:
    path = Path(os.environ["MDNJAX_SBIBM"])
    data = zipfile.ZipFile(path).read(f"sbibm/{rel}") if path.is_file() else (path / "sbibm" / rel).read_bytes()
    if rel.endswith(".bz2"):
        data = bz2.decompress(data)
    return np.loadtxt(io.StringIO(data.decode()), delimiter=",", skiprows=1, ndmin=2)


def _files(name: str, i: int):
    folder = {"slcp_distractors": "slcp", "bernoulli_glm_raw": "bernoulli_glm"}.get(name, name)
    obs = {"slcp_distractors": "observation_distractors.csv", "bernoulli_glm_raw": "observation_raw.csv"}.get(
        name, "observation.csv"
    )
    base = f"tasks/{folder}/files/num_observation_{i}/"
    return _sbibm_csv(base + obs)[0], _sbibm_csv(base + "reference_posterior_samples.csv.bz2")


def train(args) -> None:
    import torch
    from sbi.inference import SNPE
    from sbi.neural_nets import posterior_nn
    from sbi.utils import BoxUniform

    sys.path.insert(0, str(Path(__file__).parents[1] / "mdnjax"))
    from c2st import c2st  # the same definition, without importing mdnjax (no jax here)

    torch.set_num_threads(1)
    path = RESULTS / "sbi_mdn.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    data["sbi"] = __import__("sbi").__version__
    for f in sorted(Path(args.dir).glob("*.npz")):
        name, budget = f.stem.rsplit("_", 1)
        key = f"{name}/{budget}"
        sims = np.load(f)
        theta = torch.tensor(sims["theta"], dtype=torch.float32)
        y = torch.tensor(sims["y"], dtype=torch.float32)
        kind, bound = BOUNDS[name]
        dim = theta.shape[1]
        if kind == "box":
            prior = BoxUniform(-bound * torch.ones(dim), bound * torch.ones(dim))
        else:
            cov = torch.tensor(sims["prior_cov"], dtype=torch.float32)
            prior = torch.distributions.MultivariateNormal(torch.zeros(dim), cov)
        entry = data["runs"].get(key)
        torch.manual_seed(0)
        t0, c0 = time.perf_counter(), time.process_time()
        inference = SNPE(prior=prior, density_estimator=posterior_nn(model="mdn"))
        estimator = inference.append_simulations(theta, y).train(show_train_summary=False)
        posterior = inference.build_posterior(estimator)
        train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        if entry is None:
            entry = {"c2st": {}}
        entry.update({"train_wall_s": train_wall, "train_cpu_s": train_cpu, "threads": 1})
        data["runs"][key] = entry
        print(f"{key}: sbi MDN trained in {train_wall:.1f} s wall, {train_cpu:.1f} CPU s", flush=True)
        for i in args.observations:
            if str(i) in entry["c2st"]:
                continue
            y_o, ref = _files(name, i)
            draws = posterior.sample((len(ref),), x=torch.tensor(y_o, dtype=torch.float32), show_progress_bars=False)
            entry["c2st"][str(i)] = c2st(ref, draws.numpy())
            entry["mean_c2st"] = float(np.mean(list(entry["c2st"].values())))
            path.write_text(json.dumps(data, indent=1))
            print(f"{key} observation {i}: sbi MDN C2ST {entry['c2st'][str(i)]:.3f}", flush=True)
        path.write_text(json.dumps(data, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--tasks", nargs="+", default=list(BOUNDS))
    e.add_argument("--budget", type=int, default=100_000)
    e.add_argument("--dir", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dir", required=True)
    t.add_argument("--observations", nargs="+", type=int, default=list(range(1, 11)))
    args = p.parse_args(argv)
    export(args) if args.step == "export" else train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
