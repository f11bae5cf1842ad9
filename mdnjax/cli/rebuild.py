"""``python -m mdnjax report RUN``: a trained run folder read back as ``fit``'s ``Result`` (the
posterior and losses from its files, the training draws simulated or read again from the seed, the
pooled rounds of a rounds run) and its report written again, without training."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mdnjax.cli.console import Printer
from mdnjax.cli.flags import Parser, UsageError
from mdnjax.cli.report import REPORT, write_report


def report_main(argv=None) -> int:
    """``python -m mdnjax report RUN``: the report of a trained run again, without training."""
    p = Parser(prog=f"python -m {REPORT}", description="Write the report of a trained run again (no training).")
    p.add_argument("run_dir", metavar="RUN")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    from mdnjax import xla

    xla.configure_cpu()
    prog = REPORT
    from mdnjax import checkpoint
    from mdnjax.cli.console import user_error
    from mdnjax.simulation import SimulationError, UserCodeError

    out = Path(args.run_dir)
    lock = None
    try:
        result, record, task, config, lock = _saved_run(out)
    except (UsageError, ValueError, SimulationError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return user_error(prog, err)
    try:
        return write_report(prog, t_start, out, record, task, config, result)
    finally:
        checkpoint.unlock_run_dir(lock)


def _saved_run(out: Path):
    """A trained run folder as ``fit``'s ``Result``: the posterior and losses from its files, the
    layout and held-out draws simulated again from the seed (the same draws training used)."""
    import jax
    import numpy as np

    from mdnjax import checkpoint, layout, sources, train
    from mdnjax.cli.rundir import reattach, run_task
    from mdnjax.config import Config
    from mdnjax.posterior import load

    if not (out / checkpoint.RUN).is_file() or not (out / checkpoint.POSTERIOR_SPEC).is_file():
        raise UsageError(f"{out} holds no trained posterior (run.json, posterior.json): train it first")
    lock = checkpoint.lock_run_dir(out)
    try:
        record = checkpoint.read_json(out / checkpoint.RUN)
        task = run_task(out, record)
        config = Config.from_run(checkpoint.read_json(out / checkpoint.CONFIG))
        task, config = reattach(task, record, config)  # a run trained from stored simulations
        if "rounds" in record:  # sequential rounds: the pooled simulations the last round trained on
            from mdnjax.cli.rounds import pooled_task

            base = sources.stored(task).task if sources.stored(task) else task
            task, config = pooled_task(out, record, base, config)
        post = load(out)
        config, choice = train.chosen(task, config)
        template = jax.tree_util.tree_map(np.asarray, train.state_template(task, config, post.spec.inputs))
        state, extra = checkpoint.load_tree(out / checkpoint.CHECKPOINT, template, ("losses",))
        again = "reading the" if sources.stored(task) else "simulating the"
        Printer.stage(f"{again} {config.samples:,} training draws again (seed {config.seed}; no training)")
        sessions = record.get("sessions", [])
        timings = dict(sessions[-1].get("timings", {})) if sessions else {}
        if config.per_sample:
            from mdnjax import report_sample

            result = report_sample.rebuilt(task, config, post, state, extra["losses"], timings, choice)
            return result, record, task, config, lock
        b, sim = layout.build_layout(task, config, min_count=choice.min_count)
        heldout = sources.draw_heldout(task, config)
        result = train.Result(
            post, state, extra["losses"], timings, b.without_samples(), sim, config, None, None, heldout
        )
        return result, record, task, config, lock
    except BaseException:
        checkpoint.unlock_run_dir(lock)
        raise
