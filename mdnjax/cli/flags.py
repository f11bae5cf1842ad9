"""The command line's flags: the parser with every task's flags, and flags → task and ``Config``
(each error one line naming the flag)."""

from __future__ import annotations

import argparse
import math
import re

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
    "batch_size",
    "patience",
    "validation",
    "embedding",
    "memory_budget",
    "ema",
    "linear_skip",
)


RUN_FLAGS = ("plot_y", "observed", "no_plots", "checkpoint_every")


ROUND_FLAGS = ("rounds", "round_samples", "epsilon", "floor")


DEFAULTS = {"prior": "beta", "checkpoint_every": 500, "no_plots": False}


class UsageError(Exception):
    """Bad input: one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with every error one line, and a value that starts with a minus and a number or
    ``inf`` (``-1e-3``, ``-inf,inf``) read as a value, not as an unknown flag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\.?\d|inf)", re.IGNORECASE)  # argparse's: -1, -.5 only

    def error(self, message):  # one line, exit 2, no usage dump, named as every other error of the command
        self.exit(2, f"{self.prog.removeprefix('python -m ')}: error: {message}\n")


def number(kind):
    """An argparse type accepting ``1e6`` for integers when the value is integral."""

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if kind == "auto":  # an observation: an integer when integral (counts), else a float
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
            return int(value) if value == int(value) and "." not in text and "e" not in text.lower() else value
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
    p = Parser(
        prog=f"python -m {TRAIN}",
        description="Train an MDN posterior q(θ | y) for a task and write a run folder.",
        argument_default=argparse.SUPPRESS,
    )
    t = p.add_argument_group("task")
    t.add_argument("--task", metavar="FILE.py:NAME", help="your own task: path/to/file.py:NAME or package.module:NAME")
    t.add_argument(
        "--data",
        metavar="DATA",
        help="train on stored simulations (a folder from python -m mdnjax simulate or import) instead of "
        "simulating; the task is the data's unless --task/--prior names it; --holdout's share of the rows is held out",
    )
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
        type=number("auto"),
        nargs="+",
        help="your observed y (any task; M numbers for a vector y): its summary, training samples and "
        "observed.png; sir, bioassay and abtest also take it as their reported y",
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
    c.add_argument(
        "--layout",
        help=f"layout of the draws: auto, {', '.join(config_lib.LAYOUTS)} (default auto: binned when the "
        "observations repeat, per-sample otherwise)",
    )
    c.add_argument("--batch-size", type=number(int), help="per-sample layout: pairs per minibatch (default 128)")
    c.add_argument(
        "--memory-budget",
        type=number(float),
        metavar="GIB",
        help="per-sample layout with --data: GiB of stored pairs held in memory; above it each pass streams them "
        "from disk (default: half the memory available)",
    )
    c.add_argument(
        "--patience",
        type=number(int),
        help="per-sample layout: passes without a better validation loss before stopping (default 20)",
    )
    c.add_argument(
        "--ema",
        type=number(float),
        metavar="PASSES",
        help="per-sample layout: time constant, in passes, of the parameters' moving average that is "
        "validated and kept (default 1; 0: off)",
    )
    c.add_argument(
        "--linear-skip",
        action=argparse.BooleanOptionalAction,
        help="a linear map from y straight to the mixture's means, beside the network; per-sample: the "
        "least-squares map over the inputs that matter, fixed (default: on for the per-sample layout from "
        "100,000 simulations, off otherwise)",
    )
    c.add_argument(
        "--validation",
        type=number(float),
        help="per-sample layout: share of the simulations kept for validation (default 0.1)",
    )
    c.add_argument(
        "--embedding",
        help="per-sample layout: embedding network for y: none, mlp, set, conv (default: mlp for a vector y)",
    )
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
        type=number("auto"),
        nargs="+",
        help="observations to report and plot (default: the task's); vector y: M numbers each",
    )
    r.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    r.add_argument("--checkpoint-every", type=number(int), help="epochs between checkpoints (default 500; 0: end only)")
    r.add_argument("--resume", metavar="RUN", help="continue RUN (with --epochs N: train it to N epochs)")
    q = p.add_argument_group("sequential rounds for one observation (with --observed)")
    q.add_argument(
        "--rounds",
        type=number(int),
        help="R rounds: the first from the prior, each later one from the prior truncated to where q(θ | y_o) "
        "holds all but ε of its mass; every round trains on all simulations so far (default 1: amortized)",
    )
    q.add_argument(
        "--round-samples",
        type=number(int),
        help="simulations per round (default --samples / R; with --data round 1 is the data)",
    )
    q.add_argument("--epsilon", type=number(float), help="ε, q's mass left outside the truncation (default 1e-4)")
    q.add_argument(
        "--floor",
        type=number(float),
        help="prior acceptance below which a round proposes from a widened q instead (default 1e-3)",
    )
    d = p.add_argument_group("several processes")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="the coordinator's address")
    d.add_argument("--num-processes", type=number(int), help="how many processes")
    d.add_argument("--process-id", type=number(int), help="this one's rank (0 writes the outputs)")
    return p


def flag_name(field: str | None) -> str:
    return "--" + field.replace("_", "-") if field else ""


def task_from_flags(args: dict):
    """The task the flags describe and its record for run.json (``UsageError`` with a one-line reason)."""
    from mdnjax import userspec

    if "task" in args:
        given = [flag_name(k) for k in TASK_FLAGS if k in args and k != "observed"]
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
    if "observed" in params and "observed" not in tasks.parameters(name):
        params.pop("observed")  # a task without an observed y of its own: --observed is for the report
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
    """The ``Config`` of the flags, checked (``UsageError`` naming the flag) but not resolved:
    settings left unset come from the recipe of the layout the run trains on."""
    from mdnjax.config import Config, ConfigError

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k in CONFIG_FLAGS}
    try:
        Config(**fields).resolve(task)
        return Config(**fields)
    except ConfigError as err:
        raise UsageError(with_flag(err)) from None


def with_flag(err) -> str:
    field = getattr(err, "field", None)
    message = str(err)
    if field and message.startswith(field):
        return flag_name(field) + message[len(field) :]
    if field and message.startswith(f"unknown {field}"):
        return message.replace(f"unknown {field}", f"unknown {flag_name(field)}", 1)
    return message


def check_plot_y(task, plot_y, flag: str = "--plot-y") -> None:
    """Each number of --plot-y (or --observed) inside the task's range; for vector observations,
    whole rows of M."""
    from mdnjax import simulation

    if not plot_y:
        return
    if simulation.observation_kind(task) == "counts":
        odd = [v for v in plot_y if not float(v).is_integer()]
        if odd:
            raise UsageError(f"{flag}: the {task.name} task observes counts: {odd[0]!r} is not an integer")
        plot_y = [int(v) for v in plot_y]
    for y in plot_y:
        try:
            task.check_y(y)
        except ValueError as err:
            raise UsageError(f"{flag}: {err}") from None
    shape = simulation.observation_shape(task)
    width = shape[0] if shape else 1
    if shape is not None and len(plot_y) % width:
        unit = "counts" if simulation.observation_kind(task) == "counts" else "numbers"
        raise UsageError(f"{flag}: the {task.name} task observes {width} {unit} per y; got {len(plot_y)} numbers")
    if width > 1:  # whole observations: the task may check its counts together
        for i in range(0, len(plot_y), width):
            try:
                task.check_y(plot_y[i : i + width])
            except ValueError as err:
                raise UsageError(f"{flag}: {err}") from None
    if flag == "--observed" and shape is not None and len(plot_y) != width:
        raise UsageError(
            f"--observed is one observation: {width} number(s) for the {task.name} task, got {len(plot_y)}"
        )


def round_settings(args: dict, record: dict | None = None) -> dict:
    """The rounds' settings from the flags (a new run) or the run record, ``--rounds`` updated."""
    from mdnjax.train import rounds as rounds_lib

    if record is not None and "rounds" in record:
        s = dict(record["rounds"])
        if "rounds" in args:
            if args["rounds"] <= len(done_records(record)):
                raise UsageError(f"--rounds {args['rounds']}: the run has done {len(done_records(record))} rounds")
            s["rounds"] = args["rounds"]
        return s
    if not args.get("observed"):
        raise UsageError("--rounds needs --observed Y: the observation the rounds spend their simulations on")
    rounds = args["rounds"]
    if rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {rounds}")
    for flag in ("coordinator", "num_processes", "process_id"):
        if flag in args:
            raise UsageError(f"--rounds runs in one process: {flag_name(flag)} does not apply")
    epsilon = args.get("epsilon", rounds_lib.EPSILON)
    if not 0 < epsilon < 1:
        raise UsageError(f"--epsilon must lie strictly between 0 and 1, got {epsilon}")
    floor = args.get("floor", rounds_lib.FLOOR)
    if not 0 < floor < 1:
        raise UsageError(f"--floor must lie strictly between 0 and 1, got {floor}")
    per_round = args.get("round_samples")
    if per_round is not None and per_round < 2:
        raise UsageError(f"--round-samples must be >= 2, got {per_round}")
    return {"rounds": rounds, "per_round": per_round, "epsilon": epsilon, "floor": floor}


def done_records(record: dict) -> list:
    return record.get("rounds_done", [])
