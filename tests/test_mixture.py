import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from mdnjax import mixture

LOGITS = jnp.array([0.3, -1.0, 0.5])
MEANS = jnp.array([-1.0, 0.5, 2.0])
LOG_VARS = jnp.array([-0.5, 0.2, -1.5])


def _scipy_pdf(x):
    w = np.exp(np.asarray(LOGITS, np.float64))
    w /= w.sum()
    sd = np.exp(0.5 * np.asarray(LOG_VARS, np.float64))
    return sum(w[k] * stats.norm.pdf(x, float(MEANS[k]), sd[k]) for k in range(3))


def test_log_prob_and_cdf_match_scipy():
    x = np.linspace(-4, 5, 101)
    np.testing.assert_allclose(
        np.exp(mixture.log_prob(jnp.asarray(x, jnp.float32), LOGITS, MEANS, LOG_VARS)),
        _scipy_pdf(x),
        rtol=2e-5,
        atol=1e-7,
    )
    cdf = np.array([integrate.quad(_scipy_pdf, -np.inf, v)[0] for v in x[::10]])
    np.testing.assert_allclose(mixture.cdf(jnp.asarray(x[::10], jnp.float32), LOGITS, MEANS, LOG_VARS), cdf, atol=1e-6)


def test_moments_and_samples_agree():
    m = integrate.quad(lambda v: v * _scipy_pdf(v), -np.inf, np.inf)[0]
    v = integrate.quad(lambda t: (t - m) ** 2 * _scipy_pdf(t), -np.inf, np.inf)[0]
    np.testing.assert_allclose(mixture.mean(LOGITS, MEANS, LOG_VARS), m, rtol=1e-5)
    np.testing.assert_allclose(mixture.std(LOGITS, MEANS, LOG_VARS), np.sqrt(v), rtol=1e-5)
    s = mixture.sample(jax.random.key(0), LOGITS, MEANS, LOG_VARS, 200_000)
    assert s.shape == (200_000,)
    assert abs(float(s.mean()) - m) < 5 * np.sqrt(v / s.size)
    w = np.exp(np.asarray(LOGITS, np.float64))
    w /= w.sum()
    sd = np.exp(0.5 * np.asarray(LOG_VARS, np.float64))
    cdf = lambda t: sum(w[k] * stats.norm.cdf(t, float(MEANS[k]), sd[k]) for k in range(3))  # noqa: E731
    assert stats.kstest(np.asarray(s[:20000], np.float64), cdf).pvalue > 1e-3


def test_the_full_covariance_density_equals_scipy_at_ten_dimensions(x64):
    """Every entry of a 10-D precision factor (the case the dense-matmul form was written for)."""
    rng = np.random.default_rng(5)
    d, k = 10, 3
    theta = rng.normal(size=(4, d))
    means, scales = rng.normal(size=(4, k, d)), 0.3 * rng.normal(size=(4, k, mixture.num_scales(d)))
    logits = rng.normal(size=(4, k))
    got = np.asarray(mixture.mvn_log_prob(theta, logits, means, scales))
    covs = np.asarray(mixture.mvn_covariances(scales))
    log_w = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    comp = [[stats.multivariate_normal(means[i, j], covs[i, j]).logpdf(theta[i]) for j in range(k)] for i in range(4)]
    want = np.log(np.exp(log_w + np.array(comp)).sum(-1))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
