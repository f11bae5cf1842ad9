"""The command line: flags → task + ``Config`` → ``fit`` → a run folder. The only module that
prints, exits, handles signals and creates folders.

    python -m mdnjax.train --prior beta            # train (also: python -m mdnjax train ...)
    python -m mdnjax.train --resume RUN --epochs N  # continue a run, or train a finished one longer
    python -m mdnjax.calibrate RUN                  # SBC ranks and coverage of a saved run

Every error is one line on stderr with exit code 2 (bad input) or 1 (a failure while running);
an interrupted run exits 130 after saving its checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

from mdnjax import xla
from mdnjax.simulation import UserCodeError

TRAIN = "mdnjax.train"
CALIBRATE = "mdnjax.calibrate"
PARAM_FLAGS = (
    "alpha",
    "beta",
    "trials",
    "population",
    "initial",
    "shape",
    "rate",
    "observed",
    "mean",
    "sd",
    "rho",
    "doses",
    "animals",
)
TASK_FLAGS = ("prior", *PARAM_FLAGS, "mix_weights", "mix_alpha", "mix_beta")
CONFIG_FLAGS = (
    "samples",
    "components",
    "hidden",
    "recipe",
    "epochs",
    "lr",
    "weighting",
    "schedule",
    "space",
    "layout",
    "bins",
    "seed",
    "holdout",
    "log_every",
    "devices",
)
RUN_FLAGS = ("plot_y", "no_plots", "checkpoint_every")
DEFAULTS = {"prior": "beta", "checkpoint_every": 500, "no_plots": False}


class UsageError(Exception):
    """Bad input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind):
    """An argparse type accepting ``1e6`` for integers when the value is integral."""

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if kind is int:
            if not math.isfinite(value) or value != int(value):
                raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
            return int(value)
        return value

    return parse


