"""Same weights, same data: the JAX path against the PyTorch reference (the notebook's loop)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from mdnjax import kernels, layout, model, objective, tasks  # noqa: E402
from mdnjax.testing import torch_ref  # noqa: E402
from mdnjax.train import make_step  # noqa: E402

buckets = layout


pytestmark = pytest.mark.torch


def to_data(b, trials, dtype=jnp.float32, **kw):
    return layout.to_data(b, (0.0, float(trials)), dtype, **kw)


def loss_fn(which, graphdef):
    return lambda params, d: objective.loss(params, graphdef, d, kernels.select(reference=layout.plan(which).reference))


NOTEBOOK_BETA = {0: 102.4597, 50: 85.9368}  # the notebook's printed losses (benchmarks/parity.py checks 100, 150)


@pytest.fixture(autouse=True)
def pinned_precision():
    """No TF32 or reduced-precision matmuls on either side (the default on recent GPUs)."""
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = False
    with jax.default_matmul_precision("highest"):
        yield


def _pair(k, dtype, seed=0):
    torch.manual_seed(seed)
    net = torch_ref.TorchMDN(k).to(dtype)
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    graphdef, template = model.init(jax.random.key(0), k)
    template = jax.tree_util.tree_map(lambda a: a.astype(jdtype), template)
    return net, graphdef, torch_ref.torch_to_flax(net.state_dict(), template)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        jax.config.update("jax_enable_x64", True)
        yield torch.float64
        jax.config.update("jax_enable_x64", False)
    else:
        yield torch.float32


@pytest.mark.parametrize("k", [1, 8])
def test_forward_outputs_agree(k, dtype):
    net, graphdef, params = _pair(k, dtype)
    x = np.linspace(0.0, 1.2, 37)
    with torch.no_grad():
        w_t, m_t, v_t = (a.numpy() for a in net(torch.tensor(x, dtype=dtype).view(-1, 1)))
    logits, means, log_vars = model.apply(graphdef, params, jnp.asarray(x, params["means_head"]["bias"].dtype))
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(jax.nn.softmax(logits), w_t, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(means, m_t, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(log_vars, v_t, rtol=rtol, atol=rtol * 1e-2)


def _data(name, n=6000, seed=3):
    task = tasks.from_name(name)
    theta, y = task.simulate(np.random.default_rng(seed), n)
    return task, theta.astype(np.float32), y  # the layouts hold float32 θ: both sides see the same values


# each dtype with each prior and each K (the prior-K pairing carries no interaction)
@pytest.mark.parametrize("name,k", [("beta", 8), ("gamma", 1)])
def test_loss_and_every_gradient_agree_with_the_notebook_loop(name, k, dtype):
    task, theta, y = _data(name)
    net, graphdef, params = _pair(k, dtype)
    ref = torch_ref.notebook_loss(net, torch_ref.group_by_y(theta, y), task.trials, dtype=dtype)
    net.zero_grad()
    ref.backward()
    g_ref = torch_ref.grads_to_flax(net, params)
    jdtype = params["means_head"]["bias"].dtype
    for kind in ("packed", "padded"):
        b = buckets.bucket_packed(theta, y) if kind == "packed" else buckets.bucket(theta, y)
        block = layout.BLOCK if kind == "packed" else None
        value, grads = jax.jit(jax.value_and_grad(loss_fn(kind, graphdef)))(
            params, to_data(b, task.trials, jdtype, block=block)
        )
        np.testing.assert_allclose(float(value), ref.item(), **_tol(dtype))
        chex.assert_trees_all_close(grads, g_ref, **_tol(dtype))


def test_one_adam_update_gives_the_same_parameters(dtype):
    """One prior: the losses and gradients of both are checked above; this checks Adam's update."""
    task, theta, y = _data("gamma")
    net, graphdef, params = _pair(8, dtype)
    opt_t = torch.optim.Adam(net.parameters(), lr=1e-2)
    value = torch_ref.notebook_loss(net, torch_ref.group_by_y(theta, y), task.trials, dtype=dtype)
    opt_t.zero_grad()
    value.backward()
    opt_t.step()
    after_t = torch_ref.torch_to_flax(net.state_dict(), params)

    opt = optax.adam(1e-2)
    step = jax.jit(make_step(loss_fn("packed", graphdef), opt))
    data = to_data(buckets.bucket_packed(theta, y), task.trials, params["means_head"]["bias"].dtype)
    after_j, _, _ = step(params, opt.init(params), data)
    chex.assert_trees_all_close(after_j, after_t, **_tol(dtype))


