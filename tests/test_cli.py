"""The command line: a run end to end, and one clear line with exit 2 for each bad input."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import mdnjax
from mdnjax import checkpoint, cli

SMALL = ["--samples", "4000", "--epochs", "20", "--log-every", "10"]


def test_the_real_command_writes_every_artifact_and_loads_back(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mdnjax.train", "--prior", "gamma", *SMALL, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ["run.json", "config.json", "task.json", "posterior.npz", "posterior.json", "checkpoint.npz"]:
        assert (out / name).stat().st_size > 0, name
    for name in ["metrics.json", "posterior.png", "kl.png", "loss.png"]:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["loss"]) == 20
    assert {"simulate_s", "bucket_s", "compile_s", "train_s", "epochs_per_s", "wall_s"} <= set(metrics["timings"])
    assert [r["y"] for r in metrics["plotted"]] == [10, 30, 50, 70, 90]
    # not a terminal: plain loss lines, no progress bar
    assert "KL(exact||MDN)" in proc.stdout and "[epoch     10/20]" in proc.stdout and "\r" not in proc.stderr
    # every stage that can take a while says so as it starts
    for stage in ("mdnjax: simulating 4,000 draws", "mdnjax: compiling the training step", "mdnjax: report:"):
        assert stage in proc.stdout, stage
    assert "posterior.png" in proc.stdout.splitlines()[-1]  # the files the run wrote
    post = mdnjax.load(out)
    np.testing.assert_allclose(float(post.mean(30)), metrics["plotted"][1]["mdn_mean"], rtol=1e-5)
    assert json.loads((out / "task.json").read_text())["name"] == "gamma"
    # the files are created with the user's normal permissions, like the figures
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(set(modes.values())) == 1, modes


BAD = [
    (["--prior", "poisson"], "unknown --prior"),
    (["--alpha", "0"], "--alpha"),
    (["--beta", "-2"], "--beta"),
    (["--alpha", "nan"], "--alpha"),
    (["--beta", "inf"], "--beta"),
    (["--alpha", "1e308"], "--alpha must be a finite number in (0, 1e+06]"),
    (["--trials", "0"], "--trials"),
    (["--samples", "1"], "--samples"),
    (["--components", "0"], "--components"),
    (["--components", "1000"], "--components must be in 1..64"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "1e12"], "--epochs must be in 1..1000000"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--seed", "-1"], "--seed must be in 0..4294967295"),
    (["--plot-y", "101"], "outside"),
    (["--prior", "gamma", "--plot-y", "-1"], "outside"),
    (["--epochs", "abc"], "not a number"),
    (["--samples", "2.5"], "not an integer"),
    (["--layout", "dense"], "unknown --layout"),
    (["--ema", "-1"], "--ema must be a finite number of passes"),
    (["--recipe", "magic"], "unknown --recipe"),
    (["--weighting", "per-row"], "unknown --weighting"),
    (["--schedule", "step"], "unknown --schedule"),
    (["--space", "log"], "unknown --space"),
    (["--hidden", "0"], "--hidden"),
    (["--backend", "torch"], "unrecognized arguments"),
    (
        ["--prior", "beta-mixture", "--mix-weights", "0.5", "0.6", "--mix-alpha", "1", "2", "--mix-beta", "1", "2"],
        "sum to 1",
    ),
    (["--prior", "beta-mixture", "--mix-weights", "1", "--mix-alpha", "-1", "--mix-beta", "1"], "mixture alpha"),
    (["--prior", "beta-mixture", "--mix-weights", "1"], "go together"),
    (["--prior", "beta", "--mix-weights", "1", "--mix-alpha", "1", "--mix-beta", "1"], "--mix-weights"),
    (["--prior", "beta-mixture", "--alpha", "2"], "--alpha does not apply to the beta-mixture task"),
    (["--prior", "sir", "--trials", "2"], "--trials does not apply to the sir task"),
    (["--prior", "reed-frost", "--initial", "50"], "initial must be below"),
    (["--task", "nowhere.py:TASK"], "no file"),
    (["--task", "nowhere.py"], "expected path/to/file.py:NAME"),
    (["--task", "json:decoder"], "not a mdnjax.Task"),
    (["--task", "json:TASK", "--alpha", "2"], "--task replaces --alpha"),
    (["--devices", "64"], "device(s)"),
    (["--devices", "0"], "--devices"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--prior", "bioassay", "--observed", "0", "1", "3"], "--observed must be 4 counts"),
    (["--prior", "bioassay", "--observed", "0", "1", "3", "9"], "--observed must be 4 counts in 0..5"),
    (["--prior", "abtest", "--rho", "2"], "--rho must lie in [-0.99, 0.99]"),
    (["--prior", "abtest", "--trials", "10", "20", "30"], "--trials must be (n_A, n_B)"),
    (["--prior", "abtest", "--plot-y", "3", "4", "5"], "observes 2 counts per y"),
    (["--prior", "abtest", "--doses", "1"], "--doses does not apply to the abtest task"),
    (["--prior", "beta", "--trials", "10", "20"], "--trials must be an integer"),
    (["--prior", "abtest", "--trials", "10", "100"], "set observed together with trials"),
    (["--prior", "abtest", "--trials", "10", "100", "--observed", "5", "0", "--plot-y", "50", "0"], "impossible"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        sys.exit(cli.main([*argv, "--out", str(out)]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()  # nothing is created for a rejected command


def test_samples_that_cannot_be_trained_on_leave_no_folder_behind(tmp_path, capsys):
    # the binned layout named: y seen once cannot form buckets (on auto they train per sample)
    code = cli.main(
        ["--trials", "1e9", "--samples", "20000", "--epochs", "1", "--layout", "binned", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "of 20,000 samples" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    (tmp_path / "empty").mkdir()  # a folder the user made stays, empty, ready for a rerun
    assert cli.main(["--samples", "2", "--epochs", "1", "--layout", "binned", "--out", str(tmp_path / "empty")]) == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    assert cli.main(["--prior", "gamma", *SMALL, "--no-plots", "--out", str(tmp_path / "empty")]) == 0


def test_out_that_is_a_file_or_not_writable_or_not_empty(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    for out, needle in [(f, "is a file"), (f / "sub", "cannot create"), (tmp_path, "not empty")]:
        code = cli.main([*SMALL, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_concurrent_runs_into_one_folder_one_wins_the_other_fails_clearly(tmp_path):
    out = tmp_path / "run"
    results = []
    barrier = threading.Barrier(8)

    def claim():
        barrier.wait()
        try:
            checkpoint.claim_run_dir(out, {"who": threading.get_ident()})
            results.append("won")
        except ValueError as err:
            results.append(str(err))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1
    assert all("already used by another run" in r or "not empty" in r for r in results if r != "won")


def test_plot_y_follows_the_task_and_the_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--trials", "50", "--samples", "20000", "--epochs", "10", "--no-plots", "--out", str(out)]) == 0
    ys = json.loads((out / "metrics.json").read_text())["plot_y"]
    assert len(ys) >= 3 and all(0 <= y <= 50 for y in ys)


def test_rare_plotted_y_are_flagged_in_the_table(tmp_path, capsys):
    assert cli.main(["--prior", "gamma", *SMALL, "--no-plots", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "   90*" in out and "fewer than 100 training samples" in out
    assert ".png" not in out.splitlines()[-1]  # --no-plots: the closing line lists no figure


def test_simulator_warnings_become_one_line_each(tmp_path, capsys, monkeypatch):
    import warnings

    from mdnjax import tasks

    real = tasks.GammaPoisson.simulate

    def noisy(self, rng, n):
        for _ in range(23):
            warnings.warn("overflow encountered in something", RuntimeWarning, stacklevel=1)
        for i in range(300):  # one per draw, each with its own numbers: still one line
            warnings.warn(f"draw {i} had a rate of {0.5 + i:.2f}", UserWarning, stacklevel=1)
        return real(self, rng, n)

    monkeypatch.setattr(tasks.GammaPoisson, "simulate", noisy)
    assert cli.main(["--prior", "gamma", *SMALL, "--no-plots", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if "overflow" in line]
    assert len(err) == 1 and "23×" in err[0] and err[0].startswith("mdnjax.train: warning:")
    per_draw = [line for line in lines if "had a rate of" in line]
    assert len(per_draw) == 1 and "300×" in per_draw[0]


def test_bad_input_from_the_real_command_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "mdnjax.train", "--lr", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_a_bad_flag_is_refused_before_jax_is_imported():
    # the refusal costs the flags' checks, not JAX's start-up (run in a process of its own)
    code = (
        "import sys, runpy\n"
        "sys.argv = ['mdnjax.train', '--samples', '-5']\n"
        "try:\n"
        "    runpy.run_module('mdnjax.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--samples" in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stdout.strip() == "exit 2 []"


@pytest.mark.parametrize("package", ["mdnjax", "mdnjax.train"])
def test_every_public_name_resolves_on_first_use(package):
    import importlib

    module = importlib.import_module(package)
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert mdnjax.fit is importlib.import_module("mdnjax.train.run").fit
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_divergence_exits_non_zero_and_keeps_a_finite_posterior(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        ["--prior", "gamma", "--samples", "4000", "--epochs", "60", "--lr", "1e30", "--out", str(out), "--no-plots"]
    )
    assert code == 1
    assert "non-finite at epoch" in capsys.readouterr().err
    post = mdnjax.load(out)
    assert np.isfinite(float(post.mean(30)))
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_calibrate_any_run_and_reject_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--prior", "beta", *SMALL, "--no-plots", "--out", str(out)]) == 0
    assert cli.calibrate_main([str(out), "--draws", "1e3", "--samples-per-draw", "19"]) == 0
    result = json.loads((out / "calibration.json").read_text())
    assert result["draws"] == 1000 and len(result["rank_counts"]) == 20
    assert (out / "sbc_ranks.png").stat().st_size > 0 and "calibration" in json.loads(
        (out / "metrics.json").read_text()
    )
    capsys.readouterr()
    assert cli.calibrate_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run folder" in err
    assert cli.calibrate_main([str(out), "--seed", "-1"]) == 2
    capsys.readouterr()
    assert cli.calibrate_main([str(out), "--draws", "1e12"]) == 2  # checked against memory before any work
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GiB is available: lower --draws" in err


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--prior", "beta", *SMALL, "--no-plots", "--out", str(out)]) == 0
    before = (out / checkpoint.POSTERIOR).read_bytes()
    assert cli.main(["--prior", "beta", *SMALL, "--seed", "3", "--no-plots", "--out", str(out)]) == 2
    assert "already used by another run" in capsys.readouterr().err
    assert (out / checkpoint.POSTERIOR).read_bytes() == before


def test_python_dash_m_mdnjax_dispatches_both_commands(tmp_path, capsys):
    from mdnjax.__main__ import main

    out = tmp_path / "run"
    assert main(["train", "--prior", "gamma", *SMALL, "--no-plots", "--out", str(out)]) == 0
    assert main(["calibrate", str(out), "--draws", "100", "--samples-per-draw", "9"]) == 0


def test_a_two_parameter_run_reports_calibrates_and_resumes_in_d_dimensions(tmp_path, capsys):
    """One D = 2, M = 2 run through the command: the report at two y, calibration, then --resume
    (the checkpoint template from the task's declared D and M) trains on from its last epoch and
    removes the calibration of the earlier posterior."""
    out = tmp_path / "ab"
    argv = ["--prior", "abtest", "--trials", "20", "20", "--samples", "30000"]  # --plot-y below names the y
    assert (
        cli.main([*argv, "--epochs", "200", "--log-every", "100", "--plot-y", "4", "9", "10", "10", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "y = [4, 9]" in printed and "KL(ref||MDN)" in printed and "MMD two-sample p" in printed
    assert "P(pB > pA): ref 0." in printed and "median" not in printed.split("P(pB > pA)")[1].splitlines()[0]
    for name in ["pairs.png", "pairs_1.png", "loss.png", "metrics.json", "posterior.npz"]:
        assert (out / name).stat().st_size > 0, name
    assert "pairs_1.png" in printed.splitlines()[-1] and "posterior.png" not in printed.splitlines()[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dim"] == 2 and metrics["inputs"] == 2 and [r["y"] for r in metrics["at_y"]] == [[4, 9], [10, 10]]
    ref = metrics["at_y"][0]["reference"]
    assert ref["kl"] < 0.1 and set(ref["summaries"]) == {"P(pB > pA)"} and ref["summaries"]["P(pB > pA)"]["probability"]
    assert isinstance(metrics["failed_checks"], list)
    post = mdnjax.load(out)
    assert post.sample(__import__("jax").random.key(0), [4, 9], 3).shape == (3, 2)
    assert cli.calibrate_main([str(out), "--draws", "300", "--samples-per-draw", "19"]) == 0
    assert (out / "coverage.png").stat().st_size > 0
    cal = json.loads((out / "calibration.json").read_text())
    assert len(cal["rank_chi2_pvalue"]) == 2 and "rank_log_q_chi2_pvalue" in cal and cal["epoch"] == 200
    capsys.readouterr()
    assert cli.main(["--resume", str(out), "--epochs", "220"]) == 0
    captured = capsys.readouterr()
    assert "resuming at epoch 200" in captured.out and "removed calibration.json" in captured.err
    assert not (out / "calibration.json").exists() and not (out / "coverage.png").exists()
    losses = json.loads((out / "metrics.json").read_text())["loss"]
    assert len(losses) == 220 and losses[:200] == metrics["loss"]
    assert (mdnjax.load(out).dim, mdnjax.load(out).spec.inputs) == (2, 2)


def test_a_users_scalar_theta_with_vector_y_reports_through_the_command(tmp_path, capsys):
    """One parameter, two counts per observation (the binned two-point layout, keyed by the
    codebook): the D-dimensional report with its exact draws, PIT and pair plot."""
    spec = tmp_path / "vtask.py"
    spec.write_text(
        "import numpy as np\nimport mdnjax\n\n\n"
        "def simulate(rng, n):\n"
        "    t = rng.uniform(0, 1, n)\n"
        "    return t, rng.binomial(5, np.column_stack([t, 1 - t]))\n\n\n"
        "TASK = mdnjax.Task('two-counts', simulate, support=[(0.0, 1.0)], y_range=(0, 5))\n"
    )
    out = tmp_path / "run"
    argv = ["--task", f"{spec}:TASK", "--samples", "20000", "--epochs", "30", "--log-every", "30", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "exact draws" in printed and "MMD two-sample p" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dim"] == 1 and metrics["inputs"] == 2 and metrics["collapsed"] == []
    assert (out / "pairs.png").stat().st_size > 0
    assert mdnjax.load(out).sample(__import__("jax").random.key(0), metrics["plot_y"][0], 4).shape == (4,)


def test_python_m_mdnjax_without_a_command_prints_usage_and_starts_nothing(tmp_path, monkeypatch, capsys):
    from mdnjax import __main__ as entry

    monkeypatch.chdir(tmp_path)
    assert entry.main([]) == 2
    assert "commands:" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert entry.main(["--help"]) == 0 and "calibrate" in capsys.readouterr().out
    assert entry.main(["--prior", "beta"]) == 2 and not (tmp_path / "runs").exists()


def test_a_misspelled_task_name_gets_a_did_you_mean(capsys):
    assert cli.main(["--prior", "gama"]) == 2
    assert "did you mean 'gamma'" in capsys.readouterr().err


def test_every_task_takes_observed_and_reports_q_there(tmp_path, capsys):
    """--observed for a built-in task without an observed y of its own and for a user's task file:
    a summary at y_o (training samples, mean, sd, 90% interval), observed.png, and a warning when
    few training draws landed there."""
    out = tmp_path / "beta"
    assert cli.main(["--prior", "beta", *SMALL, "--observed", "95", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "at the observed y = 95 (" in captured.out and "90% interval" in captured.out
    assert "only " in captured.err and "training samples at the observed y = 95" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    at = metrics["observed"]
    assert at["y"] == [95] and 95 in metrics["plot_y"] and at["training_samples"] < 100
    p = at["parameters"][0]
    assert p["q05"] < p["mean"] < p["q95"] and p["sd"] > 0
    assert (out / "observed.png").stat().st_size > 0
    user = tmp_path / "negbin"
    task_file = str(__import__("pathlib").Path(__file__).parents[1] / "examples" / "negbin.py")
    assert cli.main(["--task", f"{task_file}:TASK", *SMALL, "--observed", "3", "--no-plots", "--out", str(user)]) == 0
    assert json.loads((user / "metrics.json").read_text())["observed"]["y"] == [3]
    assert cli.main(["--prior", "abtest", "--observed", "3", "4", "5", "--out", str(tmp_path / "ab")]) == 2


def test_a_log_file_gets_stage_lines_and_about_twenty_loss_lines(capsys):
    """Not a terminal: every long stage announces itself, and a 4000-epoch run prints about 20
    loss lines (not one per dispatch), the last epoch always."""
    from types import SimpleNamespace

    from mdnjax.cli.console import Printer

    printer = Printer(4000, 0)
    printer.stage("simulating 1,000,000 draws")
    for epoch in range(50, 4001, 50):
        printer(SimpleNamespace(epoch=epoch, epochs=4000, losses=[0.5], ms_per_epoch=1.0))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mdnjax: simulating 1,000,000 draws ..."
    loss_lines = [line for line in lines if line.startswith("[epoch")]
    assert 15 <= len(loss_lines) <= 21 and loss_lines[-1].startswith("[epoch   4000/4000]")


def test_ctrl_c_during_the_report_keeps_the_trained_posterior(tmp_path, capsys, monkeypatch):
    from mdnjax import report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "build", interrupted)
    out = tmp_path / "run"
    assert cli.main(["--prior", "gamma", *SMALL, "--no-plots", "--out", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "Traceback" in line]
    assert len(errors) == 1 and "the report failed after training (interrupted)" in errors[0]
    assert json.loads((out / "metrics.json").read_text())["status"] == "report failed"
    assert np.isfinite(float(mdnjax.load(out).mean(30)))


def test_values_that_start_with_a_minus_are_values_not_unknown_flags(tmp_path, capsys):
    from mdnjax import datasets
    from mdnjax.__main__ import main as mdnjax_main
    from mdnjax.cli import flags

    args = flags.train_parser().parse_args(["--prior", "two_moons", "--observed", "-1e-3", "-.5"])
    assert args.observed == [-0.001, -0.5]  # argparse alone: "expected at least one argument"
    rng = np.random.default_rng(0)
    theta = np.stack([rng.normal(size=50), rng.uniform(0.1, 1.0, size=50)], axis=1)
    np.savez(tmp_path / "s.npz", theta=theta, y=rng.normal(size=50))
    out = tmp_path / "imp"
    assert mdnjax_main(["import", str(tmp_path / "s.npz"), "--out", str(out), "--support", "-inf,inf", "0,inf"]) == 0
    assert [tuple(b) for b in datasets.open_dataset(out).support] == [(-np.inf, np.inf), (0.0, np.inf)]
    capsys.readouterr()
    with pytest.raises(SystemExit, match="2"):  # a flag that is no number is still refused
        cli.main(["--prior", "beta", "-x"])
    assert capsys.readouterr().err == "mdnjax.train: error: unrecognized arguments: -x\n"  # named as every error
