"""Sequential rounds (``mdnjax.train.rounds``): the truncation against a direct float64
computation, the widened-q fallback against plain rejection, the posterior at y_o against the
closed form, resume between rounds, and the command line's run folder."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import jax
import numpy as np
import pytest
from scipy import stats

import mdnjax
from mdnjax import cli
from mdnjax.train import rounds, truncation

BETA_CONFIG = {"samples": 20_000, "epochs": 300, "seed": 3}

pytestmark = pytest.mark.filterwarnings("ignore::mdnjax.RareObservationWarning")


@pytest.fixture(scope="module")
def beta_post():
    """A posterior of the beta task and the task (one small amortized fit for the module)."""
    task = mdnjax.tasks.from_name("beta")
    return mdnjax.fit(task, BETA_CONFIG).posterior, task


def _log_q_float64(post, y_o, theta):
    """log q(θ | y_o) from the mixture's parameters in float64 with scipy (fitting space + Jacobian)."""
    logits, means, log_vars = (np.asarray(a, np.float64) for a in post.mixture(y_o))
    b = post.spec.bounds[0]
    u = b.forward(theta)
    w = np.exp(logits - np.logaddexp.reduce(logits))
    comp = stats.norm.logpdf(u[:, None], means, np.exp(0.5 * log_vars)) + np.log(w)
    return np.logaddexp.reduce(comp, axis=1) + b.log_abs_det_jacobian(theta)


def test_truncation_keeps_exactly_the_draws_above_the_threshold(beta_post):
    post, task = beta_post
    params = post.mixture(30)
    tau = truncation.threshold(post, params, jax.random.key(0), epsilon=1e-3)
    theta = task.sample_prior(np.random.default_rng(1), truncation.PILOT)
    direct = _log_q_float64(post, 30, theta)
    kept, proposals, found = truncation._prior_rejection(task, post, params, tau, 1000, np.random.default_rng(1), 0.99)
    assert kept is None and proposals == truncation.PILOT  # below the floor: stopped after the first batch
    ours = truncation.log_q(post, params, theta)
    clear = np.abs(direct - tau) > 1e-3  # float32 against float64 near τ
    assert clear.mean() > 0.99
    np.testing.assert_allclose(ours[np.isfinite(direct)], direct[np.isfinite(direct)], atol=2e-3)
    assert found == int(np.sum(ours >= tau))
    assert np.array_equal((ours >= tau)[clear], (direct >= tau)[clear])
    assert 0 < found < truncation.PILOT


def test_threshold_leaves_epsilon_of_q_outside(beta_post):
    post, _ = beta_post
    params = post.mixture(40)
    tau = truncation.threshold(post, params, jax.random.key(1), epsilon=0.1, draws=50_000)
    fresh = truncation.draw_q(post, params, jax.random.key(2), 50_000)
    outside = float(np.mean(truncation.log_q(post, params, fresh) < tau))
    assert abs(outside - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 50_000) + 0.004  # binomial sd + the estimate's own


def test_the_acceptance_is_the_share_of_prior_draws_in_the_region(beta_post):
    """The reported acceptance is the rate of the region under the prior (a fresh Monte Carlo
    estimate), not the share of the proposals a round happened to need."""
    post, task = beta_post
    theta, _, info = truncation.propose(task, post, 30, 1000, np.random.default_rng(0), jax.random.key(0))
    assert info["method"] == "truncated prior" and info["proposals"] == truncation.PILOT  # one batch was plenty
    fresh = task.sample_prior(np.random.default_rng(9), 200_000)
    rate = float(np.mean(truncation.log_q(post, post.mixture(30), fresh) >= info["threshold"]))
    assert rate > 0.05  # 1,000 of 100,000 proposals would say 0.01
    assert abs(info["acceptance"] - rate) < 4 * math.sqrt(rate * (1 - rate) * (1 / 200_000 + 1 / truncation.PILOT))


