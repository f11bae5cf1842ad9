"""``benchmarks/sbibm.py`` with AdamW (decoupled weight decay on every parameter) in place of Adam:
does a regulariser let a wider network fit slcp better? Not an option of mdnjax: the per-sample
optimiser is replaced for this process only.

    MDNJAX_SBIBM=... python benchmarks/weight_decay.py 1e-2 --tasks slcp --budgets 100000 \\
        --components 32 --hidden 128 128 --no-linear-skip --out benchmarks/results/sbibm_slcp_k32_h128_wd1e-2.json
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optax

from mdnjax.train import passes


def adamw(weight_decay: float):
    def optimizer(lr: float, decay_steps: int | None) -> optax.GradientTransformation:
        schedule = lr if decay_steps is None else optax.cosine_decay_schedule(lr, decay_steps)
        return optax.chain(optax.clip_by_global_norm(passes.CLIP), optax.adamw(schedule, weight_decay=weight_decay))

    return optimizer


def main(argv: list[str]) -> int:
    passes._optimizer = adamw(float(argv[0]))
    spec = importlib.util.spec_from_file_location("sbibm_benchmark", Path(__file__).with_name("sbibm.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
