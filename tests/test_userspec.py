"""Your own model: a task file on disk end to end, and one clear line for each broken simulator."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mdnjax
from mdnjax import checkpoint, cli

MODEL = textwrap.dedent(
    """
    import numpy as np
    from scipy import stats
    import mdnjax

    def simulate(rng, n):
        theta = rng.gamma(2.0, 1 / 3.0, size=n)
        return theta, rng.negative_binomial(5, 5 / (5 + 20 * theta))

    def make_task():
        return mdnjax.Task(
            "negbin",
            simulate,
            support=[(0.0, np.inf)],
            log_prior=lambda t: stats.gamma.logpdf(t, 2.0, scale=1 / 3.0),
            log_likelihood=lambda t, y: stats.nbinom.logpmf(y, 5, 5 / (5 + 20 * np.asarray(t))),
        )
    """
)
SMALL = ["--samples", "20000", "--epochs", "60", "--log-every", "20", "--no-plots"]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return path


def test_a_task_file_trains_resumes_calibrates_and_loads_without_its_code(model_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--task", f"{model_file}:make_task", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "buckets:" in printed and "held-out checks over" in printed and "KL(ref||MDN)" in printed
    record = json.loads((out / checkpoint.RUN).read_text())["task"]
    assert record["file"] == str(model_file) and len(record["sha256"]) == 64
    metrics = json.loads((out / checkpoint.METRICS).read_text())
    assert metrics["reference"] == "quadrature" and metrics["per_y_summary"]["count"] > 10
    assert metrics["simulations"]["buckets"]["distinct_y"] > 10 and metrics["heldout_summary"]["count"] > 5
    assert cli.main(["--resume", str(out), "--epochs", "80"]) == 0
    assert cli.calibrate_main([str(out), "--draws", "500", "--samples-per-draw", "19"]) == 0
    # a fresh process loads the posterior from data alone: the model file is never imported
    probe = (
        "import sys, mdnjax; p = mdnjax.load(sys.argv[1]); m = float(p.mean(5)); "
        "assert not [k for k in sys.modules if k.startswith('mdnjax_user')]; print(m)"
    )
    model_file.unlink()
    proc = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == pytest.approx(float(mdnjax.load(out).mean(5)))


def test_resume_and_calibrate_refuse_a_changed_or_missing_task_file(model_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--task", f"{model_file}:make_task", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    model_file.write_text(MODEL + "\n# edited\n")
    assert cli.main(["--resume", str(out), "--epochs", "80"]) == 2
    assert "has changed since the run" in capsys.readouterr().err
    model_file.unlink()
    assert cli.calibrate_main([str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is gone" in err and len(err.splitlines()) == 1


BROKEN = {
    "shape": ("theta = rng.uniform(size=(n, 2))\n    return theta, rng.binomial(5, theta[:, 0])", "of shape"),
    "nan_y": (
        "theta = rng.uniform(size=n)\n    y = theta * 2.0\n    y[2] = np.nan\n    return theta, y",
        "NaN or infinite",
    ),
    "int_theta": ("theta = rng.integers(0, 2, size=n)\n    return theta, theta", "float array"),
    "nan": (
        "theta = rng.uniform(size=n)\n    theta[3] = np.nan\n    return theta, rng.binomial(5, 0.5, n)",
        "non-finite",
    ),
    "outside": ("theta = rng.uniform(size=n) * 2\n    return theta, rng.binomial(5, 0.5, n)", "outside the declared"),
    "not_a_pair": ("return rng.uniform(size=n)", "pair (theta, y)"),
    "huge_y": ("theta = rng.uniform(size=n)\n    return theta, rng.binomial(5, theta) + 2**31", "32-bit integers"),
    "y_range": ("theta = rng.uniform(size=n)\n    return theta, rng.binomial(5, theta) - 1", "declared y_range"),
    "empty_y": ("theta = rng.uniform(size=n)\n    return theta, np.zeros((n, 0), int)", "at least one count"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_each_broken_simulator_is_one_clear_line(kind, tmp_path, capsys):
    body, needle = BROKEN[kind]
    path = tmp_path / "broken.py"
    path.write_text(
        "import numpy as np, mdnjax\n"
        f"def simulate(rng, n):\n    {body}\n"
        "TASK = mdnjax.Task('broken', simulate, support=[(0.0, 1.0)], y_range=(0, 5))\n"
    )
    out = tmp_path / "run"
    assert cli.main(["--task", f"{path}:TASK", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_an_error_inside_the_users_function_shows_their_frames_and_names_it(tmp_path, capsys):
    path = tmp_path / "raises.py"
    path.write_text(
        "import mdnjax\n"
        "def helper(n):\n    return 1 / (n - n)\n"
        "def my_simulator(rng, n):\n    return helper(n)\n"
        "TASK = mdnjax.Task('raises', my_simulator, support=[(0.0, 1.0)])\n"
    )
    assert cli.main(["--task", f"{path}:TASK", *SMALL, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "my_simulator" in err and "helper" in err and "ZeroDivisionError" in err
    assert str(path) in err and "mdnjax/simulation.py" not in err and "mdnjax/train.py" not in err
    assert not (tmp_path / "run").exists()


def test_a_numpy_task_and_the_python_api(tmp_path):
    def simulate(rng, n):
        theta = rng.uniform(-2.0, 2.0, size=(n, 1))  # (n, 1) is accepted as (n,)
        return theta, rng.poisson(np.exp(theta[:, 0]) * 5)

    task = mdnjax.Task("loglinear", simulate, support=[(-2.0, 2.0)])
    res = mdnjax.fit(task, mdnjax.Config(samples=20_000, epochs=50, log_every=50))
    assert res.report["buckets"]["distinct_y"] > 10
    shift, scale = res.posterior.spec.embedding  # the input is standardised from the simulations
    assert 0 < shift < 40 and scale > 1
    draws = np.asarray(res.posterior.sample(jax.random.key(0), 5, 1000))
    assert np.all((draws > -2.0) & (draws < 2.0))


def test_many_distinct_y_warn_that_the_design_does_not_pay_off():
    def simulate(rng, n):
        theta = rng.uniform(size=n)
        return theta, rng.binomial(10_000, theta)

    task = mdnjax.Task("wide", simulate, support=[(0.0, 1.0)])
    with pytest.warns(RuntimeWarning, match="distinct y"):
        mdnjax.fit(task, mdnjax.Config(samples=50_000, epochs=2, log_every=2, layout="binned"))
    assert mdnjax.train.chosen(task, mdnjax.Config(samples=50_000))[0].layout == "per-sample"  # auto: no buckets


def test_a_jax_key_simulator_is_jitted_and_seeded():
    import jax.numpy as jnp

    def simulate(key, n):
        k1, k2 = jax.random.split(key)
        theta = jax.random.beta(k1, 2.0, 5.0, (n,))
        return theta, jax.random.binomial(k2, 30, theta).astype(jnp.int32)

    task = mdnjax.Task("jax-beta", simulate, support=[(0.0, 1.0)], simulator="jax")
    theta, y = task.simulate(np.random.default_rng(0), 5000)
    t2, y2 = task.simulate(np.random.default_rng(0), 5000)
    assert isinstance(theta, np.ndarray) and np.array_equal(theta, t2) and np.array_equal(y, y2)
    from mdnjax.testing.compiles import compilations

    with compilations() as names:  # blocks of one shape: no n compiles the simulator again
        shapes = [a.shape for n in (1, 9_000, 20_000) for a in task.simulate(np.random.default_rng(n), n)]
    assert "jit(simulate)" not in names and shapes == [(1,), (1,), (9_000,), (9_000,), (20_000,), (20_000,)]
    res = mdnjax.fit(task, mdnjax.Config(samples=5000, epochs=20, log_every=20, holdout=0.0))
    assert np.all(np.isfinite(res.losses)) and res.report["buckets"]["distinct_y"] > 10
    with pytest.raises(ValueError, match="simulator"):
        mdnjax.Task("x", simulate, support=[(0, 1)], simulator="torch")


FLAKY_PRIOR = """
import os

