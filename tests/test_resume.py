"""Checkpoints and resume: an interrupted run continues to exactly the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

import mdnjax
from mdnjax import Config, train
from mdnjax.posterior import load_state, save_state

SMALL = Config(prior="gamma", samples=5000, epochs=120, log_every=20)  # fast recipe: cosine schedule


def test_stop_and_resume_is_bitwise_identical():
    full = train.fit(SMALL, verbose=False)
    saved = []
    calls = iter(range(100))
    stopped = train.fit(SMALL, verbose=False, on_checkpoint=saved.append, should_stop=lambda: next(calls) >= 2)
    assert stopped.stopped_at == 60 and saved[-1].epoch == 60 and saved[-1].losses.shape == (60,)
    resumed = train.fit(SMALL, verbose=False, resume=saved[-1])
    assert resumed.stopped_at is None
    chex.assert_trees_all_equal(resumed.posterior.params, full.posterior.params)
    np.testing.assert_array_equal(resumed.losses, full.losses)


def test_periodic_checkpoints_and_state_file_round_trip(tmp_path):
    saved = []
    train.fit(SMALL, verbose=False, on_checkpoint=saved.append, checkpoint_every=40)
    assert [c.epoch for c in saved] == [40, 80, 120]
    c = saved[1]
    save_state(tmp_path / "state.npz", c.epoch, c.params, c.opt_state, c.losses)
    epoch, params, opt_state, losses = load_state(tmp_path / "state.npz", c.params, c.opt_state)
    assert epoch == 80
    chex.assert_trees_all_equal(params, c.params)
    chex.assert_trees_all_equal(opt_state, c.opt_state)
    np.testing.assert_array_equal(losses, c.losses)
    data = (tmp_path / "state.npz").read_bytes()
    (tmp_path / "state.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt"):
        load_state(tmp_path / "state.npz", c.params, c.opt_state)


ARGS = ["--prior", "gamma", "--samples", "200000", "--epochs", "1500", "--log-every", "20", "--no-plots"]


def _cli(*extra, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "mdnjax.train", *ARGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _cli("--out", str(out))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return mdnjax.load(out)


def _wait_for(path, proc, timeout=300):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_completes_identically(sig, reference, tmp_path):
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--checkpoint-every", "0")
    first = proc.stdout.readline()  # the header; training starts right after
    assert "mdnjax:" in first
    proc.stdout.readline()  # first loss line: compiled and training
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=300) == 130
    err = proc.stderr.read()
    assert "interrupted at epoch" in err and f"--resume {out}" in err and "Traceback" not in err
    assert (out / "state.npz").exists() and not (out / "checkpoint.npz").exists()
    res = subprocess.run([sys.executable, "-m", "mdnjax.train", "--resume", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming at epoch" in res.stdout
    chex.assert_trees_all_equal(mdnjax.load(out).params, reference.params)


@pytest.mark.parametrize("delay", np.random.default_rng(0).uniform(0.0, 1.0, size=2).round(2).tolist())
def test_sigkill_then_resume_matches(delay, reference, tmp_path):
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--checkpoint-every", "100")
    _wait_for(out / "state.npz", proc)
    time.sleep(delay)  # a random point after the first checkpoint (possibly mid-write of the next)
    proc.kill()
    proc.wait()
    res = subprocess.run([sys.executable, "-m", "mdnjax.train", "--resume", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    chex.assert_trees_all_equal(mdnjax.load(out).params, reference.params)


def test_resume_errors_are_one_line(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(SMALL.validate().to_json())
    assert train.main(["--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no training state" in err and len(err.splitlines()) == 1
    (tmp_path / "state.npz").write_bytes(b"garbage")
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert train.main(["--checkpoint-every", "-1"]) == 2


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    from mdnjax import posterior

    out = tmp_path / "run"
    argv = [
        "--prior",
        "gamma",
        "--samples",
        "5000",
        "--epochs",
        "120",
        "--log-every",
        "20",
        "--no-plots",
        "--checkpoint-every",
        "40",
        "--out",
        str(out),
    ]
    real_write = posterior.atomic_write
    writes = []

    def flaky(path, data):  # the disk fills up after the first checkpoint
        writes.append(path.name)
        if path.name == "state.npz" and writes.count("state.npz") >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(posterior, "atomic_write", flaky)
    assert train.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "intact" in err
    epoch, *_ = load_state(out / "state.npz", *_templates())
    assert epoch == 40  # the first checkpoint survived
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def _templates():
    import jax
    import optax

    from mdnjax import model

    cfg = SMALL.validate()
    _, params = model.init(jax.random.key(0), cfg.components, cfg.hidden)
    return params, optax.adam(train.learning_rate(cfg)).init(params)


def test_atomic_write_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    from mdnjax import posterior

    target = tmp_path / "state.npz"
    posterior.atomic_write(target, b"previous")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(posterior.os, "fsync", no_space)
    with pytest.raises(OSError):
        posterior.atomic_write(target, b"new contents")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]