def train_parser() -> argparse.ArgumentParser:
    from mdnjax import config as config_lib
    from mdnjax import tasks

    # SUPPRESS: only the flags actually given appear, so --resume can refuse the others
    p = _Parser(
        prog=f"python -m {TRAIN}",
        description="Train an MDN posterior q(θ | y) for a task and write a run folder.",
        argument_default=argparse.SUPPRESS,
    )
    t = p.add_argument_group("task")
    t.add_argument("--task", metavar="FILE.py:NAME", help="your own task: path/to/file.py:NAME or package.module:NAME")
    t.add_argument("--prior", help=f"built-in task: {', '.join(tasks.REGISTRY)} (default beta)")
    t.add_argument("--alpha", type=number(float), help="prior α (default 2)")
    t.add_argument("--beta", type=number(float), help="prior β (beta 5, gamma: rate 3, reed-frost 38)")
    t.add_argument(
        "--trials",
        type=number(int),
        nargs="+",
        help="n: Binomial trials / Poisson exposure (default 100); abtest: nA nB",
    )
    t.add_argument("--population", type=number(int), help="epidemics: N, everyone (reed-frost 50, sir 120)")
    t.add_argument("--initial", type=number(int), help="epidemics: infectives at the start (default 1)")
    t.add_argument("--shape", type=number(float), help="sir: Gamma prior shape of R0 (default 2)")
    t.add_argument("--rate", type=number(float), help="sir: Gamma prior rate of R0 (default 4/3)")
    t.add_argument(
        "--observed",
        type=number(int),
        nargs="+",
        help="the observed y to report: sir one count (default 29, Abakaliki); bioassay 4 counts; abtest yA yB",
    )
    t.add_argument("--mean", type=number(float), help="abtest: prior mean of each logit (default -1)")
    t.add_argument("--sd", type=number(float), help="abtest: prior sd of each logit (default 1)")
    t.add_argument("--rho", type=number(float), help="abtest: prior correlation of the logits (default 0.5)")
    t.add_argument("--doses", type=number(float), nargs="+", help="bioassay: log doses (default the book's four)")
    t.add_argument("--animals", type=number(int), help="bioassay: animals per dose (default 5)")
    t.add_argument("--mix-weights", type=number(float), nargs="+", help="beta-mixture prior: component weights")
    t.add_argument("--mix-alpha", type=number(float), nargs="+", help="beta-mixture prior: component α")
    t.add_argument("--mix-beta", type=number(float), nargs="+", help="beta-mixture prior: component β")
    c = p.add_argument_group("training")
    c.add_argument("--samples", type=number(int), help="simulations (default 1e6; above 1e7 they stream in chunks)")
    c.add_argument("--components", type=number(int), help="K, Gaussians in the mixture (default 8)")
    c.add_argument("--hidden", type=number(int), nargs="+", help="backbone widths (recipe default)")
    c.add_argument("--recipe", help=f"training defaults: {', '.join(config_lib.RECIPES)} (default fast)")
    c.add_argument("--epochs", type=number(int), help="full-batch Adam steps (recipe default)")
    c.add_argument("--lr", type=number(float), help="Adam learning rate (recipe default)")
    c.add_argument("--weighting", help=f"objective: {' or '.join(config_lib.WEIGHTINGS)} (recipe default)")
    c.add_argument("--schedule", help=f"learning-rate schedule: {' or '.join(config_lib.SCHEDULES)}")
    c.add_argument("--space", help="raw (fit θ) or unconstrained (fit f(θ), f from the support) (recipe default)")
    c.add_argument("--layout", help=f"layout of the draws: {', '.join(config_lib.LAYOUTS)} (default binned)")
    c.add_argument(
        "--bins",
        type=number(int),
        help="--layout binned: bins per y of a scalar θ (default 256; θ ∈ ℝ^D: 1024 cells per y)",
    )
    c.add_argument("--seed", type=number(int), help="seeds simulation and initialisation, 0..2^32-1 (default 0)")
    c.add_argument("--holdout", type=number(float), help="extra held-out simulations, share of --samples (default 0.1)")
    c.add_argument("--log-every", type=number(int), help="epochs per dispatch and progress line (default 50)")
    c.add_argument("--devices", type=number(int), help="devices to split the rows over (default: all)")
    r = p.add_argument_group("run")
    r.add_argument("--out", help="output folder (default: runs/TASK-TIMESTAMP)")
    r.add_argument(
        "--plot-y",
        type=number(int),
        nargs="+",
        help="observations to report and plot (default: the task's); vector y: M numbers each",
    )
    r.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    r.add_argument("--checkpoint-every", type=number(int), help="epochs between checkpoints (default 500; 0: end only)")
    r.add_argument("--resume", metavar="RUN", help="continue RUN (with --epochs N: train it to N epochs)")
    d = p.add_argument_group("several processes")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="the coordinator's address")
    d.add_argument("--num-processes", type=number(int), help="how many processes")
    d.add_argument("--process-id", type=number(int), help="this one's rank (0 writes the outputs)")
    return p


# ----------------------------------------------------------------------------- flags → objects


def _flag(field: str | None) -> str:
    return "--" + field.replace("_", "-") if field else ""


def task_from_flags(args: dict):
    """The task the flags describe and its record for run.json (``UsageError`` with a one-line reason)."""
    from mdnjax import userspec

    if "task" in args:
        given = [_flag(k) for k in TASK_FLAGS if k in args]
        if given:
            raise UsageError(f"--task replaces {' '.join(given)}: the task file defines its model")
        try:
            task, record = userspec.load(args["task"])
        except userspec.SpecError as err:
            raise UsageError(str(err)) from None
        return task, record
    task = _builtin_task(args)
    return task, {"builtin": task.name}


LIST_FLAGS = ("trials", "observed")  # one number for a scalar task's parameter, several for a vector's


