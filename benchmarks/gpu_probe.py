"""One command for a short accelerator lease: versions, the card, the core tests, every kernel timed.

    python benchmarks/gpu_probe.py                # N = 1e6, 1e7, 1e8; a few minutes on a GPU
    python benchmarks/gpu_probe.py --quick        # N = 1e5, 1e6: a check of the script itself (CPU)

Times, on the default device (median of repeats after a warm-up call, compilation apart): the
training step of every kernel variant — ``tiles`` (the CPU path: cache-sized ``lax.map`` tiles,
cheap shift, per-tile fallback), ``single-pass`` (the accelerator path: one pass, per-sample shift)
and ``binned`` (num_y × 2B points, single pass) — at each N, plus the loss alone (no gradient) and a
floor: one fused exp-and-sum over N·K float32 values. At N ≤ 10^7 each timed call runs 500 epochs
in one ``lax.scan``. Then θ ∈ ℝ^2 (the bioassay, 10^6 draws): the full-covariance kernel, single
pass and tiles, on the binned and packed layouts. Writes ``benchmarks/results/gpu_probe.json``
(the card is named in it).

Plan for a machine with jax (CUDA) preinstalled and nothing else: the script needs numpy, scipy,
flax and optax besides; README ("On a GPU") says how to carry the missing ones as wheels. Try also
``XLA_FLAGS=--xla_gpu_enable_command_buffer=+WHILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from mdnjax import xla

xla.configure_cpu()  # the XLA:CPU flag on a CPU; nothing on an accelerator

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mdnjax import kernels, layout, model, objective, tasks, train  # noqa: E402
from mdnjax.config import Config  # noqa: E402

OUT = Path(__file__).parent / "results"


def versions() -> dict:
    out = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("jaxlib", "flax", "optax", "numpy", "scipy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    dev = jax.devices()[0]
    out["device"] = f"{dev.platform}:{getattr(dev, 'device_kind', str(dev))}"
    out["devices"] = len(jax.devices())
    out["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return out


def core_tests() -> dict:
    """The kernel and accelerator tests, on this device."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider"]
    cmd += ["tests/test_kernels.py", "tests/test_accelerator.py", "tests/test_binned.py", "tests/test_full_kernel.py"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
    return {"returncode": proc.returncode, "summary": tail, "seconds": time.perf_counter() - t0}


def _timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "max_s": float(np.max(times))}


def _time_path(kernel, graphdef, cfg, data, epochs: int, repeats: int, dims: tuple[int, int] = (1, 1)) -> dict:
    """ms per training epoch (``epochs`` per call in one scan) and of the loss alone."""

    def loss(params, d):
        return objective.loss(params, graphdef, d, kernel)

    run = train.make_flat_run_epochs(loss, train.optimizer(cfg))
    state = [train.initial_state(cfg, *dims)]
    t0 = time.perf_counter()
    compiled = run.lower(state[0], data, epochs).compile()
    compile_s = time.perf_counter() - t0

    def call():
        state[0], losses = compiled(state[0], data)
        losses.block_until_ready()

    r = _timed(call, repeats)
    value = jax.jit(loss)
    vs = _timed(lambda: value(state[0].params, data).block_until_ready(), repeats)
    return {
        "ms_per_epoch": 1e3 * r["median_s"] / epochs,
        "ms_per_epoch_min": 1e3 * r["min_s"] / epochs,
        "loss_only_ms": 1e3 * vs["median_s"],
        "compile_s": compile_s,
        "points": int(np.prod(data.theta.shape)),
    }


def probe(n: int, epochs: int, repeats: int) -> dict:
    task = tasks.GammaPoisson()
    cfg = Config(samples=n, epochs=epochs, layout="packed").resolve(task)
    t0 = time.perf_counter()
    packed, _ = layout.build_layout(task, cfg)
    binned, _ = layout.build_layout(task, Config(samples=n, layout="binned").resolve(task))
    out = {"N": n, "epochs_per_call": epochs, "simulate_and_layout_s": time.perf_counter() - t0, "paths": {}}
    embedding = (0.0, 100.0)
    data = {
        "tiles": layout.to_data(packed, embedding, weighting="per-sample"),
        "single-pass": layout.to_data(packed, embedding, weighting="per-sample"),
        "binned": layout.binned_to_data(binned, embedding, weighting="per-sample"),
    }
    del packed
    graphdef, _ = model.init(jax.random.key(0), cfg.components, cfg.hidden)
    for name, d in data.items():
        kernel = kernels.KERNELS["tiles" if name == "tiles" else "single-pass"]
        out["paths"][name] = _time_path(kernel, graphdef, cfg, d, epochs, repeats)
    k = cfg.components
    x = jax.random.normal(jax.random.key(1), (n, k), jnp.float32)
    floor = jax.jit(lambda a: jnp.sum(jnp.exp(a)))
    f = _timed(lambda: floor(x).block_until_ready(), repeats)
    out["floor_ms"] = 1e3 * f["median_s"]
    return out


