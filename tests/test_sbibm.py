"""The sbibm tasks against their definitions, and C2ST against its definition (and against sbibm's
own code and data where they are on this machine)."""

import importlib.util
import math
import os

import numpy as np
import pytest

from mdnjax import tasks
from mdnjax.tasks import sbibm

HAVE_FILES = bool(os.environ.get("MDNJAX_SBIBM")) or importlib.util.find_spec("sbibm") is not None
N = 200_000


def _draws(name, n=N, seed=0):
    return tasks.from_name(name).simulate(np.random.default_rng(seed), n)


@pytest.mark.parametrize("name", list(sbibm.TASKS))
def test_every_sbibm_task_simulates_its_declared_shapes_inside_its_support(name):
    task = tasks.from_name(name)
    theta, y = task.simulate(np.random.default_rng(1), 500)
    assert theta.shape == (500, len(task.support)) and y.shape == (500, task.y_shape[0])
    assert y.dtype == np.float64 and np.isfinite(y).all()
    for d, b in enumerate(task.support):
        assert np.all(b.contains(theta[:, d]))


def test_gaussian_linear_moments():
    theta, y = _draws("gaussian_linear")
    np.testing.assert_allclose(theta.var(0), 0.1, rtol=0.02)  # sbibm's "scale" 0.1 is a variance
    np.testing.assert_allclose((y - theta).var(0), 0.1, rtol=0.02)
    np.testing.assert_allclose(np.corrcoef(theta[:, 0], y[:, 0])[0, 1], math.sqrt(0.5), atol=0.01)
    theta, y = _draws("gaussian_linear_uniform")
    np.testing.assert_allclose(theta.var(0), 1 / 3, rtol=0.02)
    np.testing.assert_allclose((y - theta).var(0), 0.1, rtol=0.02)


def test_gaussian_mixture_is_half_broad_half_narrow():
    theta, y = _draws("gaussian_mixture")
    r = np.abs(y - theta).max(axis=1)
    # P(|z| < 0.5 in both coordinates): narrow component ~1, broad (0.383)^2
    np.testing.assert_allclose(
        np.mean(r < 0.5), 0.5 * 1.0 + 0.5 * (2 * 0.5 * math.erf(0.5 / math.sqrt(2))) ** 2, atol=0.005
    )


def test_two_moons_lies_on_its_crescent():
    theta, y = _draws("two_moons")
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    z0 = c * theta[:, 0] - s * theta[:, 1]
    z1 = s * theta[:, 0] + c * theta[:, 1]
    p = y - np.stack([-np.abs(z0), z1], axis=1)
    r = np.hypot(p[:, 0] - 0.25, p[:, 1])
    np.testing.assert_allclose([r.mean(), r.std()], [0.1, 0.01], rtol=0.01)
    assert np.all(p[:, 0] >= 0.25 - 1e-12)  # a ∈ (−π/2, π/2): the right half circle


def test_slcp_draws_four_gaussians_of_its_parameters():
    theta, y = _draws("slcp", 100_000)
    x = y.reshape(-1, 4, 2)
    resid = x - theta[:, None, :2]
    sd = np.stack([theta[:, 2] ** 2, theta[:, 3] ** 2], axis=1)
    z = resid / np.sqrt(sd[:, None, :] ** 2 + 1e-6)
    np.testing.assert_allclose(z.reshape(-1, 2).std(0), 1.0, rtol=0.01)
    rho = np.tanh(theta[:, 4])
    np.testing.assert_allclose(np.mean(z[:, :, 0] * z[:, :, 1], axis=1).mean(), rho.mean(), atol=0.01)
    theta_d, y_d = _draws("slcp_distractors", 50_000)
    perm = sbibm._constants("slcp_distractors")["permutation"]
    signal = np.argsort(perm)[:8]  # where the 8 slcp numbers went
    x = y_d[:, signal].reshape(-1, 4, 2) - theta_d[:, None, :2]
    sd = np.stack([theta_d[:, 2] ** 2, theta_d[:, 3] ** 2], axis=1)
    np.testing.assert_allclose((x / np.sqrt(sd[:, None, :] ** 2 + 1e-6)).reshape(-1, 2).std(0), 1.0, rtol=0.02)