import numpy as np
from scipy import stats

import mdnjax


def simulate(rng, n):
    theta = rng.beta(2.0, 5.0, n)
    return theta, rng.binomial(20, theta)


def my_log_prior(theta):
    if os.environ.get("MDNJAX_TEST_BREAK") == "raise":
        raise RuntimeError("the prior broke")
    if os.environ.get("MDNJAX_TEST_BREAK") == "nan":
        return np.full(np.shape(theta), np.nan)
    return stats.beta(2.0, 5.0).logpdf(theta)


def log_likelihood(theta, y):
    return stats.binom(20, theta).logpmf(y)


TASK = mdnjax.Task("flaky", simulate, support=[(0.0, 1.0)], log_prior=my_log_prior, log_likelihood=log_likelihood)
"""


def test_a_report_that_fails_after_training_keeps_the_posterior_and_can_be_written_again(tmp_path, capsys, monkeypatch):
    """The user's log_prior raises (or returns NaN) only in the report: the run ends with their
    frames and one line (exit 1), the posterior and checkpoint stay, metrics.json says what failed,
    and `report RUN` writes the report again without training."""
    from mdnjax.__main__ import main as entry

    path = tmp_path / "flaky.py"
    path.write_text(FLAKY_PRIOR)
    out = tmp_path / "run"
    monkeypatch.setenv("MDNJAX_TEST_BREAK", "raise")
    assert cli.main(["--task", f"{path}:TASK", *SMALL, "--no-plots", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "my_log_prior" in err and "RuntimeError: the prior broke" in err and "Traceback (your code" in err
    assert err.strip().splitlines()[-1].startswith("mdnjax.train: error: the report failed after training")
    assert "python -m mdnjax report" in err
    assert (out / checkpoint.POSTERIOR).stat().st_size > 0 and (out / checkpoint.CHECKPOINT).stat().st_size > 0
    failed = json.loads((out / checkpoint.METRICS).read_text())
    assert failed["status"] == "report failed" and "the prior broke" in failed["report_error"]
    monkeypatch.setenv("MDNJAX_TEST_BREAK", "nan")
    assert entry(["report", str(out)]) == 1
    assert "returned NaN" in capsys.readouterr().err
    posterior_before = (out / checkpoint.POSTERIOR).read_bytes()
    monkeypatch.delenv("MDNJAX_TEST_BREAK")
    assert entry(["report", str(out)]) == 0
    metrics = json.loads((out / checkpoint.METRICS).read_text())
    assert metrics["status"] == "ok" and metrics["loss"] == failed["loss"] and "plotted" in metrics
    assert (out / checkpoint.POSTERIOR).read_bytes() == posterior_before  # no training


DRIFTING = """
import numpy as np

import mdnjax

CALLS = [0]


def simulate(rng, n):  # keeps state: the second call for all 20,000 draws gives other θ than the first
    CALLS[0] += n == 20_000
    theta = rng.beta(2.0, 5.0, n) if CALLS[0] <= 1 else rng.beta(5.0, 2.0, n)
    return theta, rng.binomial(20, theta)


TASK = mdnjax.Task("drifting", simulate, support=[(0.0, 1.0)])
"""


def test_a_simulator_that_drifts_when_simulated_again_gets_no_silent_per_sample_loss(tmp_path, capsys):
    path = tmp_path / "drifting.py"
    path.write_text(DRIFTING)
    out = tmp_path / "run"
    assert cli.main(["--task", f"{path}:TASK", *SMALL, "--holdout", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "gave other draws than training's" in err
    metrics = json.loads((out / checkpoint.METRICS).read_text())
    assert "per_sample_loss" not in metrics and any("other draws" in w for w in metrics["warnings"])
