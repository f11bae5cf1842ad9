"""Stored simulations: a dataset folder written, resumed, shared and verified; training from it
bitwise equal to training inline; arrays from any program; one line for each bad input."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import mdnjax
from mdnjax import batches, cli, datasets, sources, tasks
from mdnjax.__main__ import main as mdnjax_main
from mdnjax.simulation import SimulationError


def _same_params(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _rows(path):
    theta, y = datasets.open_dataset(path).read(0, 10**9)
    return np.asarray(theta), np.asarray(y)


def test_training_from_a_simulated_dataset_is_bitwise_training_inline(tmp_path):
    data = mdnjax.simulate("beta", 8_000, tmp_path / "beta", seed=3)
    assert data.count == 8_000 and data.y_kind == "counts" and data.y_shape == ()
    config = mdnjax.Config(samples=8_000, epochs=10, holdout=0.0, layout="binned", seed=3)
    inline, stored = mdnjax.fit("beta", config), mdnjax.fit(None, config, data=tmp_path / "beta")
    assert _same_params(inline.state.params, stored.state.params)
    np.testing.assert_array_equal(inline.losses, stored.losses)
    # the per-sample path too (continuous y): the same pairs, split and minibatches
    mdnjax.simulate("two_moons", 2_000, tmp_path / "moons", seed=0)
    config = mdnjax.Config(samples=2_000, epochs=2, holdout=0.0)
    inline, stored = mdnjax.fit("two_moons", config), mdnjax.fit("two_moons", config, data=tmp_path / "moons")
    assert stored.config.layout == "per-sample"
    assert _same_params(inline.state.params, stored.state.params)


def test_the_held_out_rows_are_the_last_ones_and_never_trained_on(tmp_path):
    data = mdnjax.simulate("gamma", 5_000, tmp_path / "g")
    task, config = mdnjax.train.with_data(None, data, mdnjax.Config(holdout=0.1, space="unconstrained"))
    assert (task.train_rows, config.samples) == (4_500, 4_500)
    theta, y, _ = sources.whole(task, config, np.float64)
    heldout_theta, heldout_y = sources.draw_heldout(task, config)
    raw_theta, raw_y = data.read(0, 5_000)
    np.testing.assert_array_equal(y, raw_y[:4_500])
    np.testing.assert_array_equal(heldout_y, raw_y[4_500:])
    np.testing.assert_allclose(np.exp(theta), raw_theta[:4_500], rtol=1e-12)  # the fitting space: log θ
    np.testing.assert_allclose(np.exp(heldout_theta), raw_theta[4_500:], rtol=1e-6)
    with pytest.raises(SimulationError, match="no simulator for new draws"):
        task.simulate(np.random.default_rng(0), 10)


@pytest.mark.processes
def test_shards_are_seeded_per_shard_and_shares_merge_into_one_dataset(tmp_path):
    whole = mdnjax.simulate("beta", 10_000, tmp_path / "one", shard_size=3_000, seed=5)
    assert [r["rows"] for r in whole.records] == [3_000, 3_000, 3_000, 1_000]
    assert [r["seed"] for r in whole.records] == [[5, 0], [5, 1], [5, 2], [5, 3]]
    # shard i is default_rng([seed, i]) drawn through the task's simulator
    theta, y = tasks.BetaBinomial().simulate(np.random.default_rng([5, 2]), 3_000)
    np.testing.assert_array_equal(whole.read(6_000, 9_000)[1], y)
    # two shares (two jobs of an array, say) write one folder; the dataset opens when both are done
    assert mdnjax.simulate("beta", 10_000, tmp_path / "two", shard_size=3_000, seed=5, share=(1, 2)) is None
    with pytest.raises(datasets.DatasetError, match="shard 0 .* is incomplete"):
        datasets.open_dataset(tmp_path / "two")
    merged = mdnjax.simulate("beta", 10_000, tmp_path / "two", shard_size=3_000, seed=5, share=(0, 2))
    assert merged.fingerprint == whole.fingerprint
    # shares written on machines without a shared disk merge into one folder; others are refused
    for i in range(2):
        mdnjax.simulate("beta", 10_000, tmp_path / f"share{i}", shard_size=3_000, seed=5, share=(i, 2))
    assert datasets.merge(tmp_path / "m", [tmp_path / "share0"]) is None  # share 1 not there yet
    merged = datasets.merge(tmp_path / "m", [tmp_path / "share0", tmp_path / "share1"])
    assert merged.fingerprint == whole.fingerprint
    mdnjax.simulate("beta", 10_000, tmp_path / "other", shard_size=3_000, seed=6, share=(1, 2))
    with pytest.raises(datasets.DatasetError, match=r"share0 holds .*seeds \[5\] but .*other holds .*seeds \[6\]"):
        datasets.merge(tmp_path / "m2", [tmp_path / "share0", tmp_path / "other"])
    # and two local worker processes write the same rows again
    workers = mdnjax.simulate("beta", 10_000, tmp_path / "w", shard_size=3_000, seed=5, workers=2)
    assert workers.fingerprint == whole.fingerprint


def test_an_interrupted_dataset_resumes_redoing_only_incomplete_or_damaged_shards(tmp_path):
    path = tmp_path / "d"
    first = mdnjax.simulate("gamma", 8_000, path, shard_size=2_000)
    theta0, y0 = _rows(path)
    (path / "shards" / "00001.json").unlink()  # killed before the record: incomplete
    with open(path / "shards" / "00002.y.npy", "r+b") as f:  # a flipped byte
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(datasets.DatasetError, match="shard 1 .* incomplete"):
        datasets.open_dataset(path)
    (path / "shards" / "00001.json").write_text(json.dumps(first.records[1]))
    with pytest.raises(datasets.DatasetError, match="shard 2: 00002.y.npy is corrupted or truncated"):
        datasets.open_dataset(path)
    (path / "shards" / "00001.json").unlink()
    stamp = os.stat(path / "shards" / "00000.y.npy").st_mtime_ns
    again = mdnjax.simulate("gamma", 8_000, path, shard_size=2_000)
    assert again.fingerprint == first.fingerprint
    assert os.stat(path / "shards" / "00000.y.npy").st_mtime_ns == stamp  # a complete shard is kept
    theta1, y1 = _rows(path)
    np.testing.assert_array_equal(theta0, theta1)
    np.testing.assert_array_equal(y0, y1)


def test_appending_another_seed_and_refusing_what_does_not_belong(tmp_path):
    path = tmp_path / "d"
    mdnjax.simulate("beta", 2_000, path, seed=0)
    both = mdnjax.simulate("beta", 1_000, path, seed=1)
    assert both.count == 3_000 and [p["seed"] for p in both.manifest["parts"]] == [0, 1]
    np.testing.assert_array_equal(
        both.read(2_000, 3_000)[1], tasks.BetaBinomial().simulate(np.random.default_rng(1), 1_000)[1]
    )
    with pytest.raises(datasets.DatasetError, match="holds simulations of .*beta.* this run simulates .*gamma"):
        mdnjax.simulate("gamma", 1_000, path)
    with pytest.raises(datasets.DatasetError, match="already holds seed 0 with 2,000 samples"):
        mdnjax.simulate("beta", 5_000, path, seed=0)
    with pytest.raises(datasets.DatasetError, match="data hold simulations of .*beta.*, not of .*gamma"):
        mdnjax.fit("gamma", {"epochs": 1}, data=path)
    with pytest.raises(datasets.DatasetError, match="not a dataset"):
        datasets.open_dataset(tmp_path / "nothing")


def test_arrays_from_any_program_train_and_refuse_bad_rows(tmp_path):
    rng = np.random.default_rng(0)
    theta = rng.uniform(0.0, 1.0, size=3_000)
    y = rng.binomial(30, theta)
    np.savez(tmp_path / "sims.npz", p=theta, counts=y)
    t, v, _ = datasets.read_table(tmp_path / "sims.npz", ["p"], ["counts"])
    data = datasets.write_arrays(t, v, tmp_path / "d", support=[(0.0, 1.0)])
    assert (data.count, data.y_kind, data.support[0].high) == (3_000, "counts", 1.0)
    result = mdnjax.fit(None, {"epochs": 3}, data=tmp_path / "d")
    assert result.config.samples == 2_700 and result.posterior.dim == 1
    # CSV with named columns; counts written as numbers come back as integers
    lines = ["a,b,y"] + [f"{x:.17g},{1 - x:.17g},{k}" for x, k in zip(theta[:50], y[:50], strict=True)]
    (tmp_path / "sims.csv").write_text("\n".join(lines) + "\n")
    t, v, names = datasets.read_table(tmp_path / "sims.csv", ["a", "b"], ["y"])
    assert t.shape == (50, 2) and v.dtype == np.int64 and names == ["a", "b"]
    np.testing.assert_array_equal(t[:, 0], theta[:50])
    bad = [
        (lambda: datasets.write_arrays(theta, y[:10], tmp_path / "x"), "theta has 3,000 rows and y 10"),
        (lambda: datasets.write_arrays(theta[:0], y[:0], tmp_path / "x"), "hold no simulations"),
        (lambda: datasets.write_arrays(np.r_[theta[:5], np.nan], y[:6], tmp_path / "x"), "1 of 6 rows hold NaN"),
        (lambda: datasets.write_arrays(theta, y, tmp_path / "d"), "already holds a dataset"),
        (lambda: datasets.read_table(tmp_path / "sims.csv", ["c"], ["y"]), "has no column 'c'"),
        (lambda: datasets.read_table(tmp_path / "sims.npz"), "has no array 'theta'"),
    ]
    for call, message in bad:
        with pytest.raises(datasets.DatasetError, match=message):
            call()
    kept = datasets.write_arrays(np.r_[theta[:5], np.nan], y[:6], tmp_path / "kept", drop_nonfinite=True)
    assert kept.count == 5 and kept.manifest["parts"][0]["dropped_nonfinite"] == 1
    result = mdnjax.fit_arrays(theta, y.astype(np.float64) + rng.normal(size=3_000), {"epochs": 2}, support=[(0, 1)])
    assert result.config.layout == "per-sample"


def test_the_command_line_simulates_trains_resumes_and_refuses_changed_data(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert mdnjax_main(["simulate", "gamma", "--samples", "3000", "--out", str(data), "--shard-size", "1000"]) == 0
    out = capsys.readouterr().out
    assert "3,000 of 3,000 simulations (100%)" in out and "3 shards, verified" in out
    assert cli.main(["--data", str(data), "--epochs", "10", "--no-plots", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "task=gamma samples=2,700" in out and "reading 2,700 draws" in out
    assert json.loads((run / "run.json").read_text())["task"]["data"]["rows"] == 3_000
    assert mdnjax_main(["report", str(run)]) == 0  # the report again, from the data
    assert "reading the 2,700 training draws again" in capsys.readouterr().out
    assert mdnjax_main(["calibrate", str(run), "--draws", "100"]) == 0  # SBC on the held-out rows
    assert json.loads((run / "calibration.json").read_text())["draws"] == 100
    mdnjax.simulate("gamma", 1_000, data, seed=9)  # the data changed: resuming refuses
    assert cli.main(["--resume", str(run), "--epochs", "20"]) == 2
    assert "changed since the run trained on them" in capsys.readouterr().err
    assert cli.main(["--data", str(data), "--samples", "100", "--out", str(tmp_path / "r2")]) == 2
    assert "--samples does not apply with --data" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import mdnjax\ndef simulate(rng, n):\n    raise RuntimeError('boom')\n"
        "TASK = mdnjax.Task('bad', simulate, support=[(0.0, 1.0)])\n"
    )
    assert mdnjax_main(["simulate", f"{bad}:TASK", "--samples", "10", "--out", str(tmp_path / "none")]) == 1
    assert "simulate (simulate) raised RuntimeError: boom" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # a simulator failing at once leaves no folder
    assert mdnjax_main(["simulate", "gamma", "--samples", "10", "--out", str(data), "--shard", "3/2"]) == 2
    assert "--shard 3/2: i must be in 0..N-1" in capsys.readouterr().err
    np.savez(tmp_path / "s.npz", theta=np.linspace(0.1, 0.9, 100), y=np.arange(100))
    assert mdnjax_main(["import", str(tmp_path / "s.npz"), "--out", str(tmp_path / "imp"), "--support", "0,1"]) == 0
    assert datasets.open_dataset(tmp_path / "imp").support[0] == (0.0, 1.0)
    assert mdnjax_main(["merge", str(data), str(tmp_path / "imp"), "--out", str(tmp_path / "mm")]) == 2
    assert "are not shares of one run" in capsys.readouterr().err


@pytest.mark.processes
def test_a_dask_cluster_on_localhost_fans_the_shares_out(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = str(tmp_path / "d")

    def share(i):  # one job per share, as a cluster's job array would run them
        return mdnjax.simulate("beta", 6_000, path, shard_size=1_000, share=(i, 3)) is not None

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        done = client.gather(client.map(share, range(3)))
    assert sum(done) >= 1  # the last share to finish opens the whole dataset
    alone = mdnjax.simulate("beta", 6_000, tmp_path / "alone", shard_size=1_000)
    assert datasets.open_dataset(path).fingerprint == alone.fingerprint


def test_parquet_export_reads_back_as_the_same_rows(tmp_path):
    pytest.importorskip("pyarrow")
    data = mdnjax.simulate("abtest", 500, tmp_path / "d")  # θ ∈ ℝ^2, y of 2 counts
    datasets.write_parquet(data, tmp_path / "d.parquet")
    theta, y, names = datasets.read_table(tmp_path / "d.parquet")
    assert names == ["theta_0", "theta_1"] and y.dtype == np.int64
    np.testing.assert_array_equal(theta, data.read(0, 500)[0])
    np.testing.assert_array_equal(y, data.read(0, 500)[1])
    assert mdnjax_main(["export", str(tmp_path / "d"), "--out", str(tmp_path / "e.parquet")]) == 0


def test_data_above_the_memory_budget_stream_from_disk_and_resume_bitwise(tmp_path):
    from mdnjax.train import streamed

    mdnjax.simulate("two_moons", 3_000, tmp_path / "tm", shard_size=1_000)
    config = {"epochs": 3, "holdout": 0.0, "memory_budget": 1e-4, "batch_size": 64}
    whole = mdnjax.fit(None, config, data=tmp_path / "tm")
    assert whole.report["streamed"]["chunks"] > 1 and whole.config.layout == "per-sample"
    # standardisation streamed over the training rows equals the resident computation
    task, cfg = mdnjax.train.with_data(None, tmp_path / "tm", {**config, "layout": "per-sample"})
    cfg = cfg.resolve(task)
    theta_std, y_std = streamed._moments(task, 0, 2_700, 700, cfg.space, False)  # moments combined over chunks
    theta, y, _ = sources.whole(task, dataclasses.replace(cfg, samples=2_700), np.float64)
    np.testing.assert_allclose(theta_std.shift, batches.standardise(theta).shift, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_std.scale, batches.standardise(y).scale, rtol=1e-10)
    # the validation pairs are the resident path's split, never trained on
    split = streamed.Split.of(3_000, 0.1, cfg.seed)
    _, val_idx = batches.split(3_000, 0.1, cfg.seed)
    np.testing.assert_array_equal(split.val, val_idx)
    np.testing.assert_array_equal(whole.heldout[1], datasets.open_dataset(tmp_path / "tm").read(0, 3_000)[1][val_idx])
    # with every training row in one chunk, the streamed run is the resident run, bitwise
    one = streamed.fit(task, dataclasses.replace(cfg, memory_budget=1.0, epochs=2))
    resident = mdnjax.train.minibatch.fit(task, dataclasses.replace(cfg, epochs=2))
    assert one.report["streamed"]["chunks"] == 1
    assert _same_params(one.state.params, resident.state.params)
    np.testing.assert_array_equal(one.validation, resident.validation)
    skip = dataclasses.replace(cfg, memory_budget=1.0, epochs=1, linear_skip=True)  # its least squares too
    one = streamed.fit(task, skip)
    resident = mdnjax.train.minibatch.fit(task, dataclasses.replace(skip, memory_budget=None))
    assert np.asarray(one.state.params["means_skip"]["kernel"]).any()
    assert _same_params(one.state.params, resident.state.params)
    # one pass, then two more from the state, are the three passes
    first = mdnjax.fit(None, {**config, "epochs": 1}, data=tmp_path / "tm")
    history = np.stack([first.losses, first.validation], axis=1)
    resumed = mdnjax.fit(None, config, data=tmp_path / "tm", init_state=first.state, history=history)
    assert _same_params(resumed.state.params, whole.state.params)
    np.testing.assert_array_equal(resumed.validation, whole.validation)
    assert whole.posterior.sample(jax.random.key(0), np.zeros(2), 7).shape == (7, 2)