def test_bernoulli_glm_summaries_are_the_spike_count_and_the_stimulus_correlation():
    task = tasks.from_name("bernoulli_glm")
    raw = tasks.from_name("bernoulli_glm_raw")
    theta, y = task.simulate(np.random.default_rng(3), 2_000)
    _, spikes = raw.simulate(np.random.default_rng(3), 2_000)  # the same draws: the same spikes
    np.testing.assert_array_equal(y[:, 0], spikes.sum(axis=1))
    w = sbibm._constants("bernoulli_glm")["stimulus"]
    # conv1d(spikes, w, padding=8)[-9:], written out: output j = Σ_t spikes[t + j] w[t]
    direct = np.array([[np.dot(s[j:], w[: 100 - j]) for j in range(9)] for s in spikes[:50]])
    np.testing.assert_allclose(y[:50, 1:], direct, rtol=1e-12, atol=1e-12)
    # the prior: precision 0.5 on the offset
    np.testing.assert_allclose(theta[:, 0].var(), 2.0, rtol=0.1)


@pytest.mark.torch
def test_bernoulli_glm_summaries_equal_torch_conv1d():
    torch = pytest.importorskip("torch")
    _, spikes = tasks.from_name("bernoulli_glm_raw").simulate(np.random.default_rng(0), 20)
    _, y = tasks.from_name("bernoulli_glm").simulate(np.random.default_rng(0), 20)
    w = torch.tensor(sbibm._constants("bernoulli_glm")["stimulus"])
    sta = [
        torch.nn.functional.conv1d(torch.tensor(s).reshape(1, 1, -1), w.reshape(1, 1, -1), padding=8).squeeze()[-9:]
        for s in spikes
    ]
    np.testing.assert_allclose(y[:, 1:], torch.stack(sta).numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not HAVE_FILES, reason="the sbibm data files are not on this machine")
def test_the_reference_draws_of_gaussian_linear_match_its_closed_form_posterior():
    task = tasks.from_name("gaussian_linear")
    for i in (1, 7):
        y_o, ref = sbibm.observation(task, i), sbibm.reference(task, i)
        assert ref.shape == (10_000, 10) and y_o.shape == (10,)
        np.testing.assert_allclose(ref.mean(0), y_o / 2, atol=4 * math.sqrt(0.05 / 10_000))  # N(y/2, 0.05 I)
        np.testing.assert_allclose(ref.var(0), 0.05, rtol=0.06)


def test_missing_sbibm_files_are_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MDNJAX_SBIBM", str(tmp_path / "nowhere"))
    with pytest.raises(OSError):
        sbibm.observation(tasks.from_name("slcp"), 1)
    monkeypatch.delenv("MDNJAX_SBIBM")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(sbibm.MissingFiles, match="pip install sbibm"):
        sbibm.reference(tasks.from_name("slcp"), 1)


# ----------------------------------------------------------------- C2ST


def test_c2st_is_half_for_one_distribution_one_for_disjoint_ones_and_affine_invariant():
    pytest.importorskip("sklearn")
    from mdnjax.c2st import c2st

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
    same = c2st(a, b)
    assert abs(same - 0.5) < 0.05
    assert c2st(a, b + 20.0) == 1.0
    shift, scale = np.array([5.0, -3.0]), np.array([100.0, 0.01])
    assert c2st(a * scale + shift, b * scale + shift) == pytest.approx(same, abs=1e-6)  # z-scored by the reference
    with pytest.raises(ValueError, match="coordinates"):
        c2st(a, b[:, :1])


def test_c2st_equals_sbibms_own_function_where_installed():
    pytest.importorskip("sklearn")
    metrics = pytest.importorskip("sbibm.metrics")
    torch = pytest.importorskip("torch")
    from mdnjax.c2st import c2st

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 3)), rng.normal(0.3, 1.0, size=(2000, 3))
    theirs = float(metrics.c2st(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))[0])
    assert c2st(a, b) == pytest.approx(theirs, abs=0.003)
