"""The command line: a small end-to-end run, and one clear line with exit 2 for each bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import mdnjax
from mdnjax import train

SMALL = ["--samples", "4000", "--epochs", "20", "--log-every", "10"]


def test_cli_run_writes_every_artifact_and_loads_back(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mdnjax.train", "--prior", "gamma", *SMALL, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ["config.json", "checkpoint.npz", "metrics.json", "posterior.png", "loss.png"]:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["loss"]) == 20
    assert {"simulate_s", "bucket_s", "compile_s", "train_s", "epochs_per_s"} <= set(metrics["timings"])
    assert [r["y"] for r in metrics["plotted"]] == [10, 30, 50, 70, 90]
    assert "KL(exact||MDN)" in proc.stdout and "[epoch     0]" in proc.stdout
    post = mdnjax.load(out)
    # the reported MDN mean is the loaded posterior's mean
    np.testing.assert_allclose(float(post.mean(30)), metrics["plotted"][1]["mdn_mean"], rtol=1e-5)
    assert (out / "config.json").read_text().count('"prior": "gamma"') == 1


BAD = [
    (["--prior", "poisson"], "unknown prior"),
    (["--alpha", "0"], "--alpha"),
    (["--beta", "-2"], "--beta"),
    (["--alpha", "nan"], "--alpha"),
    (["--beta", "inf"], "--beta"),
    (["--trials", "0"], "--trials"),
    (["--samples", "1"], "--samples"),
    (["--components", "0"], "--components"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--plot-y", "101"], "outside"),
    (["--prior", "gamma", "--plot-y", "-1"], "outside"),
    (["--epochs", "abc"], "not a number"),
    (["--layout", "dense"], "unknown layout"),
    (["--backend", "tf"], "unknown backend"),
    (["--recipe", "magic"], "unknown recipe"),
    (["--weighting", "per-row"], "unknown weighting"),
    (["--schedule", "step"], "unknown schedule"),
    (["--space", "log"], "unknown space"),
    (["--hidden", "0"], "--hidden"),
    (
        ["--prior", "beta-mixture", "--mix-weights", "0.5", "0.6", "--mix-alpha", "1", "2", "--mix-beta", "1", "2"],
        "sum to 1",
    ),
    (["--prior", "beta-mixture", "--mix-weights", "1", "--mix-alpha", "-1", "--mix-beta", "1"], "--mix-alpha"),
    (["--prior", "beta-mixture", "--mix-weights", "1"], "given together"),
    (["--prior", "beta", "--mix-weights", "1"], "beta-mixture only"),
    (["--prior", "beta-mixture", "--alpha", "2"], "do not apply"),
    (["--layout", "padded", "--weighting", "per-sample"], "--recipe notebook"),
    (["--backend", "torch", "--space", "unconstrained"], "notebook"),
    (["--devices", "64"], "device(s)"),
    (["--devices", "0"], "--devices"),
]


@pytest.mark.parametrize("argv,needle", BAD)
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        sys.exit(train.main([*argv, "--out", str(out)]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()  # nothing is created for a rejected command


def test_too_few_samples_to_form_a_bucket(tmp_path, capsys):
    # two samples with (almost surely) different y
    code = train.main(["--samples", "2", "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "increase --samples" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # no half-made run folder is left behind
    (tmp_path / "empty").mkdir()  # a folder the user made stays, empty, ready for a rerun
    assert train.main(["--samples", "2", "--epochs", "1", "--out", str(tmp_path / "empty")]) == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_out_that_is_a_file_or_not_writable_or_not_empty(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    for out, needle in [(f, "is a file"), (f / "sub", "cannot write"), (tmp_path, "not empty")]:
        code = train.main([*SMALL, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert f.read_text() == "keep me"


def test_bad_input_from_the_real_command_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "mdnjax.train", "--lr", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_divergence_exits_non_zero_and_keeps_a_finite_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(
        ["--prior", "gamma", "--samples", "4000", "--epochs", "60", "--lr", "1e30", "--out", str(out), "--no-plots"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite at epoch" in err
    post = mdnjax.load(out)
    assert np.isfinite(float(post.mean(30)))
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("backend", ["torch", "torch-loop"])
def test_torch_backends_write_the_same_outputs(backend, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / backend
    code = train.main(["--prior", "beta", *SMALL, "--recipe", "notebook", "--backend", backend, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ["config.json", "checkpoint.npz", "metrics.json", "posterior.png", "loss.png"]:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["loss"]) == 20 and metrics["loss"][-1] < metrics["loss"][0]
    assert mdnjax.load(out).config.backend == backend


def test_calibrate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    from mdnjax import calibrate

    assert calibrate.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--prior", "beta", *SMALL, "--no-plots", "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    assert train.main(["--prior", "beta", *SMALL, "--seed", "3", "--no-plots", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == before
