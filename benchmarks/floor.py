"""The floor of an epoch: one fused pass of exp over N·K float32 values.

    python benchmarks/floor.py [--samples 1e6] [--components 8]

Every path must evaluate N·K Gaussian log-densities and exponentiate them at least once per
epoch, so this pass bounds an epoch from below. ``epoch_time.py`` calls ``floor_ms`` in the same
run as the paths it compares.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


class Floor:
    """``sum(exp(x))`` over an (N, K) float32 array, compiled and warmed up once."""

    def __init__(self, num: int, components: int):
        self.x = jnp.asarray(np.random.default_rng(0).standard_normal((num, components), np.float32))
        self.f = jax.jit(lambda a: jnp.sum(jnp.exp(a)))
        self.f(self.x).block_until_ready()

    def run(self, calls: int = 10) -> list[float]:
        """Milliseconds of each of ``calls`` back-to-back calls."""
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            self.f(self.x).block_until_ready()
            times.append(1e3 * (time.perf_counter() - t0))
        return times


def summary(times) -> dict:
    return {"median": float(np.median(times)), "min": float(np.min(times)), "max": float(np.max(times))}


def floor_ms(num: int, components: int, repeats: int = 30) -> dict:
    """Median/min/max milliseconds of ``sum(exp(x))`` over an (N, K) float32 array, after warm-up."""
    return summary(Floor(num, components).run(repeats))


def main() -> None:
    from mdnjax import xla

    xla.configure_cpu()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=float, default=1e6)
    p.add_argument("--components", type=int, default=8)
    args = p.parse_args()
    result = floor_ms(int(args.samples), args.components)
    print(
        json.dumps({"samples": int(args.samples), "K": args.components, "ms": result, "device": str(jax.devices()[0])})
    )


if __name__ == "__main__":
    main()