def _builtin_task(args: dict):
    """The registered task ``--prior`` names, with the task flags given (each task refuses the
    flags that are not its parameters)."""
    from mdnjax import tasks

    name = args.get("prior", DEFAULTS["prior"])
    params = {k: args[k] for k in PARAM_FLAGS if k in args}
    for k in LIST_FLAGS:
        if k in params:
            params[k] = params[k][0] if len(params[k]) == 1 else tuple(params[k])
    if "doses" in params:
        params["doses"] = tuple(params["doses"])
    mix = [args.get(k) for k in ("mix_weights", "mix_alpha", "mix_beta")]
    if any(m is not None for m in mix):
        if any(m is None for m in mix) or len({len(m) for m in mix}) != 1:
            raise UsageError("--mix-weights, --mix-alpha and --mix-beta go together, equally long")
        params["components"] = tuple(zip(*mix))
    try:
        return tasks.from_name(name, **params)
    except ValueError as err:
        message = str(err).replace("unknown task", "unknown --prior")
        message = message.replace("components does not apply", "--mix-weights/--mix-alpha/--mix-beta do not apply")
        for field in PARAM_FLAGS:
            if message.startswith(field + " "):
                message = "--" + message
        raise UsageError(message) from None


def config_from_flags(args: dict, task):
    """The resolved ``Config`` of the flags (``UsageError`` naming the flag)."""
    from mdnjax.config import Config, ConfigError

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k in CONFIG_FLAGS}
    try:
        return Config(**fields).resolve(task)
    except ConfigError as err:
        raise UsageError(_with_flag(err)) from None


def _with_flag(err) -> str:
    field = getattr(err, "field", None)
    message = str(err)
    if field and message.startswith(field):
        return _flag(field) + message[len(field) :]
    if field and message.startswith(f"unknown {field}"):
        return message.replace(f"unknown {field}", f"unknown {_flag(field)}", 1)
    return message


def _check_plot_y(task, plot_y) -> None:
    """Each number of --plot-y inside the task's range; for vector observations, whole rows of M."""
    from mdnjax import simulation

    if not plot_y:
        return
    for y in plot_y:
        try:
            task.check_y(y)
        except ValueError as err:
            raise UsageError(f"--plot-y: {err}") from None
    width = simulation.observation_width(task)
    if width and len(plot_y) % width:
        raise UsageError(f"--plot-y: the {task.name} task observes {width} counts per y; got {len(plot_y)} numbers")


