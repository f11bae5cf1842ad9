"""The full-covariance kernel (θ ∈ ℝ^D) against autodiff of the reference loss, SciPy and itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from mdnjax import kernels, layout, mixture, objective
from mdnjax.kernels import full


def _problem(dim, seed=0, n=2400, num_y=7, k=4, spread=1.0, per_slot=False, dtype=np.float64):
    """Random θ grouped by random y, random per-y mixtures, as float64 device data."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_y, n)
    theta = rng.normal(size=(n, dim)) * spread + y[:, None] * 0.3
    b = layout.bucket(theta, y, width=64)
    d = layout.to_data(b, (0.0, 1.0), dtype=dtype, block=1024, weighting="per-y")
    if per_slot:  # the binned layout's kind of weights: one per slot
        w = rng.uniform(0.1, 1.0, d.theta.shape[:3]) * np.asarray(layout.row_mask(d.row_count, d.theta.shape[2]))
        d = d._replace(weight=jnp.asarray(w, dtype))
    logits = jnp.asarray(rng.normal(size=(num_y, k)), dtype)
    means = jnp.asarray(rng.normal(size=(num_y, k, dim)) + 1.5 * np.arange(num_y)[:, None, None] * 0.2, dtype)
    scales = jnp.asarray(rng.normal(size=(num_y, k, dim * (dim + 1) // 2)) * 0.4, dtype)
    return b, d, (logits, means, scales)


# every pair of values of two axes covered (an orthogonal array over the three, not the product)
@pytest.mark.parametrize(
    "which,per_slot,dim", [("tiles", False, 3), ("tiles", True, 2), ("single-pass", False, 2), ("single-pass", True, 3)]
)
def test_loss_and_gradient_equal_autodiff_of_the_reference_in_float64(x64, dim, per_slot, which):
    _, d, params = _problem(dim, per_slot=per_slot)
    kernel = kernels.FULL_KERNELS[which]
    value, grads = jax.jit(jax.value_and_grad(kernel, argnums=(0, 1, 2)))(*params, d)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(objective.reference_nll, argnums=(0, 1, 2)))(*params, d)
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(r))))


def test_reference_equals_scipy_multivariate_normal_mixtures(x64):
    b, d, (logits, means, scales) = _problem(2, n=600)
    covs = np.asarray(mixture.mvn_covariances(scales))
    total = 0.0
    theta, rows = np.asarray(b.theta, np.float64), np.asarray(b.row_y)
    for j in range(b.num_y):  # per y, the mean NLL of its draws under a SciPy mixture
        t = np.concatenate([theta[r, : b.row_count[r]] for r in np.flatnonzero(rows == j)])
        log_w = np.asarray(logits[j]) - special.logsumexp(np.asarray(logits[j]))
        comp = np.stack(
            [stats.multivariate_normal(np.asarray(means[j, k]), covs[j, k]).logpdf(t) for k in range(logits.shape[1])],
            axis=1,
        )
        total += -np.mean(special.logsumexp(log_w + comp, axis=1))
    np.testing.assert_allclose(float(full.nll(logits, means, scales, d)), total, rtol=1e-10)


def test_padding_values_change_nothing(x64):
    _, d, params = _problem(2, seed=3)
    mask = np.asarray(d.mask)[..., None]
    junk = d._replace(theta=jnp.where(mask, d.theta, 1e6))  # padded slots: absurd but finite
    a = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, d)
    b = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, junk)
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)


def test_a_sample_far_from_every_component_takes_the_safe_path_and_stays_exact(x64):
    _, d, (logits, means, scales) = _problem(2, seed=4)
    far = d._replace(theta=d.theta.at[0, 0, 0].set(jnp.array([40.0, -35.0])))  # ≫ HEADROOM nats away
    value, grads = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(logits, means, scales, far)
    ref, ref_grads = jax.jit(jax.value_and_grad(objective.reference_nll, argnums=(0, 1, 2)))(logits, means, scales, far)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, ref, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10 * float(jnp.max(jnp.abs(r))))


