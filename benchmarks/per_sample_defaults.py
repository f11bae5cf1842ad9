"""How the per-sample layout's defaults were chosen: the best validation NLL (per pair, θ in the
fitting space, the same validation pairs for every setting) and the training time, one setting
changed at a time from the base, on sbibm tasks at one budget.

The validation NLL estimates E[−log q(θ | y)] over the joint, which differs from the expected
KL(p(θ | y) ‖ q(θ | y)) by a constant of the task: lower is better, and differences between
settings are differences in expected KL. No reference draws are needed, so this runs in minutes.

    python benchmarks/per_sample_defaults.py --tasks slcp two_moons --samples 10000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax

import mdnjax
from mdnjax import xla

RESULTS = Path(__file__).parent / "results"
BASE = {"batch_size": 256, "lr": 1e-3, "hidden": (64, 64, 64), "components": 8, "schedule": "constant"}
VARIANTS = {
    "base": {},
    "batch 64": {"batch_size": 64},
    "batch 128": {"batch_size": 128},
    "batch 512": {"batch_size": 512},
    "lr 5e-4": {"lr": 5e-4},
    "lr 3e-3": {"lr": 3e-3},
    "hidden 128x2": {"hidden": (128, 128)},
    "hidden 64x2": {"hidden": (64, 64)},
    "K 4": {"components": 4},
    "K 16": {"components": 16},
    "embedding none": {"embedding": "none"},
    "plateau": {"schedule": "plateau"},
    "plateau batch 128": {"schedule": "plateau", "batch_size": 128},
    "plateau lr 3e-3": {"schedule": "plateau", "lr": 3e-3},
    "plateau 64x2": {"schedule": "plateau", "hidden": (64, 64)},
    "plateau 64x2 batch 128": {"schedule": "plateau", "hidden": (64, 64), "batch_size": 128},
    "plateau 64x2 none": {"schedule": "plateau", "hidden": (64, 64), "embedding": "none"},
    "plateau 64x2 none batch 128": {"schedule": "plateau", "hidden": (64, 64), "embedding": "none", "batch_size": 128},
    "plateau 128x2 none batch 128": {
        "schedule": "plateau",
        "hidden": (128, 128),
        "embedding": "none",
        "batch_size": 128,
    },
    "plateau 64x2 none lr 3e-3 batch 128": {
        "schedule": "plateau",
        "hidden": (64, 64),
        "embedding": "none",
        "batch_size": 128,
        "lr": 3e-3,
    },
    "base seed 1": {"seed": 1},
    "plateau seed 1": {"schedule": "plateau", "seed": 1},
}
# Variants of today's defaults (``config.PER_SAMPLE``, batch 128), not of BASE: does the batch
# grow with the budget? (``--samples 100000 --variants defaults "defaults batch 512" ...``)
DEFAULTS = {
    "defaults": {},
    "defaults batch 256": {"batch_size": 256},
    "defaults batch 512": {"batch_size": 512},
    "defaults batch 512 lr 2e-3": {"batch_size": 512, "lr": 2e-3},
    "defaults batch 256 lr 2e-3": {"batch_size": 256, "lr": 2e-3},
    "defaults lr 2e-3": {"lr": 2e-3},
    "defaults lr 3e-3": {"lr": 3e-3},
    "defaults batch 256 lr 3e-3": {"batch_size": 256, "lr": 3e-3},
    "defaults seed 1": {"seed": 1},
    "defaults batch 256 lr 2e-3 seed 1": {"batch_size": 256, "lr": 2e-3, "seed": 1},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["slcp", "two_moons"])
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *DEFAULTS])
    p.add_argument("--out", default=str(RESULTS / "per_sample_defaults.json"))
    args = p.parse_args(argv)
    xla.configure_cpu()
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    data["device"] = f"{jax.devices()[0].platform}, {os.cpu_count()} cores"
    for name in args.tasks:
        for variant in args.variants:
            key = f"{name}/{args.samples}/{variant}"
            if key in data["runs"]:
                continue
            settings = DEFAULTS[variant] if variant in DEFAULTS else {**BASE, **VARIANTS[variant]}
            t0 = time.perf_counter()
            r = mdnjax.fit(name, mdnjax.Config(samples=args.samples, layout="per-sample", **settings))
            data["runs"][key] = {
                "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                "best_validation_nll": r.report["best_validation"],
                "wall_s": time.perf_counter() - t0,
                "train_s": r.timings["train_s"],
                "compile_s": r.timings["compile_s"],
                "passes": int(r.state.epoch),
                "best_pass": r.best_epoch,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))
            v = data["runs"][key]
            print(
                f"{key:40s} val NLL {v['best_validation_nll']:8.4f}  wall {v['wall_s']:6.1f} s  passes {v['passes']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
