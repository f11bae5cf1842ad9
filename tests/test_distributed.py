"""Two processes on localhost (CPU collectives over gloo) reach the parameters of one process."""

import socket
import subprocess
import sys

import chex
import pytest

import mdnjax

pytestmark = pytest.mark.processes

ARGS = [
    "--prior",
    "gamma",
    "--samples",
    "20000",
    "--epochs",
    "10",
    "--log-every",
    "5",
    "--no-plots",
    "--layout",
    "packed",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    from mdnjax import cli

    single = tmp_path / "single"
    assert cli.main([*ARGS, "--out", str(single)]) == 0

    port = _free_port()
    multi = tmp_path / "multi"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mdnjax.train",
                *ARGS,
                "--out",
                str(multi),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert "device=cpu" in outs[0][0]
    a, b = mdnjax.load(single), mdnjax.load(multi)
    chex.assert_trees_all_close(b.params, a.params, rtol=1e-5, atol=1e-6)


def test_distributed_flags_go_together(capsys):
    from mdnjax import cli

    assert cli.main(["--coordinator", "127.0.0.1:1234"]) == 2
    assert "go together" in capsys.readouterr().err


def test_two_processes_each_bin_their_share_and_train_the_one_process_layout(tmp_path):
    """--layout binned: each process simulates and bins every other chunk, the sums are added once,
    and training (replicated) reaches the parameters of one process on the same chunks."""
    import numpy as np

    from mdnjax import Config, layout, tasks
    from mdnjax.train import fit

    args = ["--prior", "beta", "--samples", "30000", "--epochs", "30", "--log-every", "10", "--no-plots"]
    port = _free_port()
    out = tmp_path / "multi"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mdnjax.train", *args, "--out", str(out), "--coordinator", f"127.0.0.1:{port}"]
            + ["--num-processes", "2", "--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert "layout=binned" in outs[0][0]
    # one process, the same two chunks (chunk i from default_rng([seed, i]), 15,000 draws each)
    task = tasks.BetaBinomial()
    config = Config(samples=30_000, epochs=30, log_every=10).resolve(task)
    parts = []
    for i in range(2):
        theta, y = task.simulate(np.random.default_rng([config.seed, i]), 15_000)
        bound = task.support[0]
        parts.append((bound.forward(bound.interior(theta)[0]), y))
    b = layout.bin_streamed(lambda: iter(parts), bins=config.bins, min_count=1)  # auto: no y left out
    single = fit(task, config, buckets=b)
    multi = mdnjax.load(out)
    np.testing.assert_array_equal(multi.spec.y_values, b.y_values)
    np.testing.assert_array_equal(multi.spec.counts, b.counts)
    chex.assert_trees_all_close(multi.params, single.posterior.params, rtol=1e-5, atol=1e-6)