def test_widened_fallback_draws_the_truncated_prior(beta_post):
    """Below the floor, rejection from the widened q: the same distribution as the prior kept in
    the region (two-sample KS against plain rejection)."""
    post, task = beta_post
    params = post.mixture(30)
    tau = truncation.threshold(post, params, jax.random.key(3))
    n = 20_000
    theta, _, info = truncation.propose(task, post, 30, n, np.random.default_rng(4), jax.random.key(3), floor=0.9)
    assert info["method"] == "widened q" and theta.shape == (n,)
    assert np.all(truncation.log_q(post, params, theta) >= info["threshold"] - 1e-6)
    plain, _, _ = truncation._prior_rejection(task, post, params, tau, n, np.random.default_rng(6), 1e-9)
    assert stats.ks_2samp(theta, plain).pvalue > 1e-3


def test_below_the_floor_without_log_prior_stops_in_one_line(beta_post):
    post, beta = beta_post
    task = mdnjax.Task(
        "no-density",
        beta.simulate,
        support=[(0.0, 1.0)],
        sample_prior=beta.sample_prior,
        simulate_at=beta.simulate_at,
    )
    with pytest.raises(truncation.RoundError, match="no log_prior for the widened-q fallback"):
        truncation.propose(task, post, 95, 1000, np.random.default_rng(0), jax.random.key(0), floor=0.5)


def test_a_joint_only_task_keeps_joint_draws_in_the_region(beta_post):
    post, beta = beta_post
    task = mdnjax.Task("joint", beta.simulate, support=[(0.0, 1.0)])
    theta, y, info = truncation.propose(task, post, 70, 2000, np.random.default_rng(0), jax.random.key(0), floor=1e-4)
    assert info["method"] == "joint rejection" and theta.shape == y.shape == (2000,)
    assert np.all(truncation.log_q(post, post.mixture(70), theta) >= info["threshold"])
    assert info["proposals"] > 2000


def test_rounds_at_a_rare_y_beat_the_first_round_against_the_closed_form():
    """Beta(2, 5), y_o = 95 (about 7 in 10^6 prior draws): KL to the exact posterior after two
    rounds is well below the first round's and below amortized training on the same budget."""
    from mdnjax import metrics

    task = mdnjax.tasks.from_name("beta")
    kls = []

    def kl(record, result, theta, y):
        post = result.posterior
        kls.append(metrics.compare(task, 95, *post.mixture(95), space=post.spec.space)["kl"])

    config = {"samples": 100_000, "seed": 3, "epochs": 2000}  # given: rounds would train 2x the recipe's 4,000
    out = rounds.fit_rounds(task, config, observed=95, rounds=2, on_round=kl)
    assert [r["method"] for r in out.rounds] == ["prior", "truncated prior"]
    assert out.rounds[1]["acceptance"] < 0.05  # the region is a small part of the prior
    amortized = mdnjax.fit(task, config).posterior
    kl_amortized = metrics.compare(task, 95, *amortized.mixture(95), space=amortized.spec.space)["kl"]
    assert kls[1] < kls[0] / 2 and kls[1] < kl_amortized / 2, (kls, kl_amortized)
    assert out.result.config.epochs == 2000  # given epochs are kept
    assert np.all(np.isfinite(out.result.losses))


def _normal_task():
    """θ ~ N(0, 1), y ~ N(θ, 0.5²): a continuous y with θ | y ~ N(0.8 y, 0.2) in closed form."""

    def sample_prior(rng, n):
        return rng.normal(size=n)

    def simulate_at(rng, theta):
        return theta + 0.5 * rng.normal(size=np.shape(theta))

    def simulate(rng, n):
        theta = sample_prior(rng, n)
        return theta, simulate_at(rng, theta)

    return mdnjax.Task(
        "normal",
        simulate,
        support=[(-np.inf, np.inf)],
        log_prior=lambda t: stats.norm.logpdf(t),
        sample_prior=sample_prior,
        simulate_at=simulate_at,
    )


def test_continuous_rounds_resume_exactly_where_they_stopped():
    """Per-sample path: two rounds then a third from their saved state give the third round of an
    uninterrupted three-round run, bitwise."""
    task = _normal_task()
    config = {"samples": 9_000, "epochs": 15, "seed": 1}
    whole = rounds.fit_rounds(task, config, observed=2.5, rounds=3)
    first = rounds.fit_rounds(task, config, observed=2.5, rounds=2, per_round=3_000)
    assert first.result.config.layout == "per-sample"
    previous = [
        (first.theta[i * 3000 : (i + 1) * 3000], first.y[i * 3000 : (i + 1) * 3000], r)
        for i, r in enumerate(first.rounds)
    ]
    rest = rounds.fit_rounds(task, config, observed=2.5, rounds=3, previous=previous, posterior=first.result.posterior)
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(rest.y, whole.y)
    assert rest.rounds[2]["threshold"] == whole.rounds[2]["threshold"]
    mean = rest.rounds[2]["at_observed"]["mean"][0]
    assert abs(mean - 0.8 * 2.5) < 0.1  # the closed form, loosely: 15 passes of 9,000 pairs