def probe_2d(epochs: int, repeats: int) -> dict:
    """θ ∈ ℝ^2, y ∈ ℤ^4 at 10^6 draws (the bioassay): the full-covariance kernel on both layouts."""
    task = tasks.Bioassay()
    out = {"task": "bioassay", "N": 10**6, "epochs_per_call": epochs, "paths": {}}
    for kind in ("binned", "packed"):
        cfg = Config(samples=10**6, epochs=epochs, layout=kind).resolve(task)
        b, _ = layout.build_layout(task, cfg)
        emb = task.input_embedding(b.y_values, b.counts)
        data = layout.binned_to_data(b, emb) if kind == "binned" else layout.to_data(b, emb, weighting="per-sample")
        graphdef, _ = model.init(jax.random.key(0), cfg.components, cfg.hidden, 2, 4)
        for name in ("single-pass", "tiles"):
            kernel = kernels.FULL_KERNELS[name]
            out["paths"][f"{kind}-{name}"] = _time_path(kernel, graphdef, cfg, data, epochs, repeats, (2, 4))
    return out


def probe_per_sample(n: int, repeats: int, batches=(128, 512, 4096)) -> dict:
    """The per-sample layout on slcp (D = 5, M = 8) and slcp_distractors (M = 100, MLP embedding):
    ms per pass over n pairs, and pairs per second, at several batch sizes (the data resident)."""
    from mdnjax.train import minibatch, passes

    out = {"N": n, "tasks": {}}
    for name in ("slcp", "slcp_distractors"):
        task = tasks.from_name(name)
        theta, y = task.simulate(np.random.default_rng(0), n)
        rows = {}
        for batch in batches:
            cfg = Config(samples=n, layout="per-sample", batch_size=batch).resolve(task)
            emb = minibatch.default_embedding(cfg, y.shape[1])
            graphdef, params = model.init(jax.random.key(0), cfg.components, cfg.hidden, 5, y.shape[1], emb)
            steps = n // batch
            opt = passes.optimizer(cfg, steps)
            pairs = passes.Pairs(
                jnp.asarray(y, jnp.float32),
                jnp.asarray(theta / 3.0, jnp.float32),
                jnp.asarray(y[:1000], jnp.float32),
                jnp.asarray(theta[:1000] / 3.0, jnp.float32),
            )
            run = passes.make_pass(graphdef, opt, batch, steps)
            state = [passes.state_of(params, opt)]
            key = jax.random.key(0)
            compiled = run.lower(state[0], pairs, key).compile()

            def once(state=state, compiled=compiled, pairs=pairs, key=key):
                state[0], losses = compiled(state[0], pairs, key)
                jax.block_until_ready(losses)

            t = _timed(once, repeats)
            rows[str(batch)] = {"ms_per_pass": 1e3 * t["median_s"], "pairs_per_s": n / t["median_s"], "steps": steps}
        out["tasks"][name] = rows
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1e5, 1e6 with few epochs: check the script")
    p.add_argument("--no-tests", action="store_true", help="skip the core tests")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    result = {"versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(result["versions"]), flush=True)
    if not args.no_tests:
        result["tests"] = core_tests()
        print("core tests:", result["tests"], flush=True)
    sizes = [(10**5, 50), (10**6, 50)] if args.quick else [(10**6, 500), (10**7, 500), (10**8, 20)]
    result["runs"] = []
    for n, epochs in sizes:
        r = probe(n, epochs, args.repeats)
        result["runs"].append(r)
        line = ", ".join(f"{k} {v['ms_per_epoch']:.3f} ms" for k, v in r["paths"].items())
        print(f"N={n:.0e}: {line}; floor {r['floor_ms']:.3f} ms", flush=True)
    result["two_parameters"] = probe_2d(20 if args.quick else 200, args.repeats)
    line = ", ".join(f"{k} {v['ms_per_epoch']:.3f} ms" for k, v in result["two_parameters"]["paths"].items())
    print(f"bioassay (D = 2, M = 4), N=1e6: {line}", flush=True)
    result["per_sample"] = probe_per_sample(10**5 if args.quick else 10**6, args.repeats)
    for name, rows in result["per_sample"]["tasks"].items():
        line = ", ".join(f"batch {b}: {r['ms_per_pass']:.1f} ms/pass" for b, r in rows.items())
        print(f"per-sample {name}, N={result['per_sample']['N']:.0e}: {line}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    name = "gpu_probe_quick.json" if args.quick else "gpu_probe.json"
    (OUT / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
