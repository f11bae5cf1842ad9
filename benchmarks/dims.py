"""Epoch time against the number of parameters D, at the same N and the same buckets.

    python benchmarks/dims.py            # N = 1e6, D in 1 2 3 5, two bucket structures
    python benchmarks/dims.py --quick    # N = 2e5

θ ~ N(0, I_D) and y depends on θ_0 alone, so every D sees exactly the same y and bucket sizes (the
draws of θ_0 are the same at every D): only the kernel's work per sample changes. Two bucket
structures: ``binomial`` (y ~ Binomial(100, logit⁻¹ θ_0): ~100 thick buckets, rows of ~1000) and
``thin`` (y = four Binomial(5, logit⁻¹(θ_0 + x_i)) counts, like the bioassay: ~1000 thin buckets,
rows of ~90). D = 1 trains with the scalar kernel (``kernels.tiles``), D > 1 with the
full-covariance one (``kernels.full``); both on the packed layout, a full training step (network,
kernel, Adam) per epoch, ``EPOCHS`` epochs in one ``lax.scan`` per timed call.

Warm-up and compilation first; then every repeat runs each D in turn (interleaved), so the
ratios come from the same minutes of the same machine. Per D: the median ms/epoch over repeats and
the ratio to D = 1. Results: a table on stdout, ``results/dims[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mdnjax import xla  # noqa: E402

xla.configure_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mdnjax import Config, layout, model, train  # noqa: E402

OUT = Path(__file__).parent / "results"
DIMS = (1, 2, 3, 5)
EPOCHS = 20


def draws(n: int, dim: int, kind: str, seed: int = 0):
    """θ (n, D) (or (n,) for D = 1) and integer codes of y; θ_0 and y are the same at every D."""
    rng = np.random.default_rng(seed)
    theta0 = rng.normal(size=n)
    if kind == "binomial":
        y = rng.binomial(100, 1 / (1 + np.exp(-theta0)))
    else:
        doses = np.array([-0.86, -0.30, -0.05, 0.73]) * 3
        counts = rng.binomial(5, 1 / (1 + np.exp(-(theta0[:, None] + doses))))
        y = counts @ (6 ** np.arange(4))  # one integer per vector of counts
    rest = np.random.default_rng(seed + 1).normal(size=(n, dim - 1))
    theta = theta0 if dim == 1 else np.column_stack([theta0, rest])
    return theta.astype(np.float32), y


def setup(n: int, dim: int, kind: str):
    theta, y = draws(n, dim, kind)
    b = layout.bucket_packed(theta, y)
    data = layout.to_data(b, (float(np.mean(y)), float(np.std(y))), weighting="per-sample")
    config = Config(samples=n, epochs=10_000, layout="packed", seed=0).resolve()
    graphdef, _ = model.init(jax.random.key(0), config.components, config.hidden, dim, 1)
    run = train.make_flat_run_epochs(train.make_loss(config, graphdef, dim), train.optimizer(config))
    state = train.initial_state(config, dim, 1)
    t0 = time.perf_counter()
    compiled = run.lower(state, data, EPOCHS).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, data)  # warm-up
    jax.block_until_ready(state)
    return {"compiled": compiled, "state": state, "data": data, "compile_s": compile_s, "shape": list(data.theta.shape)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 2e5, 5 repeats")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    n = 200_000 if args.quick else 1_000_000
    repeats = args.repeats or (5 if args.quick else 9)
    results = {
        "device": f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()}, {jax.device_count()})",
        "jax": jax.__version__,
        "samples": n,
        "epochs_per_call": EPOCHS,
        "repeats": repeats,
        "structures": {},
    }
    for kind in ("binomial", "thin"):
        runs = {d: setup(n, d, kind) for d in DIMS}
        times = {d: [] for d in DIMS}
        for _ in range(repeats):
            for d, r in runs.items():
                t0 = time.perf_counter()
                r["state"], losses = r["compiled"](r["state"], r["data"])
                jax.block_until_ready(losses)
                times[d].append(1e3 * (time.perf_counter() - t0) / EPOCHS)
        base = float(np.median(times[1]))
        rows = {}
        for d in DIMS:
            med = float(np.median(times[d]))
            rows[str(d)] = {
                "ms_per_epoch": med,
                "min": float(np.min(times[d])),
                "max": float(np.max(times[d])),
                "ratio_to_d1": med / base,
                "compile_s": runs[d]["compile_s"],
                "data_shape": runs[d]["shape"],
            }
            print(
                f"{kind:>9} D={d}: {med:7.2f} ms/epoch ({np.min(times[d]):.2f}–{np.max(times[d]):.2f}), "
                f"{med / base:4.2f}× D=1, rows×width {runs[d]['shape'][:3]}"
            )
        results["structures"][kind] = rows
    OUT.mkdir(exist_ok=True)
    stem = "dims_quick" if args.quick else "dims"
    (OUT / f"{stem}.json").write_text(json.dumps(results, indent=2))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for kind, rows in results["structures"].items():
        ax.plot(DIMS, [rows[str(d)]["ms_per_epoch"] for d in DIMS], "o-", label=f"{kind} buckets")
    ax.set(
        xlabel="D (parameters)",
        ylabel="ms per epoch (median)",
        title=f"epoch time vs D, N = {n:.0e}, {results['device']}",
        xticks=DIMS,
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"{stem}.png", dpi=90)
    print(f"wrote {OUT / stem}.json and .png")


if __name__ == "__main__":
    main()