class _Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _cli(capsys, *args):
    """``python -m mdnjax.train ARGS`` in this process (the real command's process is tested in
    test_cli.py): exit code and what it printed."""
    capsys.readouterr()
    code = cli.main(list(args))
    printed = capsys.readouterr()
    return _Ran(code, printed.out, printed.err)


def test_cli_rounds_write_each_round_and_resume_for_more(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--prior", "beta", "--observed", "90", "--samples", "8000", "--epochs", "40", "--no-plots"]
    first = _cli(capsys, *small, "--rounds", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "round 2: 4,000 simulations (truncated prior, acceptance" in first.stdout
    rec = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rec["rounds"]] == [1, 2] and rec["observed"] == 90
    one = (out / "rounds" / "01" / "shards" / "00000.theta.npy").read_bytes()
    again = _cli(capsys, "--resume", str(out), "--rounds", "3")
    assert again.returncode == 0, again.stderr
    assert (out / "rounds" / "03" / "round.json").is_file()
    assert (out / "rounds" / "01" / "shards" / "00000.theta.npy").read_bytes() == one
    assert json.loads((out / "metrics.json").read_text())["observed"]["y"] == [90]
    done = _cli(capsys, "--resume", str(out))
    assert done.returncode == 2 and "already did its 3 rounds" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rounds", "2"], "--rounds needs --observed"),
        (["--epsilon", "0.01"], "--epsilon set(s) sequential rounds: add --rounds R"),
        (["--rounds", "2", "--observed", "30", "--epsilon", "2"], "--epsilon must lie strictly between 0 and 1"),
    ],
)
def test_cli_rounds_refuse_bad_flags_in_one_line(tmp_path, capsys, args, message):
    res = _cli(capsys, "--prior", "beta", "--samples", "1000", *args, "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_round_one_may_come_from_stored_simulations():
    task = _normal_task()
    theta, y = task.simulate(np.random.default_rng(7), 2_000)
    out = rounds.fit_rounds(
        task, {"epochs": 5, "seed": 1}, observed=1.0, rounds=1, data=mdnjax.datasets.Arrays(theta, y)
    )
    assert out.rounds[0]["method"] == "data" and out.rounds[0]["simulations"] == 2_000
    np.testing.assert_array_equal(out.theta, theta)


def test_a_simulator_failing_in_a_later_round_keeps_the_rounds_done(tmp_path, capsys):
    """The user's simulate_at raises in round 2: one line naming it with the user's frames, exit 1,
    round 1 and the posterior it trained stay in the folder."""
    spec = tmp_path / "flaky.py"
    spec.write_text(
        "import numpy as np\nimport mdnjax\n\n\n"
        "def sample_prior(rng, n):\n    return rng.beta(2.0, 5.0, size=n)\n\n\n"
        "def simulate_at(rng, theta):\n    raise RuntimeError('the cluster is down')\n\n\n"
        "def simulate(rng, n):\n    theta = sample_prior(rng, n)\n    return theta, rng.binomial(100, theta)\n\n\n"
        "TASK = mdnjax.Task('flaky', simulate, support=[(0.0, 1.0)], sample_prior=sample_prior,\n"
        "                   simulate_at=simulate_at, log_prior=lambda t: np.log(30 * t * (1 - t) ** 4))\n"
    )
    out = tmp_path / "run"
    args = ["--task", f"{spec}:TASK", "--observed", "60", "--rounds", "2", "--samples", "6000", "--epochs", "30"]
    res = _cli(capsys, *args, "--no-plots", "--out", str(out))
    assert res.returncode == 1, res.stderr
    assert "simulate_at" in res.stderr and "the cluster is down" in res.stderr and 'flaky.py", line' in res.stderr
    assert (out / "rounds" / "01" / "round.json").is_file() and (out / "posterior.npz").is_file()
    assert not (out / "rounds" / "02").exists()
