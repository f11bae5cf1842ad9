"""One per-sample run's best validation NLL, recorded once in a results file: what
``benchmarks/ema.py`` and ``benchmarks/linear_skip.py`` compare setting against setting (same task,
budget and seed, so the same validation pairs). Runs already in the file are kept, so a grid resumes.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax

import mdnjax
from mdnjax import xla


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def start(data: dict) -> None:
    """XLA's CPU flags as the command sets them, and the device named in the results."""
    xla.configure_cpu()
    cpu = platform.processor() or platform.machine()
    data["device"] = f"{jax.devices()[0].platform} ({cpu}, {os.cpu_count()} cores)"


def measure(data: dict, path: Path, key: str, name: str, budget: int, seed: int, **settings) -> None:
    """Trains ``name`` on ``budget`` simulations with ``settings`` (``Config`` fields) unless ``key``
    is recorded; records the setting, best validation NLL, wall seconds and passes, and saves."""
    if key in data["runs"]:
        return
    t0 = time.perf_counter()
    r = mdnjax.fit(name, mdnjax.Config(samples=budget, layout="per-sample", seed=seed, **settings))
    data["runs"][key] = {
        **settings,
        "best_validation_nll": r.report["best_validation"],
        "wall_s": time.perf_counter() - t0,
        "passes": int(r.state.epoch),
        "best_pass": r.best_epoch,
    }
    path.write_text(json.dumps(data, indent=1))
    print(f"{key:50s} val NLL {r.report['best_validation']:8.4f}", flush=True)
