"""The binned layout: the two-point rule's moment identities, its loss and gradient against the
exact per-sample ones, streaming against one pass, and training with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdnjax
from mdnjax import collapse, layout, objective, tasks
from mdnjax.kernels import tiles


def _draws(n=200_000, seed=0):
    task = tasks.BetaBinomial()
    theta, y = task.simulate(np.random.default_rng(seed), n)
    return task.support[0].forward(theta), y


def test_two_points_per_bin_reproduce_each_bins_count_mean_and_variance():
    u, y = _draws()
    bins = 16
    b = layout.bin_streamed(lambda: iter([(u, y)]), bins=bins)
    for j in (0, 10, 40):
        draws = u[y == b.y_values[j]]
        assert b.counts[j] == draws.size and b.count[j].sum() == draws.size
        width = (draws.max() - draws.min()) / bins
        which = np.clip(np.floor((draws - draws.min()) / width), 0, bins - 1).astype(int)
        points, count = b.theta[j].astype(np.float64).reshape(bins, 2), b.count[j].reshape(bins, 2)
        for k in range(bins):
            in_bin = draws[which == k]
            assert count[k].sum() == in_bin.size
            if in_bin.size:
                mean = (points[k] * count[k]).sum() / in_bin.size
                var = ((points[k] - mean) ** 2 * count[k]).sum() / in_bin.size
                np.testing.assert_allclose(mean, in_bin.mean(), atol=2e-6 * max(1.0, abs(in_bin.mean())))
                np.testing.assert_allclose(var, in_bin.var(), rtol=1e-3, atol=1e-10)
                if in_bin.size == 1:
                    assert points[k, 0] == points[k, 1]  # a lone draw: both points on it


def test_streaming_equals_one_pass():
    u, y = _draws(100_000)
    one = layout.bin_streamed(lambda: iter([(u, y)]), bins=64)
    parts = [(u[i : i + 30_000], y[i : i + 30_000]) for i in range(0, u.size, 30_000)]
    streamed = layout.bin_streamed(lambda: iter(parts), bins=64)
    np.testing.assert_array_equal(streamed.y_values, one.y_values)
    np.testing.assert_array_equal(streamed.count, one.count)
    np.testing.assert_allclose(streamed.theta, one.theta, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bins", [64, 256])
def test_binned_loss_and_gradient_match_the_per_sample_ones(bins, x64):
    """The two-point rule matches each bin's first two moments, so the error is O(h^4) per draw
    (h the bin width): against Monte Carlo noise of ~1e-3 it is negligible. Measured with random
    mixtures (K = 8) at 2·10^5 draws: relative error ≤ 1e-6 at B = 64 and ≤ 1e-8 at B = 256."""
    u, y = _draws()
    packed = layout.bucket_packed(u, y)  # float32 θ, as in training
    u32 = np.zeros_like(u)
    u32[:] = u.astype(np.float32)
    b = layout.bin_streamed(lambda: iter([(u32, y)]), bins=bins)
    rng = np.random.default_rng(1)
    num_y = b.num_y
    logits = jnp.asarray(rng.normal(size=(num_y, 8)))
    means = jnp.asarray(rng.normal(-1.0, 1.0, size=(num_y, 8)))
    log_vars = jnp.asarray(rng.normal(-1.0, 0.5, size=(num_y, 8)))
    exact_data = layout.to_data(packed, (0.0, 100.0), jnp.float64, weighting="per-sample")
    binned_data = layout.binned_to_data(b, (0.0, 100.0), jnp.float64, weighting="per-sample")
    grad = jax.jit(jax.value_and_grad(lambda lg, m, lv, d: tiles.nll(lg, m, lv, d), argnums=(0, 1, 2)))
    v_exact, g_exact = grad(logits, means, log_vars, exact_data)
    v_bin, g_bin = grad(logits, means, log_vars, binned_data)
    tol = 1e-6 if bins == 64 else 1e-8
    assert abs(float(v_bin - v_exact)) <= tol * abs(float(v_exact))
    for a, e in zip(g_bin, g_exact):
        assert float(jnp.linalg.norm(a - e)) <= tol * float(jnp.linalg.norm(e))
    # and the reference kernel agrees on the binned data (per-point weights)
    np.testing.assert_allclose(objective.reference_nll(logits, means, log_vars, binned_data), v_bin, rtol=1e-12)


def test_training_on_the_binned_layout_matches_the_packed_one():
    task = tasks.GammaPoisson()
    cfg = dict(samples=100_000, epochs=300, log_every=300, holdout=0.0)
    packed = mdnjax.fit(task, mdnjax.Config(**cfg, layout="packed"))
    binned = mdnjax.fit(task, mdnjax.Config(**cfg, layout="binned"))
    assert binned.buckets.theta.shape == (binned.buckets.num_y, 512)  # num_y × 2B, whatever N
    # the same objective to float32 rounding: the first epochs agree closely (later, Adam at 1e-2
    # amplifies rounding, as between any two summation orders), and both end as close to p
    np.testing.assert_allclose(binned.losses[:10], packed.losses[:10], rtol=1e-4, atol=1e-5)
    from mdnjax import metrics

    ys = [10, 30, 50, 70, 90]
    kl = {
        name: np.mean([r["kl"] for r in metrics.evaluate(res.posterior, task, ys)])
        for name, res in (("packed", packed), ("binned", binned))
    }
    assert kl["binned"] < 0.01 and kl["packed"] < 0.01 and abs(kl["binned"] - kl["packed"]) < 0.005, kl


def test_a_component_narrower_than_the_bins_is_flagged():
    u, y = _draws(50_000)
    b = layout.bin_streamed(lambda: iter([(u, y)]), bins=8)
    num_y = b.num_y
    logits = np.zeros((num_y, 2))
    log_vars = np.log(np.full((num_y, 2), 0.5**2))
    assert collapse.collapsed(b, logits, log_vars) == []
    log_vars[3, 1] = np.log((0.1 * b.bin_width[3]) ** 2)  # one narrow component at one y
    flagged = collapse.collapsed(b, logits, log_vars)
    assert [r["y"] for r in flagged] == [int(b.y_values[3])]
    logits[3, 1] = -20.0  # a negligible component does not count
    assert collapse.collapsed(b, logits, log_vars) == []


def test_the_binned_runs_per_sample_loss_is_the_packed_objective():
    from mdnjax import metrics, simulation

    task = tasks.GammaPoisson()
    cfg = mdnjax.Config(samples=50_000, epochs=50, log_every=50, holdout=0.0)
    res = mdnjax.fit(task, cfg)
    exact = metrics.per_sample_loss(task, res.config, res.posterior, res.buckets.y_values)
    # the default (auto) layout keeps a y seen once as a bucket of one: so does this packed layout
    draws = simulation.draw(task, np.random.default_rng(0), 50_000, "unconstrained")[:2]
    packed = layout.bucket_packed(*draws, min_count=1)
    data = layout.to_data(packed, (0.0, 100.0), weighting="per-sample")
    direct = objective.loss(res.posterior.params, res.posterior.graphdef, data, tiles.nll)
    assert exact == pytest.approx(float(direct), rel=1e-5)


# ----------------------------------------------------------------------------- θ ∈ ℝ^D


def test_moment_points_reproduce_each_cells_count_mean_and_covariance():
    rng = np.random.default_rng(0)
    for dim in (1, 2, 3):
        a = rng.normal(size=(5, dim, dim))
        cov = a @ np.swapaxes(a, 1, 2)
        cov[0] = 0.0  # a cell with one draw: every point on it
        mean, n = rng.normal(size=(5, dim)), rng.integers(1, 50, 5).astype(float)
        pts, wts = layout.moment_points(n, mean, cov)
        np.testing.assert_allclose(wts.sum(axis=1), n, rtol=1e-12)
        got_mean = np.einsum("cp,cpd->cd", wts, pts) / n[:, None]
        d = pts - got_mean[:, None, :]
        got_cov = np.einsum("cp,cpd,cpe->cde", wts, d, d) / n[:, None, None]
        np.testing.assert_allclose(got_mean, mean, atol=1e-12)
        np.testing.assert_allclose(got_cov, cov, atol=1e-10)
    assert pts.shape == (5, 6, 3)


def test_d_dim_binned_loss_and_gradient_match_the_per_sample_ones(x64):
    """Dense y summarised cell by cell (32 × 32), a sparse y kept draw by draw: loss within 1e-5 and
    gradient within 1e-4 (relative) of the per-sample ones, far inside the Monte Carlo noise of
    10^5 draws per y (~3e-3), for random full-covariance mixtures."""
    import jax
    import jax.numpy as jnp

    from mdnjax.kernels import full

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300_000)
    y[:3000] = 5  # sparse: fewer draws than its cells would give points
    theta = (rng.normal(size=(len(y), 2)) @ np.array([[1.0, 0.4], [0.0, 0.6]]) + 0.3 * y[:, None]).astype(np.float32)
    b = layout.bin_nd(theta.astype(np.float64), y)
    assert b.theta.shape[1] <= 2 * 2 * 32 * 32 and b.count[3].sum() == 3000 and np.all(b.count[3][:3000] == 1)
    db = layout.binned_to_data(b, (0.0, 1.0), dtype=jnp.float64)
    dp = layout.to_data(layout.bucket(theta, y, width=256), (0.0, 1.0), dtype=jnp.float64, weighting="per-sample")
    for seed in range(3):
        r = np.random.default_rng(seed)
        params = (
            jnp.asarray(r.normal(size=(4, 5))),
            jnp.asarray(r.normal(size=(4, 5, 2)) * 0.5 + 0.3),
            jnp.asarray(r.normal(size=(4, 5, 3)) * 0.3),
        )
        lb, gb = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, db)
        lp, gp = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, dp)
        assert abs(float(lb - lp)) < 1e-5 * abs(float(lp))
        for a, c in zip(gb, gp):
            assert float(jnp.max(jnp.abs(a - c))) < 1e-4 * float(jnp.max(jnp.abs(c)))


def test_d_dim_binned_layout_is_the_default_up_to_three_parameters():
    from mdnjax import Config, tasks
    from mdnjax.train import chosen

    assert chosen(tasks.Bioassay(), Config(samples=20_000))[0].layout == "binned"
    five = mdnjax.Task(
        "five", lambda rng, n: (rng.normal(size=(n, 5)), rng.integers(0, 3, n)), support=[(-np.inf, np.inf)] * 5
    )
    assert chosen(five, Config(samples=20_000))[0].layout == "packed"
    assert Config(layout="binned").resolve(five).layout == "packed"


def test_a_component_narrower_than_the_cells_is_flagged_in_d_dimensions():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 20_000)
    theta = rng.normal(size=(20_000, 2)) * np.array([1.0, 4.0])
    b = layout.bin_nd(theta, y, bins=8)  # 8 × 8 cells: every y has more draws than 4 · 64 points
    logits = np.zeros((2, 2))
    broad = np.broadcast_to(np.diag([1.0, 16.0]), (2, 2, 2, 2)).copy()  # the draws' own spread
    assert collapse.collapsed_nd(b, logits, broad, bins=8) == []
    narrow = broad.copy()
    narrow[1, 0] = np.diag([1.0, 0.01])  # y = 1, component 0: sd 0.1 along coordinate 1, cells ~ 4
    flagged = collapse.collapsed_nd(b, logits, narrow, bins=8)
    assert [(r["y"], r["coordinate"]) for r in flagged] == [([1], 1)]
    assert flagged[0]["sd"] == pytest.approx(0.1) and flagged[0]["cell_width"] > 2.0
