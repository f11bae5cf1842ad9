"""The accelerator path, checked without an accelerator: the whole training step lowers for CUDA,
with the single-pass kernel (no tile loop, no data-dependent branch) and full-precision matmuls."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdnjax
from mdnjax import kernels, layout, model, objective, tasks, train, xla


@pytest.fixture(scope="module")
def setup():
    task = tasks.GammaPoisson()
    cfg = mdnjax.Config(samples=20_000, epochs=10, layout="binned").resolve(task)
    b, _ = layout.build_layout(task, cfg)
    graphdef, _ = model.structure(cfg.components, cfg.hidden)  # abstract: nothing drawn or compiled
    return cfg, b, graphdef


def _lowered(cfg, data, graphdef, backend):
    kernel = kernels.select(reference=layout.plan(cfg.layout).reference, backend=backend)
    loss = lambda p, d: objective.loss(p, graphdef, d, kernel)  # noqa: E731
    run = train.make_flat_run_epochs(loss, train.optimizer(cfg))
    state = jax.eval_shape(lambda: train.initial_state(cfg))
    return run.trace(state, data, 5).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize("kind", ["binned", "packed"])
def test_the_training_step_lowers_for_cuda_without_tile_loops_or_branches(setup, kind):
    cfg, _, graphdef = setup
    task = tasks.GammaPoisson()
    cfg = mdnjax.Config(samples=20_000, epochs=10, layout=kind).resolve(task)
    b, _ = layout.build_layout(task, cfg)
    data = layout.binned_to_data(b, (0.0, 100.0)) if kind == "binned" else layout.to_data(b, (0.0, 100.0), block=4096)
    assert data.theta.shape[0] > 1 or kind == "binned"
    gpu = _lowered(cfg, data, graphdef, "gpu")
    assert gpu.count("stablehlo.while") == 1  # the epochs' scan, and no lax.map over tiles
    assert "stablehlo.case" not in gpu and "stablehlo.if" not in gpu  # no device→host sync per epoch
    assert "precision = [HIGHEST, HIGHEST]" in gpu or "<HIGHEST>" in gpu  # no TF32 in the network
    cpu = _lowered(cfg, data, graphdef, "cpu")
    assert cpu.count("stablehlo.while") >= (2 if kind == "packed" else 1)  # CPU: tiles (lax.map)


@pytest.mark.parametrize("kind", ["binned", "packed"])
def test_the_single_pass_kernel_equals_the_reference(kind, x64):
    task = tasks.GammaPoisson()
    cfg = mdnjax.Config(samples=20_000, layout=kind).resolve(task)
    b, _ = layout.build_layout(task, cfg)
    data = (
        layout.binned_to_data(b, (0.0, 100.0), jnp.float64)
        if kind == "binned"
        else layout.to_data(b, (0.0, 100.0), jnp.float64, block=4096)
    )
    rng = np.random.default_rng(0)
    shape = (b.num_y, 8)
    args = (
        jnp.asarray(rng.normal(size=shape)),
        jnp.asarray(rng.normal(-1, 1, shape)),
        jnp.asarray(rng.normal(-2, 1, shape)),
    )
    grad = lambda f: jax.jit(jax.value_and_grad(lambda *a: f(*a, data), argnums=(0, 1, 2)))(*args)  # noqa: E731
    v_ref, g_ref = grad(objective.reference_nll)
    for name in ("single-pass", "tiles"):
        v, g = grad(kernels.KERNELS[name])
        np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-10)
        chex.assert_trees_all_close(g, g_ref, rtol=1e-9, atol=1e-12)


def test_the_cpu_flag_is_left_out_when_an_accelerator_is_expected(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert xla.configure_cpu() is False and "XLA_FLAGS" not in __import__("os").environ
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert xla.configure_cpu() is True


@pytest.mark.parametrize("kind", ["binned", "packed"])
def test_the_full_covariance_step_lowers_for_cuda_too(kind):
    """θ ∈ ℝ^2, y ∈ ℤ^4 (the bioassay): the same promises for the full-covariance kernel."""
    task = tasks.Bioassay()
    cfg = mdnjax.Config(samples=20_000, epochs=10, layout=kind).resolve(task)
    b, _ = layout.build_layout(task, cfg)
    emb = task.input_embedding(b.y_values, b.counts)
    data = layout.binned_to_data(b, emb) if kind == "binned" else layout.to_data(b, emb, block=4096)
    graphdef, _ = model.structure(cfg.components, cfg.hidden, 2, 4)

    def lowered(backend):
        kernel = kernels.select(reference=layout.plan(cfg.layout).reference, backend=backend, dim=2)
        loss = lambda p, d: objective.loss(p, graphdef, d, kernel)  # noqa: E731
        run = train.make_flat_run_epochs(loss, train.optimizer(cfg))
        state = jax.eval_shape(lambda: train.initial_state(cfg, 2, 4))
        return run.trace(state, data, 5).lower(lowering_platforms=("cuda",)).as_text()

    gpu = lowered("gpu")
    assert gpu.count("stablehlo.while") == 1 and "stablehlo.case" not in gpu and "stablehlo.if" not in gpu
    assert "HIGHEST" in gpu
    assert lowered("cpu").count("stablehlo.while") >= 2  # CPU: the tiles' lax.map and its safe-path branch
