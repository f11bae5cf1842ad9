"""The sbibm benchmark's tasks that simulate without Julia (Lueckmann et al. 2021), written here
from their definitions in sbibm 1.1.0 (NumPy simulators; the constants sbibm ships as PyTorch
files are in ``sbibm_files/`` as ``.npz``).

Observations 1–10 and their 10,000 reference posterior draws come from the data files of the
sbibm distribution (``reference(task, i)``): an installed ``sbibm`` package (found without
importing it) or a downloaded wheel (``MDNJAX_SBIBM``, a path to the ``.whl``).

===========================  ====  ====  ==============================================
task                           D     M   model
===========================  ====  ====  ==============================================
two_moons                      2     2   θ ~ U(−1, 1)²; a crescent around ±|θ rotated|
slcp                           5     8   θ ~ U(−3, 3)⁵; 4 draws of a 2-D Gaussian of θ
slcp_distractors               5   100   slcp's 8 numbers among 92 Student-t distractors
gaussian_linear               10    10   θ ~ N(0, 0.1 I), y ~ N(θ, 0.1 I)
gaussian_linear_uniform       10    10   θ ~ U(−1, 1)¹⁰, y ~ N(θ, 0.1 I)
gaussian_mixture               2     2   θ ~ U(−10, 10)², y ~ ½N(θ, I) + ½N(θ, 0.01 I)
bernoulli_glm                 10    10   GLM spike train: spike count and 9 STA features
bernoulli_glm_raw             10   100   the same, its raw 100 binary outputs
===========================  ====  ====  ==============================================

Example:
    >>> import numpy as np
    >>> theta, y = TwoMoons().simulate(np.random.default_rng(0), 4)
    >>> theta.shape, y.shape, y.dtype
    ((4, 2), (4, 2), dtype('float64'))
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from mdnjax.task import Task, as_bounds

FILES = Path(__file__).parent / "sbibm_files"
OBSERVATIONS = range(1, 11)


class _Sbibm(Task):
    """A sbibm task: a prior (``sample_prior``, ``log_prior``) and a vectorised NumPy simulator at
    given θ (``simulate_at``); float observations."""

    y_kind = "continuous"
    sbibm_name = ""  # the folder of the task's files in sbibm
    observation_file = "observation.csv"

    def __init__(self):  # a fixed model: nothing to set
        pass

    def simulate(self, rng: np.random.Generator, n: int):
        theta = self.sample_prior(rng, n)
        return theta, self.simulate_at(rng, theta)

    def log_prior(self, theta):
        """log p(θ) of a uniform prior on the support box (−inf outside); θ (..., D)."""
        theta = np.asarray(theta, np.float64)
        lo, hi = (np.array([getattr(b, side) for b in self.support]) for side in ("low", "high"))
        inside = np.all((theta > lo) & (theta < hi), axis=-1)
        return np.where(inside, -np.sum(np.log(hi - lo)), -np.inf)

    def describe(self) -> dict:
        return {"name": self.name}


class TwoMoons(_Sbibm):
    name = sbibm_name = "two_moons"
    support = as_bounds([(-1.0, 1.0)] * 2)
    y_shape = (2,)

    def sample_prior(self, rng, n):
        return rng.uniform(-1.0, 1.0, size=(n, 2))

    def simulate_at(self, rng, theta):
        n = theta.shape[0]
        a = rng.uniform(-math.pi / 2, math.pi / 2, size=n)
        r = rng.normal(0.1, 0.01, size=n)
        p = np.stack([np.cos(a) * r + 0.25, np.sin(a) * r], axis=1)
        c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
        z0 = c * theta[:, 0] - s * theta[:, 1]
        z1 = s * theta[:, 0] + c * theta[:, 1]
        return p + np.stack([-np.abs(z0), z1], axis=1)


class GaussianLinear(_Sbibm):
    name = sbibm_name = "gaussian_linear"
    support = as_bounds([(-math.inf, math.inf)] * 10)
    y_shape = (10,)
    variance = 0.1  # sbibm's prior_scale and simulator_scale enter as variances

    def sample_prior(self, rng, n):
        return rng.normal(0.0, math.sqrt(self.variance), size=(n, 10))

    def log_prior(self, theta):
        theta = np.asarray(theta, np.float64)
        return -0.5 * np.sum(theta**2, axis=-1) / self.variance - 5.0 * math.log(2 * math.pi * self.variance)

    def simulate_at(self, rng, theta):
        return theta + rng.normal(0.0, math.sqrt(self.variance), size=theta.shape)


class GaussianLinearUniform(GaussianLinear):
    name = sbibm_name = "gaussian_linear_uniform"
    support = as_bounds([(-1.0, 1.0)] * 10)

    def sample_prior(self, rng, n):
        return rng.uniform(-1.0, 1.0, size=(n, 10))

    log_prior = _Sbibm.log_prior


class GaussianMixture(_Sbibm):
    name = sbibm_name = "gaussian_mixture"
    support = as_bounds([(-10.0, 10.0)] * 2)
    y_shape = (2,)

    def sample_prior(self, rng, n):
        return rng.uniform(-10.0, 10.0, size=(n, 2))

    def simulate_at(self, rng, theta):
        scale = np.where(rng.random(theta.shape[0]) < 0.5, 1.0, 0.1)[:, None]
        return theta + scale * rng.normal(size=theta.shape)


class SLCP(_Sbibm):
    name = sbibm_name = "slcp"
    support = as_bounds([(-3.0, 3.0)] * 5)
    y_shape = (8,)

    def sample_prior(self, rng, n):
        return rng.uniform(-3.0, 3.0, size=(n, 5))

    def simulate_at(self, rng, theta):
        n = theta.shape[0]
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
        eps = 1e-6
        cov = np.empty((n, 2, 2))
        cov[:, 0, 0] = s1**2 + eps
        cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
        cov[:, 1, 1] = s2**2 + eps
        chol = np.linalg.cholesky(cov)  # (n, 2, 2)
        z = rng.normal(size=(n, 4, 2))
        x = theta[:, None, :2] + np.einsum("nij,nkj->nki", chol, z)
        return x.reshape(n, 8)


class SLCPDistractors(SLCP):
    name, sbibm_name = "slcp_distractors", "slcp"
    y_shape = (100,)
    observation_file = "observation_distractors.csv"

    def simulate_at(self, rng, theta):
        data = super().simulate_at(rng, theta)
        g = _constants("slcp_distractors")
        n = theta.shape[0]
        k = rng.choice(g["probs"].size, size=n, p=g["probs"] / g["probs"].sum())
        z = rng.normal(size=(n, g["loc"].shape[1]))
        t = z / np.sqrt(rng.chisquare(g["df"][k]) / g["df"][k])[:, None]  # multivariate Student t
        noise = g["loc"][k]
        for c in np.unique(k):  # by component: never an (n, 92, 92) stack of its factors
            rows = k == c
            noise[rows] += t[rows] @ g["scale_tril"][c].T
        return np.concatenate([data, noise], axis=1)[:, g["permutation"]]


class BernoulliGLM(_Sbibm):
    name = sbibm_name = "bernoulli_glm"
    support = as_bounds([(-math.inf, math.inf)] * 10)
    y_shape = (10,)
    raw = False

    @staticmethod
    def prior_precision() -> np.ndarray:
        m = 9
        d = np.eye(m) - np.eye(m, k=-1)
        f = d @ d + np.diag(np.arange(m) / m) ** 0.5
        precision = np.zeros((10, 10))
        precision[0, 0] = 0.5
        precision[1:, 1:] = f.T @ f
        return precision

    def sample_prior(self, rng, n):
        cov = np.linalg.inv(self.prior_precision())
        return rng.multivariate_normal(np.zeros(10), cov, size=n, method="cholesky")

    def log_prior(self, theta):
        theta = np.asarray(theta, np.float64)
        precision = self.prior_precision()
        logdet = np.linalg.slogdet(precision)[1]
        quad = np.einsum("...i,ij,...j->...", theta, precision, theta)
        return -0.5 * quad + 0.5 * logdet - 5.0 * math.log(2 * math.pi)

    def simulate_at(self, rng, theta):
        g = _constants("bernoulli_glm")
        z = 1.0 / (1.0 + np.exp(-(theta @ g["design_matrix"].T)))  # (n, 100)
        spikes = (rng.random(z.shape) < z).astype(np.float64)
        if self.raw:
            return spikes
        return np.concatenate([spikes.sum(axis=1, keepdims=True), spikes @ _sta_matrix(g["stimulus"])], axis=1)


class BernoulliGLMRaw(BernoulliGLM):
    name = "bernoulli_glm_raw"
    y_shape = (100,)
    raw = True
    observation_file = "observation_raw.csv"


def _sta_matrix(stimulus: np.ndarray) -> np.ndarray:
    """S (100, 9) with spikes @ S = the last 9 outputs of sbibm's ``conv1d(spikes, stimulus,
    padding=8)``: output j sums spikes[t] · stimulus[t − j] over t ≥ j."""
    length = stimulus.size
    s = np.zeros((length, 9))
    for j in range(9):
        s[j:, j] = stimulus[: length - j]
    return s


@functools.cache
def _constants(name: str) -> dict:
    with np.load(FILES / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


TASKS = {
    "two_moons": TwoMoons,
    "slcp": SLCP,
    "slcp_distractors": SLCPDistractors,
    "gaussian_linear": GaussianLinear,
    "gaussian_linear_uniform": GaussianLinearUniform,
    "gaussian_mixture": GaussianMixture,
    "bernoulli_glm": BernoulliGLM,
    "bernoulli_glm_raw": BernoulliGLMRaw,
}


# ----------------------------------------------------------------- the sbibm data files


class MissingFiles(RuntimeError):
    """The sbibm data files are not on this machine."""


def _reader():
    """``read(relative_path) -> bytes`` over the sbibm distribution: ``MDNJAX_SBIBM`` (a wheel or
    a folder holding ``sbibm/``), else an installed ``sbibm`` (located, never imported)."""
    given = os.environ.get("MDNJAX_SBIBM")
    if given:
        path = Path(given)
        if path.is_file():
            z = zipfile.ZipFile(path)
            return lambda rel: z.read(f"sbibm/{rel}")
        return lambda rel: (path / "sbibm" / rel).read_bytes()
    spec = importlib.util.find_spec("sbibm")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFiles(
            "the sbibm data files are needed: pip install sbibm, or download its wheel "
            "(pip download sbibm==1.1.0 --no-deps) and set MDNJAX_SBIBM to its path"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    return lambda rel: (root / rel).read_bytes()


def _csv(data: bytes) -> np.ndarray:
    return np.loadtxt(io.StringIO(data.decode()), delimiter=",", skiprows=1, ndmin=2)


def observation(task: _Sbibm, num_observation: int) -> np.ndarray:
    """Observation ``num_observation`` (1–10) of a sbibm task, (M,)."""
    read = _reader()
    rel = f"tasks/{task.sbibm_name}/files/num_observation_{num_observation}/{task.observation_file}"
    return _csv(read(rel))[0]


def reference(task: _Sbibm, num_observation: int) -> np.ndarray:
    """The 10,000 reference posterior draws at observation ``num_observation``, (10000, D)."""
    read = _reader()
    rel = f"tasks/{task.sbibm_name}/files/num_observation_{num_observation}/reference_posterior_samples.csv.bz2"
    return _csv(bz2.decompress(read(rel)))