def test_float32_kernel_is_close_to_float64_on_a_narrow_posterior():
    """Narrow components far from zero (σ ≈ 0.02 at |μ| ≈ 3): the row-centred expansion keeps
    float32 within 1e-4 of the float64 loss and gradient (relative)."""
    rng = np.random.default_rng(5)
    _, d64, (logits, means, _) = _problem(2, seed=5, spread=0.02, dtype=np.float32)
    means = means * 0.0 + 3.0 + jnp.asarray(rng.normal(size=means.shape) * 0.02)
    scales = jnp.concatenate([jnp.full(means.shape, 2 * np.log(0.02)), jnp.zeros(means.shape[:-1] + (1,))], -1)
    d64 = d64._replace(theta=d64.theta + 3.0)
    with jax.enable_x64(True):
        p64 = tuple(jnp.asarray(a, jnp.float64) for a in (logits, means, scales))
        d = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) if a.dtype.kind == "f" else a, d64)
        v64, g64 = jax.jit(jax.value_and_grad(objective.reference_nll, argnums=(0, 1, 2)))(*p64, d)
        v64, g64 = np.asarray(v64), [np.asarray(g) for g in g64]
    p32 = tuple(jnp.asarray(a, jnp.float32) for a in (logits, means, scales))
    d32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else a, d64)
    v32, g32 = jax.value_and_grad(full.nll, argnums=(0, 1, 2))(*p32, d32)  # op by op: the kernel's own rounding
    np.testing.assert_allclose(v32, v64, rtol=1e-4)
    for g, r in zip(g32, g64):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * np.abs(r).max())


def test_the_kernel_is_chosen_by_dimension_and_backend():
    assert kernels.select(backend="cpu", dim=2) is full.nll
    assert kernels.select(backend="gpu", dim=3) is full.nll_single_pass
    assert kernels.select(reference=True, backend="cpu", dim=2) is objective.reference_nll


def test_d1_through_the_full_covariance_path_reproduces_the_scalar_path(x64):
    """D = 1 is the same parameterisation: scales = log σ², the same density, loss and gradient."""
    from mdnjax.kernels import tiles

    rng = np.random.default_rng(6)
    y = rng.integers(0, 5, 1500)
    theta = rng.normal(size=1500) + 0.2 * y
    b1 = layout.bucket(theta, y, width=64)
    b2 = layout.bucket(theta[:, None], y, width=64)
    d1 = layout.to_data(b1, (0.0, 1.0), dtype=jnp.float64, block=1024)
    d2 = layout.to_data(b2, (0.0, 1.0), dtype=jnp.float64, block=1024)
    logits, means, log_vars = (jnp.asarray(rng.normal(size=(5, 3))) for _ in range(3))
    v1, g1 = jax.jit(jax.value_and_grad(tiles.nll, argnums=(0, 1, 2)))(logits, means, log_vars, d1)
    v2, g2 = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(logits, means[..., None], log_vars[..., None], d2)
    np.testing.assert_allclose(v2, v1, rtol=1e-12)
    for a, c in zip(g2, (g1[0], g1[1][..., None], g1[2][..., None])):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)
    t = jnp.linspace(-2.0, 2.0, 9)
    np.testing.assert_allclose(
        mixture.mvn_log_prob(t[:, None], logits[0], means[0, :, None], log_vars[0, :, None]),
        mixture.log_prob(t, logits[0], means[0], log_vars[0]),
        rtol=1e-12,
    )


def test_the_d1_network_is_unchanged_by_the_new_heads():
    """The heads of a D = 1, M = 1 network have the shapes and initial values they always had."""
    from mdnjax import model

    graphdef, params = model.init(jax.random.key(0), 8)
    _, params_nd = model.init(jax.random.key(0), 8, dim=1, inputs=1)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_nd)):
        np.testing.assert_array_equal(a, b)
    assert params["means_head"]["kernel"].shape == (16, 8) and params["log_vars_head"]["kernel"].shape == (16, 8)
    _, p2 = model.init(jax.random.key(0), 8, dim=2, inputs=3)
    assert p2["means_head"]["kernel"].shape == (16, 16) and p2["log_vars_head"]["kernel"].shape == (16, 24)
    assert p2["backbone"][0]["kernel"].shape == (3, 24)


def test_the_origin_computed_once_equals_the_one_computed_in_the_kernel(x64):
    """``to_data`` stores each y's mean draw (``Data.centre``) so that no epoch recomputes it; data
    without it (built by hand) take the in-kernel mean: the same loss and gradient."""
    _, d, params = _problem(2, seed=7)
    assert d.centre is not None and d.centre.shape == (7, 2)
    np.testing.assert_allclose(d.centre, full.centres(d.theta, d.row_count, d.row_y, 7), rtol=1e-12)
    a = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, d)
    b = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(*params, d._replace(centre=None))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13)