@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_padding_and_bucket_order_do_not_change_the_vectorized_torch_loss(name):
    task, theta, y = _data(name)
    net, graphdef, params = _pair(8, torch.float32)
    b = buckets.bucket(theta, y)
    x, th, mask = torch_ref.padded_tensors(b, task.trials)
    ref = torch_ref.notebook_loss(net, torch_ref.group_by_y(theta, y), task.trials).item()
    with torch.no_grad():
        base = torch_ref.vectorized_loss(net, x, th, mask).item()
        junk = torch_ref.vectorized_loss(net, x, torch.where(mask, th, torch.tensor(1e30)), mask).item()
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        shuffled = torch_ref.vectorized_loss(net, x[perm], th[perm], mask[perm]).item()
    np.testing.assert_allclose(base, ref, rtol=1e-5)
    assert junk == base
    np.testing.assert_allclose(shuffled, base, rtol=1e-6)
    d = to_data(b, task.trials)
    np.testing.assert_allclose(float(loss_fn("padded", graphdef)(params, d)), base, rtol=1e-5)


@pytest.fixture(scope="module")
def notebook_run():
    """The notebook's beta run: its seeding, its 10^6 draws, its loop, 51 epochs at lr 1e-3."""
    torch.set_num_threads(1)
    net, theta, y = torch_ref.notebook_setup("beta")
    by_y = torch_ref.group_by_y(theta, y)
    tensors = {v: torch.tensor(t, dtype=torch.float32).view(-1, 1) for v, t in by_y.items() if len(t) >= 2}
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(51):
        value = torch_ref.notebook_loss(net, by_y, 100, tensors=tensors)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    return init_state, theta, y, np.array(losses)


def test_notebook_loop_reproduces_the_printed_losses(notebook_run):
    losses = notebook_run[3]
    for epoch, printed in NOTEBOOK_BETA.items():
        np.testing.assert_allclose(losses[epoch], printed, rtol=1e-3)
    assert round(losses[0], 4) == NOTEBOOK_BETA[0] and round(losses[50], 4) == NOTEBOOK_BETA[50]


def test_jax_path_follows_the_notebook_for_50_epochs(notebook_run):
    init_state, theta, y, torch_losses = notebook_run
    graphdef, template = model.init(jax.random.key(0), 8)
    params = torch_ref.torch_to_flax(init_state, template)
    data = to_data(buckets.bucket_packed(theta, y), 100)
    opt = optax.adam(1e-3)
    step = jax.jit(make_step(loss_fn("packed", graphdef), opt))
    state, losses = (params, opt.init(params)), []
    for _ in range(51):
        p, o, value = step(*state, data)
        state = (p, o)
        losses.append(float(value))
    np.testing.assert_allclose(losses[0], NOTEBOOK_BETA[0], rtol=1e-5)
    np.testing.assert_allclose(losses, torch_losses[:51], rtol=1e-3)


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch_ref, "torch", None)
    with pytest.raises(ImportError, match="pip install torch==2.13.0"):
        torch_ref.require_torch()


def test_full_covariance_loss_and_gradients_match_torch_mixture_same_family():
    """D = 2: the fused kernel against ``MixtureSameFamily(MultivariateNormal)`` (float32, rtol 1e-5)."""
    from mdnjax.kernels import full

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 3000)
    theta = (rng.normal(size=(3000, 2)) + y[:, None] * 0.4).astype(np.float32)
    b = layout.bucket(theta, y, width=128)
    d = layout.to_data(b, (0.0, 1.0), block=4096, weighting="per-y")
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    means = (rng.normal(size=(5, 4, 2)) + 0.4 * np.arange(5)[:, None, None]).astype(np.float32)
    scales = (rng.normal(size=(5, 4, 3)) * 0.4).astype(np.float32)
    value, grads = jax.jit(jax.value_and_grad(full.nll, argnums=(0, 1, 2)))(
        *(jnp.asarray(a) for a in (logits, means, scales)), d
    )
    tensors = [torch.tensor(a, requires_grad=True) for a in (logits, means, scales)]
    groups = [torch.tensor(theta[y == v]) for v in np.asarray(b.y_values)]
    expected = torch_ref.mvn_mixture_loss(groups, *tensors)
    expected.backward()
    np.testing.assert_allclose(float(value), float(expected.detach()), rtol=1e-5)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-5, atol=1e-6 * float(t.grad.abs().max()))
