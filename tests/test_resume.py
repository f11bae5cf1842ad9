"""Checkpoints and resume: an interrupted run continues to exactly the uninterrupted result."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

import mdnjax
from mdnjax import Config, checkpoint, cli, tasks, train

SMALL = Config(samples=5000, epochs=120, log_every=20)  # fast recipe: cosine schedule
TASK = tasks.GammaPoisson()


def test_stop_and_resume_is_bitwise_identical():
    full = mdnjax.fit(TASK, SMALL)
    saved = []
    calls = iter(range(100))
    stopped = mdnjax.fit(
        TASK, SMALL, on_checkpoint=lambda s, losses: saved.append((s, losses)), should_stop=lambda: next(calls) >= 2
    )
    state, losses = saved[-1]
    assert stopped.stopped_at == 60 and int(state.epoch) == 60 and losses.shape == (60,)
    resumed = mdnjax.fit(TASK, SMALL, init_state=state, history=losses)
    assert resumed.stopped_at is None
    chex.assert_trees_all_equal(resumed.posterior.params, full.posterior.params)
    np.testing.assert_array_equal(resumed.losses, full.losses)


def test_periodic_checkpoints_and_checkpoint_file_round_trip(tmp_path):
    saved = []
    mdnjax.fit(TASK, SMALL, on_checkpoint=lambda s, losses: saved.append((s, losses)), checkpoint_every=40)
    assert [int(s.epoch) for s, _ in saved] == [40, 80, 120]
    state, losses = saved[1]
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save_tree(path, state, losses=losses)
    template = jax.tree_util.tree_map(np.asarray, train.initial_state(SMALL.resolve(TASK)))
    back, extra = checkpoint.load_tree(path, template, ("losses",))
    assert isinstance(back, train.TrainState) and int(back.epoch) == 80
    chex.assert_trees_all_equal(back, state)
    np.testing.assert_array_equal(extra["losses"], losses)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load_tree(path, template, ("losses",))


ARGS = ["--prior", "gamma", "--samples", "20000", "--epochs", "1500", "--log-every", "20", "--no-plots"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    return mdnjax.load(out)


def _cli(*extra):
    return subprocess.Popen(
        [sys.executable, "-m", "mdnjax.train", *ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigint_saves_and_resume_completes_identically(reference, tmp_path, capsys):
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--checkpoint-every", "0")
    assert "mdnjax:" in proc.stdout.readline()  # the header; training starts right after
    proc.stdout.readline()  # first loss line: compiled and training
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    err = proc.stderr.read()
    assert "interrupted at epoch" in err and f"--resume {out}" in err and "Traceback" not in err
    assert (out / checkpoint.CHECKPOINT).exists() and not (out / checkpoint.POSTERIOR).exists()
    assert cli.main(["--resume", str(out)]) == 0
    assert "resuming at epoch" in capsys.readouterr().out
    chex.assert_trees_all_equal(mdnjax.load(out).params, reference.params)
    sessions = json.loads((out / checkpoint.METRICS).read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["epochs"][1] == sessions[1]["epochs"][0]
    assert all(s["timings"]["train_s"] > 0 for s in sessions)  # the first session's timings are kept


def test_sigkill_at_a_random_point_then_resume_matches(reference, tmp_path):
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--checkpoint-every", "100")
    t0 = time.time()
    while not (out / checkpoint.CHECKPOINT).exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < 300
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.5)))  # possibly mid-write of the next checkpoint
    proc.kill()
    proc.wait()
    assert cli.main(["--resume", str(out)]) == 0
    chex.assert_trees_all_equal(mdnjax.load(out).params, reference.params)


def test_a_finished_run_trains_longer_and_other_flags_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--prior", "gamma", "--samples", "5000", "--epochs", "40", "--log-every", "20", "--out", str(out)]
    assert cli.main(base) == 0
    first = json.loads((out / checkpoint.METRICS).read_text())
    capsys.readouterr()
    assert cli.main(["--resume", str(out)]) == 2
    assert "already trained 40 epochs" in capsys.readouterr().err
    assert cli.main(["--resume", str(out), "--lr", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr cannot be changed" in err and len(err.splitlines()) == 1
    assert cli.main(["--resume", str(out), "--epochs", "60"]) == 0
    after = json.loads((out / checkpoint.METRICS).read_text())
    assert len(after["loss"]) == 60 and after["loss"][:40] == first["loss"]
    assert [s["epochs"] for s in after["sessions"]] == [[0, 40], [40, 60]]
    assert all(np.isfinite(s["timings"]["epochs_per_s"]) for s in after["sessions"])


def test_a_per_sample_run_from_before_the_moving_average_resumes_without_one(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--prior", "two_moons", "--samples", "3000", "--layout", "per-sample", "--no-plots"]
    assert cli.main([*flags, "--epochs", "2", "--ema", "0", "--out", str(out)]) == 0
    config = json.loads((out / checkpoint.CONFIG).read_text())
    assert config.pop("ema") == 0.0  # the config.json such a run wrote had no such field
    (out / checkpoint.CONFIG).write_text(json.dumps(config))
    assert cli.main(["--resume", str(out), "--epochs", "4"]) == 0, capsys.readouterr().err
    straight = mdnjax.fit("two_moons", Config(samples=3000, layout="per-sample", epochs=4, ema=0))
    assert straight.state.avg_params is None
    np.testing.assert_array_equal(json.loads((out / checkpoint.METRICS).read_text())["loss"], straight.losses)


def test_a_resume_trains_with_the_defaults_the_run_started_with(tmp_path, capsys, monkeypatch):
    from mdnjax import config as settings

    out = tmp_path / "run"
    flags = ["--prior", "two_moons", "--samples", "3000", "--no-plots"]
    assert cli.main([*flags, "--epochs", "2", "--out", str(out)]) == 0
    kept = json.loads((out / checkpoint.CONFIG).read_text())
    assert kept["layout"] == "auto" and kept["linear_skip"] is False and kept["hidden"] == [64, 64]
    monkeypatch.setattr(settings, "SKIP_FROM", 1000)  # a later version's default: the skip from 10^3
    assert mdnjax.Config(samples=3000, layout="per-sample").resolve().linear_skip
    assert cli.main(["--resume", str(out), "--epochs", "4"]) == 0, capsys.readouterr().err
    straight = mdnjax.fit("two_moons", Config(samples=3000, layout="per-sample", epochs=4, linear_skip=False))
    np.testing.assert_array_equal(json.loads((out / checkpoint.METRICS).read_text())["loss"], straight.losses)
    old = tmp_path / "old"  # a folder from before config.json kept its defaults: the skip read from the state
    assert cli.main([*flags, "--epochs", "2", "--no-linear-skip", "--out", str(old)]) == 0
    (old / checkpoint.CONFIG).write_text(json.dumps({**kept, "linear_skip": None, "hidden": None, "lr": None}))
    assert cli.main(["--resume", str(old), "--epochs", "4"]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(json.loads((old / checkpoint.METRICS).read_text())["loss"], straight.losses)


def test_no_plots_is_remembered_by_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--prior", "gamma", "--samples", "5000", "--epochs", "20", "--no-plots", "--out", str(out)]) == 0
    assert cli.main(["--resume", str(out), "--epochs", "30"]) == 0
    assert not any(p.suffix == ".png" for p in out.iterdir())


def test_resume_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    out = tmp_path / "run"
    assert cli.main(["--prior", "gamma", "--samples", "5000", "--epochs", "20", "--no-plots", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / checkpoint.CHECKPOINT).unlink()
    assert cli.main(["--resume", str(out), "--epochs", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoint.npz" in err and len(err.splitlines()) == 1
    (out / checkpoint.CHECKPOINT).write_bytes(b"garbage")
    assert cli.main(["--resume", str(out), "--epochs", "30"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert cli.main(["--checkpoint-every", "-1"]) == 2


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["--prior", "gamma", "--samples", "5000", "--epochs", "120", "--log-every", "20", "--no-plots"]
    argv += ["--checkpoint-every", "40", "--out", str(out)]
    real_write = checkpoint.atomic_write
    writes = []

    def flaky(path, data):  # the disk fills up after the first checkpoint
        writes.append(path.name)
        if path.name == checkpoint.CHECKPOINT and writes.count(checkpoint.CHECKPOINT) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", flaky)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "intact" in err
    template = jax.tree_util.tree_map(np.asarray, train.initial_state(SMALL.resolve(TASK)))
    state = checkpoint.load_tree(out / checkpoint.CHECKPOINT, template)
    assert int(state.epoch) == 40  # the first checkpoint survived
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "state.npz"
    checkpoint.atomic_write(target, b"previous")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    with pytest.raises(OSError):
        checkpoint.atomic_write(target, b"new contents")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_files_get_the_users_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.atomic_write(tmp_path / "a.json", b"{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        checkpoint.atomic_write(tmp_path / "b.json", b"{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