def _default_out(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / f"{name}-{stamp}", 1
    while path.exists():
        path, n = Path("runs") / f"{name}-{stamp}-{n}", n + 1
    return path


# ----------------------------------------------------------------------------- printing


class _Printer:
    """Progress on a terminal (tqdm on stderr) or plain loss lines (stdout), never both."""

    def __init__(self, epochs: int, start: int):
        self.bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=epochs, initial=start, unit="epoch", file=sys.stderr, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.bar = None
        self.last = start

    def __call__(self, p) -> None:
        if self.bar is not None:
            self.bar.update(p.epoch - self.last)
            self.bar.set_postfix_str(f"loss {p.losses[-1]:.4f}, {p.ms_per_epoch:.2f} ms/epoch")
        else:
            print(
                f"[epoch {p.epoch:6d}/{p.epochs}] loss = {p.losses[-1]:.4f}  ({p.ms_per_epoch:.2f} ms/epoch)",
                flush=True,
            )
        self.last = p.epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _warning_printer(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    return show


def _user_error(prog: str, err: BaseException) -> int:
    """Reports an exception from the user's code: their frames, then one line naming the function."""
    print(_user_traceback(err), file=sys.stderr, end="")
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 1


def _user_traceback(err: BaseException) -> str:
    """The frames of a user's function that raised (mdnjax's own frames left out)."""
    package = os.path.dirname(os.path.abspath(__file__))
    cause = err.__cause__ or err
    frames = [
        f for f in traceback.extract_tb(cause.__traceback__) if not os.path.abspath(f.filename).startswith(package)
    ]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(cause), cause)
    return "Traceback (your code, most recent call last):\n" + "".join(lines)


# ----------------------------------------------------------------------------- train


def _resume_setup(args: dict):
    """Reads RUN's task, config and checkpoint for ``--resume``; ``--epochs`` may extend it."""
    import dataclasses

    from mdnjax import checkpoint, train
    from mdnjax.config import Config, ConfigError

    others = sorted(set(args) - {"resume", "epochs", "coordinator", "num_processes", "process_id"})
    if others:
        flags = " ".join(_flag(k) for k in others)
        raise UsageError(f"--resume continues a run with its own settings: {flags} cannot be changed (only --epochs)")
    out = Path(args["resume"])
    try:
        record = checkpoint.read_json(out / checkpoint.RUN)
        task = run_task(out, record)
        config = Config.from_dict(checkpoint.read_json(out / checkpoint.CONFIG)).resolve(task)
        if "epochs" in args:
            config = dataclasses.replace(config, epochs=args["epochs"]).resolve(task)
        from mdnjax import simulation

        template = train.initial_state(config, len(task.support), simulation.observation_width(task) or 1)
        state, extra = checkpoint.load_tree(out / checkpoint.CHECKPOINT, _numpy(template), ("losses",))
    except (ValueError, ConfigError) as err:
        raise UsageError(f"--resume {out}: {_with_flag(err)}") from None
    done = int(state.epoch)
    if done >= config.epochs:
        raise UsageError(
            f"--resume {out}: the run already trained {done} epochs; pass --epochs N > {done} to train it longer"
        )
    return out, record, task, config, state, extra["losses"]


def run_task(out: Path, record: dict):
    """The task of a run folder: a built-in one from task.json, or the user's, re-imported from
    its recorded file (refused when gone or changed)."""
    from mdnjax import checkpoint, tasks, userspec

    spec = record.get("task", {})
    if "spec" in spec:
        return userspec.reload(spec)
    return tasks.from_record(checkpoint.read_json(out / checkpoint.TASK))


def _numpy(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def _new_run(args: dict, lead: bool):
    from mdnjax import checkpoint, parallel

    task, task_record = task_from_flags(args)
    config = config_from_flags(args, task)
    _check_plot_y(task, args.get("plot_y"))
    checkpoint_every = args.get("checkpoint_every", DEFAULTS["checkpoint_every"])
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    try:
        parallel.device_mesh(1 if config.layout == "padded" else config.devices)  # before any output
    except ValueError as err:
        raise UsageError(_with_flag(err)) from None
    out = Path(args["out"]) if "out" in args else _default_out(task.name)
    record = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "task": task_record,
        "options": {k: args.get(k, DEFAULTS.get(k)) for k in RUN_FLAGS},
        "sessions": [],
    }
    created = False
    if lead:
        try:
            created = checkpoint.claim_run_dir(out, record)
            checkpoint.write_json(out / checkpoint.TASK, task.describe())
            checkpoint.atomic_write(out / checkpoint.CONFIG, config.to_json().encode())
        except (ValueError, OSError) as err:
            if created or (out / checkpoint.RUN).exists():
                checkpoint.release_run_dir(out, created)
            raise UsageError(f"--out {err}") from None
    return out, created, record, task, config


def main(argv=None) -> int:
    """``python -m mdnjax.train``; returns the exit code."""
    t_start = time.perf_counter()
    xla.configure_cpu()  # before the first JAX computation
    args = vars(train_parser().parse_args(argv))
    prog = TRAIN
    try:
        lead = _init_distributed(args)
        if "resume" in args:
            out, record, task, config, state, history = _resume_setup(args)
            created = None
        else:
            out, created, record, task, config = _new_run(args, lead)
            state, history = None, None
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return _user_error(prog, err)
    return _train(prog, t_start, lead, out, created, record, task, config, state, history)


def _init_distributed(args: dict) -> bool:
    """Joins a multi-process run when ``--coordinator`` is given; returns whether this process leads."""
    from mdnjax import parallel

    given = [k in args for k in ("coordinator", "num_processes", "process_id")]
    if not any(given):
        return True
    if not all(given):
        raise UsageError("--coordinator, --num-processes and --process-id go together")
    if args["num_processes"] < 1 or not 0 <= args["process_id"] < args["num_processes"]:
        raise UsageError(f"--process-id must be in 0..{args['num_processes'] - 1}, got {args['process_id']}")
    parallel.initialize(args["coordinator"], args["num_processes"], args["process_id"])
    return args["process_id"] == 0


def _train(prog, t_start, lead, out, created, record, task, config, state, history) -> int:
    import jax

    from mdnjax import checkpoint, report, simulation, train
    from mdnjax.config import ConfigError

    resuming = state is not None
    start = int(state.epoch) if resuming else 0
    print(
        f"mdnjax: task={task.name} samples={config.samples:,} K={config.components} recipe={config.recipe} "
        f"(epochs={config.epochs} lr={config.lr:g} {config.weighting} {config.schedule} {config.space}) "
        f"layout={config.layout} device={jax.devices()[0].platform} -> {out}"
        + (f" (resuming at epoch {start})" if resuming else ""),
        flush=True,
    )
    options = record["options"]
    stop: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    save = lambda s, losses: checkpoint.save_tree(out / checkpoint.CHECKPOINT, s, losses=losses)  # noqa: E731
    printer = _Printer(config.epochs, start)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _warning_printer(prog)
            result = train.fit(
                task,
                config,
                init_state=state,
                history=history,
                callback=printer,
                on_checkpoint=save if lead else None,
                checkpoint_every=options["checkpoint_every"],
                should_stop=lambda: bool(stop),
            )
    except (ConfigError, simulation.SimulationError) as err:
        printer.close()
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        print(f"{prog}: error: {_with_flag(err)}", file=sys.stderr)
        return 2
    except simulation.UserCodeError as err:
        printer.close()
        if not resuming and lead:
            checkpoint.release_run_dir(out, created)
        return _user_error(prog, err)
    except OSError as err:  # a checkpoint could not be written: the previous one is intact
        printer.close()
        print(
            f"{prog}: error: cannot write a checkpoint to {out}: {err.strerror or err}; "
            "the last checkpoint written is intact",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    printer.close()
    if not lead:  # other processes of a multi-process run write nothing
        return 0 if result.diverged_at is None and result.stopped_at is None else 1
    session = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "epochs": [start, int(result.state.epoch)],
        "timings": {k: float(v) for k, v in result.timings.items()},
    }
    record["sessions"] = [*record.get("sessions", []), session]
    try:
        checkpoint.write_json(out / checkpoint.RUN, record)
        if result.stopped_at is not None:
            print(
                f"{prog}: interrupted at epoch {result.stopped_at}; state saved. "
                f"Resume with: python -m {TRAIN} --resume {out}",
                file=sys.stderr,
            )
            return 130
        result.posterior.save(out)
        multivariate = report.is_multivariate(task, result)
        if multivariate:
            plot_y = report.plot_y_for_nd(task, result, options["plot_y"])
            payload = report.build_nd(result, task, plot_y, out, plots_on=not options["no_plots"])
        else:
            plot_y = report.plot_y_for(task, result, options["plot_y"])
            payload = report.build(result, task, plot_y, out, plots_on=not options["no_plots"])
        if config.layout == "binned" or config.samples <= simulation.CHUNK:
            payload["per_sample_loss"] = simulation.per_sample_loss(
                task, config, result.posterior, result.buckets.y_values, jax.process_count()
            )
        payload["timings"] = session["timings"] | {"wall_s": time.perf_counter() - t_start}
        payload["sessions"] = record["sessions"]
        checkpoint.write_json(out / checkpoint.METRICS, payload)
    except OSError as err:
        print(f"{prog}: error: cannot write results to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    for line in payload["warnings"]:
        print(f"{prog}: warning: {line}", file=sys.stderr)
    if "per_sample_loss" in payload:
        print(f"per-sample loss on the training draws: {payload['per_sample_loss']:.6f} (comparable across layouts)")
    print(simulation.describe_budget(result.report["buckets"]))
    table = report.format_table_nd(payload) if multivariate else report.format_table(payload)
    if table:
        print(table)
    t = result.timings
    print(
        f"simulate {t.get('simulate_s', 0):.2f} s, bucket {t.get('bucket_s', 0):.2f} s, "
        f"compile {t.get('compile_s', 0):.2f} s, train {t['train_s']:.2f} s "
        f"({t['ms_per_epoch']:.2f} ms/epoch), wall {time.perf_counter() - t_start:.1f} s"
    )
    figures = ", pairs.png, loss.png" if multivariate else ", posterior.png, kl.png, loss.png"
    figures = "" if options["no_plots"] else figures
    print(f"saved to {out}/ (run.json, config.json, task.json, posterior.npz, checkpoint.npz, metrics.json{figures})")
    if result.diverged_at is not None:
        print(
            f"{prog}: error: loss became non-finite at epoch {result.diverged_at}; "
            "the posterior holds the last finite parameters",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------- calibrate


def calibrate_main(argv=None) -> int:
    """``python -m mdnjax.calibrate RUN``; returns the exit code."""
    p = _Parser(prog=f"python -m {CALIBRATE}", description="Calibrate a trained posterior (SBC ranks, coverage).")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--draws", type=number(int), default=4000, help="fresh prior-predictive draws (default 4000)")
    p.add_argument("--samples-per-draw", type=number(int), default=99, help="posterior draws per SBC rank (default 99)")
    p.add_argument(
        "--seed", type=number(int), default=1, help="seed of the fresh draws, not the training seed (default 1)"
    )
    args = p.parse_args(argv)
    prog = CALIBRATE
    xla.configure_cpu()
    from mdnjax import calibration, checkpoint, plots
    from mdnjax.posterior import load
    from mdnjax.simulation import UserCodeError

    out = Path(args.run_dir)
    try:
        if args.draws < 10 or args.samples_per_draw < 1:
            raise UsageError("--draws must be >= 10 and --samples-per-draw >= 1")
        if not 0 <= args.seed <= 2**32 - 1:
            raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
        post = load(out)
        task = run_task(out, checkpoint.read_json(out / checkpoint.RUN))
        multivariate = post.dim > 1 or post.spec.inputs > 1
        calibrate = calibration.run_nd if multivariate else calibration.run
        result = calibrate(post, task, args.draws, args.samples_per_draw, args.seed)
    except (UsageError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except UserCodeError as err:
        return _user_error(prog, err)
    try:
        checkpoint.write_json(out / "calibration.json", result)
        title = f"{task.name}, K={post.spec.components}"
        if multivariate:
            names = list(getattr(task, "parameter_names", None) or [f"theta{d}" for d in range(post.dim)])
            plots.coverage_per_dim(
                result["levels"],
                result["coverage"],
                result["coverage_standard_error"],
                names,
                out / "coverage.png",
                title,
            )
        else:
            plots.sbc_ranks(result, out / "sbc_ranks.png", title)
            plots.coverage(result, out / "coverage.png", title)
        metrics_path = out / checkpoint.METRICS
        if metrics_path.exists():
            metrics = checkpoint.read_json(metrics_path)
            metrics["calibration"] = {k: result[k] for k in ("draws", "max_coverage_error", "rank_chi2_pvalue")}
            checkpoint.write_json(metrics_path, metrics)
    except OSError as err:
        print(f"{prog}: error: cannot write to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    if multivariate:
        print(
            f"{result['draws']} draws: largest coverage error {result['max_coverage_error']:.4f} over "
            f"{post.dim} parameters; SBC rank uniformity p = "
            + ", ".join(f"{p:.3f}" for p in result["rank_chi2_pvalue"])
            + f", of log q p = {result['rank_log_q_chi2_pvalue']:.3f}"
        )
        print(f"wrote {out}/calibration.json, coverage.png")
        return 0
    exact = result.get("max_coverage_error_exact_posterior")
    print(
        f"{result['draws']} draws: largest coverage error {result['max_coverage_error']:.4f}"
        + (f" (exact posterior: {exact:.4f})" if exact is not None else "")
        + f", SBC rank uniformity p = {result['rank_chi2_pvalue']:.3f}"
    )
    print(f"wrote {out}/calibration.json, sbc_ranks.png, coverage.png")
    return 0
