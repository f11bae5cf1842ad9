"""The per-sample layout: the layout choice, the loss and gradients against the bucketed reference
objective, early stopping, bitwise resume, embeddings, float y end to end, the CUDA lowering."""

import json
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special, stats

import mdnjax
from mdnjax import batches, cli, embeddings, layout, mixture, model, objective, simulation, tasks
from mdnjax.config import Config, ConfigError
from mdnjax.data import Data
from mdnjax.train import passes

SMALL = dict(samples=3_000, components=3, hidden=(16, 16), batch_size=128, epochs=6, patience=50)


def _normal_task(dim=1, noise=0.5):
    def simulate(rng, n):
        theta = rng.normal(size=(n, dim)) if dim > 1 else rng.normal(size=n)
        return theta, theta + noise * rng.normal(size=theta.shape)

    return mdnjax.Task(f"normal{dim}", simulate, support=[(-np.inf, np.inf)] * dim)


@pytest.fixture(scope="module")
def run():
    """One small per-sample run (D = 2, float y), shared by the tests that read a result."""
    return mdnjax.fit(_normal_task(2), Config(**SMALL))


# ----------------------------------------------------------------- the layout choice


def test_auto_picks_binned_for_repeating_y_and_per_sample_for_thin_or_continuous_y():
    beta = layout.choose(tasks.BetaBinomial(), Config(samples=100_000))
    assert beta.layout == "binned" and beta.min_count == 1 and beta.repeat_share > 0.99
    thin = layout.choose(tasks.ABTest(), Config(samples=4_000))  # 2 counts of 100s: ~2,400 distinct y
    assert thin.layout == "per-sample" and thin.repeat_share < 0.8 and "rarely repeat" in thin.reason
    cont = layout.choose(_normal_task(), Config(samples=1_000))
    assert cont.layout == "per-sample" and "continuous" in cont.reason
    assert layout.choose(tasks.BetaBinomial(), Config(layout="packed")).layout == "packed"


def test_on_auto_no_rare_y_is_dropped_from_the_bucketed_layout():
    task = tasks.GammaPoisson()
    auto = mdnjax.fit(task, Config(samples=20_000, epochs=2))
    binned = mdnjax.fit(task, Config(samples=20_000, epochs=2, layout="binned"))
    assert auto.config.layout == "binned" and auto.report["dropped"] == 0
    assert binned.report["dropped"] > 0  # the named layout keeps its rule: y seen once are left out
    assert auto.report["layout"]["reason"].startswith("observations repeat")


# ----------------------------------------------------------------- the objective


@pytest.mark.parametrize("dim", [1, 2])
def test_the_per_sample_loss_and_gradients_equal_the_bucketed_reference_with_one_pair_per_bucket(dim, x64):
    """Each pair its own bucket (weight 1/N): the reference objective (vmapped logsumexp) must give
    the per-sample loss and its gradients."""
    n, m = 37, 3
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(n, dim)) if dim > 1 else rng.normal(size=n)
    x = rng.normal(size=(n, m))
    graphdef, params = model.init(jax.random.key(1), 4, (8,), dim, m, embeddings.Embedding("mlp", (8,), 5))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    data = Data(
        x=jnp.asarray(x),
        theta=jnp.asarray(theta).reshape((1, n, 1) + ((dim,) if dim > 1 else ())),
        row_count=jnp.ones((1, n), jnp.int32),
        row_y=jnp.arange(n, dtype=jnp.int32).reshape(1, n),
        weight=jnp.full((1, n), 1.0 / n),
    )
    v_ref, g_ref = jax.jit(jax.value_and_grad(lambda p: objective.loss(p, graphdef, data)))(params)
    v, g = jax.jit(jax.value_and_grad(lambda p: objective.sample_nll(p, graphdef, jnp.asarray(x), jnp.asarray(theta))))(
        params
    )
    np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-12)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-10, atol=1e-13)
    # and the value against scipy in float64, component by component
    logits, means, scales = (np.asarray(a) for a in model.apply(graphdef, params, jnp.asarray(x)))
    if dim == 1:
        comp = stats.norm.logpdf(theta[:, None], means, np.exp(0.5 * scales))
    else:
        covs = np.asarray(mixture.mvn_covariances(jnp.asarray(scales), dim))
        comp = np.array(
            [[stats.multivariate_normal(means[i, k], covs[i, k]).logpdf(theta[i]) for k in range(4)] for i in range(n)]
        )
    expected = -np.mean(special.logsumexp(comp + special.log_softmax(logits, axis=-1), axis=-1))
    np.testing.assert_allclose(float(v), expected, rtol=1e-10)


@pytest.mark.parametrize("dim", [1, 3])
def test_the_standardisation_moves_the_mixture_exactly(dim, x64):
    """q_u(u) = q_z((u − shift)/scale) / Π scale for the affine image of the mixture."""
    rng = np.random.default_rng(2)
    k = 4
    shift, scale = rng.normal(size=dim), rng.uniform(0.2, 3.0, size=dim)
    logits = jnp.asarray(rng.normal(size=k))
    if dim == 1:
        means, scales = jnp.asarray(rng.normal(size=k)), jnp.asarray(rng.normal(size=k))
        lp = mixture.log_prob
        z = rng.normal(size=50)
        u = shift[0] + scale[0] * z
    else:
        means, scales = jnp.asarray(rng.normal(size=(k, dim))), jnp.asarray(rng.normal(size=(k, dim * (dim + 1) // 2)))
        lp = mixture.mvn_log_prob
        z = rng.normal(size=(50, dim))
        u = shift + scale * z
    moved = mixture.affine(logits, means, scales, jnp.asarray(shift), jnp.asarray(scale))
    np.testing.assert_allclose(
        np.asarray(lp(jnp.asarray(u), *moved)),
        np.asarray(lp(jnp.asarray(z), logits, means, scales)) - np.log(scale).sum(),
        rtol=1e-10,
    )


# ----------------------------------------------------------------- training


def test_early_stopping_keeps_the_best_validation_parameters():
    task = _normal_task(1)
    result = mdnjax.fit(task, Config(**{**SMALL, "epochs": 200, "patience": 2, "lr": 3e-2}))
    assert result.early_stopped_at is not None and result.early_stopped_at < 200
    assert result.best_epoch == int(np.argmin(result.validation)) + 1
    assert result.early_stopped_at - result.best_epoch == 2
    chex.assert_trees_all_equal(result.posterior.params, result.state.best_params)
    # the posterior's own validation NLL (fitting space) is the best one recorded
    theta, y = result.heldout
    lp = np.asarray(result.posterior.log_prob(theta, y), np.float64)
    np.testing.assert_allclose(-lp.mean(), np.min(result.validation), rtol=1e-4)


def test_the_plateau_schedule_halves_the_step_after_each_plateau_of_the_validation_loss():
    result = mdnjax.fit(_normal_task(1), Config(**{**SMALL, "epochs": 60, "patience": 8, "schedule": "plateau"}))
    best, since, scale = np.inf, 0, 1.0  # the rule, replayed on the recorded validation losses
    for v in result.validation:
        since = 0 if v < best else since + 1
        best = min(best, v)
        scale *= 0.5 if since and since % 2 == 0 else 1.0
    assert float(result.state.lr_scale) == scale < 1.0


def test_the_moving_average_follows_every_step_and_is_what_is_validated():
    import optax

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(40, 3)), np.array([0.5, -1.0, 2.0])
    theta = (x @ w + 0.1 * rng.normal(size=40))[:, None]
    x[12] = np.nan  # batch 3 (rows 12..15) gives a non-finite loss: that step is skipped
    idx = np.arange(40).reshape(10, 4)
    loss = lambda p, xb, tb: jnp.mean((xb @ p - tb[:, 0]) ** 2)  # noqa: E731
    opt, p0 = optax.sgd(0.05, momentum=0.5), np.zeros(3)
    ema = passes.decay(1.0, 10)  # a time constant of one pass of 10 steps
    assert ema == 0.9
    state = passes.state_of(jnp.asarray(p0, jnp.float32), opt, 1.0)
    stepped, values = passes.scan_steps(loss, opt, state, jnp.asarray(x, jnp.float32), jnp.asarray(theta), idx, ema)
    p, a, m = p0.copy(), p0.copy(), np.zeros(3)  # the rule replayed in float64
    for i, rows in enumerate(idx):
        if i != 3:
            xb, tb = x[rows], theta[rows, 0]
            m = 2 * xb.T @ (xb @ p - tb) / len(rows) + 0.5 * m
            p = p - 0.05 * m
        a = ema * a + (1 - ema) * p
    np.testing.assert_allclose(stepped.params, p, rtol=1e-5)
    np.testing.assert_allclose(stepped.avg_params, a, rtol=1e-5)
    assert int(stepped.skipped) == 1 and np.isnan(values[3])
    assert passes.validated(stepped) is stepped.avg_params
    assert passes.state_of(jnp.zeros(3), opt).avg_params is None  # ema = 0: no average kept


def test_the_average_is_kept_as_the_posterior_and_off_keeps_the_iterate():
    task = _normal_task(1)
    on = mdnjax.fit(task, Config(**{**SMALL, "epochs": 3, "patience": 50}))
    off = mdnjax.fit(task, Config(**{**SMALL, "epochs": 3, "patience": 50, "ema": 0}))
    assert on.state.avg_params is not None and off.state.avg_params is None
    best = int(np.argmin(on.validation)) + 1
    if best == 3:  # the last pass was the best: its average is the posterior
        chex.assert_trees_all_equal(on.posterior.params, on.state.avg_params)
    if int(np.argmin(off.validation)) + 1 == 3:
        chex.assert_trees_all_equal(off.posterior.params, off.state.params)
    # the same steps either way: the average changes what is judged, not the path
    chex.assert_trees_all_equal(on.state.params, off.state.params)


def test_resume_is_bitwise_the_uninterrupted_run(run):
    task = _normal_task(2)
    saved = []
    first = mdnjax.fit(task, Config(**{**SMALL, "epochs": 3}), on_checkpoint=lambda s, h: saved.append((s, h)))
    state, history = saved[-1]
    resumed = mdnjax.fit(task, Config(**SMALL), init_state=state, history=history)
    chex.assert_trees_all_equal(resumed.state.params, run.state.params)
    chex.assert_trees_all_equal(resumed.posterior.params, run.posterior.params)
    np.testing.assert_array_equal(resumed.validation, run.validation)
    assert int(first.state.epoch) == 3 and int(resumed.state.epoch) == SMALL["epochs"]


def test_a_result_answers_for_float_y_in_batches(run):
    post = run.posterior
    y = np.array([[0.3, -0.1], [1.0, 2.0], [0.0, 0.0]])
    draws = post.sample(jax.random.key(0), y, 7)
    assert draws.shape == (3, 7, 2)
    assert post.mean(y).shape == (3, 2) and post.cov(y).shape == (3, 2, 2)
    assert post.log_prob(np.zeros((3, 2)), y).shape == (3,)
    assert post.quantile(np.array([0.1, 0.9]), y[0]).shape == (2, 2)
    assert post.training_samples(y[0]) is None
    with pytest.raises(ValueError, match="sequence of 2 numbers"):
        post.mean([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        post.mean([np.nan, 1.0])


def test_validation_split_and_batches_are_fixed_by_the_seed():
    a, b = batches.split(1000, 0.1, 3), batches.split(1000, 0.1, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[1]) == 100 and not set(a[0]) & set(a[1])
    idx = np.asarray(batches.indices(jax.random.key(0), 4, 100, 32, 3))
    assert idx.shape == (3, 32) and len(set(idx.ravel())) == 96
    np.testing.assert_array_equal(idx, np.asarray(batches.indices(jax.random.key(0), 4, 100, 32, 3)))


# ----------------------------------------------------------------- embeddings


def test_each_embedding_maps_to_its_width():
    rngs = nnx.Rngs(0)
    y = jnp.asarray(np.random.default_rng(0).normal(size=(5, 24)))

    def shape(spec):  # traced abstractly: built and applied without compiling
        return jax.eval_shape(lambda v: embeddings.build(spec, 24, rngs=nnx.Rngs(0))(v), y).shape

    assert shape(embeddings.Embedding("mlp", (16,), 7)) == (5, 7)
    assert shape(embeddings.Embedding("set", (16, 16), 6, features=3)) == (5, 6)
    assert shape(embeddings.Embedding("conv", (4, 8), 9, features=2, kernel=3)) == (5, 9)
    assert embeddings.build(embeddings.Embedding("none"), 24, rngs=rngs) is None
    with pytest.raises(ValueError, match="not a multiple"):
        embeddings.Embedding("set", features=5).check(24)
    assert embeddings.Embedding.from_json(
        embeddings.Embedding("conv", (3,), 4, 2, 7).to_json()
    ) == embeddings.Embedding("conv", (3,), 4, 2, 7)


def test_the_set_encoder_is_invariant_to_the_order_and_to_padding():
    net = embeddings.build(embeddings.Embedding("set", (16, 16), 6, features=2), 20, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    trials = rng.normal(size=(4, 6, 2))  # 6 real trials of 2 numbers
    padded = np.full((4, 10, 2), np.nan)
    padded[:, :6] = trials
    shuffled = np.full((4, 10, 2), np.nan)
    shuffled[:, [9, 0, 4, 2, 7, 5]] = trials[:, ::-1]  # other order, padding between
    a, b = net(jnp.asarray(padded.reshape(4, 20))), net(jnp.asarray(shuffled.reshape(4, 20)))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    fewer = padded.copy()
    fewer[:, 5] = np.nan  # one trial fewer: a different set
    assert np.abs(np.asarray(net(jnp.asarray(fewer.reshape(4, 20)))) - np.asarray(a)).max() > 1e-4


def test_a_set_of_a_variable_number_of_trials_trains_and_answers():
    def simulate(rng, n):
        theta = rng.normal(size=n)
        y = theta[:, None] + rng.normal(size=(n, 8))
        y[rng.random((n, 8)) < 0.3] = np.nan  # 0-8 trials observed
        return theta, y

    task = mdnjax.Task("iid", simulate, support=[(-np.inf, np.inf)])
    result = mdnjax.fit(task, Config(**{**SMALL, "embedding": {"kind": "set", "widths": (16, 16), "out": 8}}))
    assert result.posterior.spec.network.kind == "set"
    y = np.array([0.5, 0.4, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan])
    assert np.isfinite(float(result.posterior.mean(y)))


# ----------------------------------------------------------------- bad input


def test_nan_or_infinite_y_rows_are_counted_and_refused_in_one_line():
    def simulate(rng, n):
        theta = rng.normal(size=n)
        y = theta + rng.normal(size=n)
        y[:5] = np.inf
        y[7] = np.nan
        return theta, y

    task = mdnjax.Task("bad", simulate, support=[(-np.inf, np.inf)])
    with pytest.raises(
        simulation.SimulationError, match=r"^simulate returned 6 of 1,000 y rows holding NaN or infinite"
    ):
        mdnjax.fit(task, Config(samples=1_000, epochs=1))


def test_y_whose_shape_differs_from_the_declared_one_is_refused():
    def simulate(rng, n):
        return rng.normal(size=n), rng.normal(size=(n, 3 if n > 100 else 2))

    task = mdnjax.Task("shifty", simulate, support=[(-np.inf, np.inf)], y_shape=(2,))
    with pytest.raises(simulation.SimulationError, match="declares"):
        mdnjax.fit(task, Config(samples=1_000, epochs=1))


def test_float_y_of_a_counts_task_and_bad_settings_are_refused():
    def simulate(rng, n):
        return rng.random(n), rng.random(n)

    task = mdnjax.Task("c", simulate, support=[(0.0, 1.0)], y_kind="counts")
    with pytest.raises(simulation.SimulationError, match="y_kind='continuous'"):
        mdnjax.fit(task, Config(samples=100, epochs=1))
    for bad in ({"validation": 1.0}, {"batch_size": 0}, {"embedding": "transformer"}):
        with pytest.raises(ConfigError):
            Config(**bad).resolve()


# ----------------------------------------------------------------- accelerator and processes


@pytest.mark.parametrize("ema, skip", [(0.0, False), (1.0, True)])
def test_the_per_sample_pass_lowers_for_cuda_without_host_syncs(ema, skip):
    cfg = Config(**SMALL, layout="per-sample").resolve()
    # abstract shapes only: nothing is drawn or compiled on this machine
    graphdef, params = model.structure(3, (16, 16), 2, 5, embeddings.Embedding("mlp", (8,), 4), skip)
    assert ("means_skip" in params) is skip
    opt = passes.optimizer(cfg, 10)
    state = jax.eval_shape(lambda p: passes.state_of(p, opt, ema), params)
    shapes = [(640, 5), (640, 2), (64, 5), (64, 2)]
    pairs = passes.Pairs(*(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))
    run = passes.make_pass(graphdef, opt, 64, 10, rho=passes.decay(ema, 10))
    text = run.trace(state, pairs, jax.random.key(0)).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("stablehlo.while") == 1  # the steps' scan
    assert "stablehlo.case" not in text and "stablehlo.if" not in text and "custom_call @host" not in text
    assert "precision = [HIGHEST, HIGHEST]" in text or "<HIGHEST>" in text


TASK_FILE = """
import numpy as np
import mdnjax

def simulate(rng, n):
    theta = rng.normal(size=(n, 2))
    return theta, theta + 0.3 * rng.normal(size=(n, 2))

TASK = mdnjax.Task("float-y", simulate, support=[(-np.inf, np.inf)] * 2)
"""


def test_a_float_y_task_file_trains_through_the_command_and_loads_in_a_fresh_process(tmp_path, capsys):
    """The command (in this process) trains a float-y task file and resumes it; a fresh process
    that never imported the task loads the posterior and samples."""
    (tmp_path / "ftask.py").write_text(TASK_FILE)
    out = tmp_path / "run"
    argv = ["--task", f"{tmp_path / 'ftask.py'}:TASK", "--samples", "3000", "--epochs", "4", "--hidden", "16"]
    assert cli.main([*argv, "--components", "3", "--observed", "0.5", "-0.25", "--out", str(out)]) == 0
    assert "layout=per-sample (continuous observations" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layout"]["layout"] == "per-sample" and len(metrics["validation_loss"]) == 4
    assert metrics["observations"][0]["y"] == [0.5, -0.25]
    for name in ("loss.png", "validation.png", "pairs_0.png"):
        assert (out / name).stat().st_size > 1000
    probe = textwrap.dedent(f"""
        import jax, numpy as np, mdnjax
        post = mdnjax.load({str(out)!r})
        print(post.spec.y_kind, post.sample(jax.random.key(0), np.array([0.5, -0.25]), 5).shape)
    """)
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["continuous", "(5,", "2)"]
    assert cli.main(["--resume", str(out), "--epochs", "6"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["validation_loss"]) == 6


EMBEDDING_FILE = """
import jax
from flax import nnx


class Encoder(nnx.Module):
    def __init__(self, inputs, out, *, rngs):
        self.a = nnx.Linear(inputs, 8, rngs=rngs)
        self.b = nnx.Linear(8, out, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.tanh(self.a(x)))
"""


def test_a_users_own_embedding_module_trains_and_is_refused_on_load_once_changed(tmp_path):
    path = tmp_path / "emb.py"
    path.write_text(EMBEDDING_FILE)
    result = mdnjax.fit(_normal_task(2), Config(**{**SMALL, "epochs": 2, "embedding": f"{path}:Encoder"}))
    assert result.posterior.spec.network.kind == "user" and "embed" in result.posterior.params
    result.posterior.save(tmp_path)
    loaded = mdnjax.load(tmp_path)
    np.testing.assert_allclose(np.asarray(loaded.mean([0.1, 0.2])), np.asarray(result.posterior.mean([0.1, 0.2])))
    path.write_text(EMBEDDING_FILE + "# changed\n")
    with pytest.raises(ValueError, match="has changed since training"):
        mdnjax.load(tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match="is gone"):
        mdnjax.load(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Config(embedding=f"{tmp_path}/nothing.py:Encoder").resolve()


# ----------------------------------------------------------------- the linear skip


def test_the_linear_skip_starts_at_zero_and_moves_every_mean_by_a_linear_map_of_the_input():
    key, emb = jax.random.key(3), embeddings.Embedding("mlp", (8,), 4)
    _, plain = model.init(key, 3, (16,), 2, 5, emb)
    graphdef, skip = model.init(key, 3, (16,), 2, 5, emb, True)
    # the other layers start as without it (it is drawn last); the skip itself starts at zero
    chex.assert_trees_all_equal({k: v for k, v in skip.items() if k != "means_skip"}, plain)
    assert set(skip["means_skip"]) == {"kernel"} and not np.asarray(skip["means_skip"]["kernel"]).any()
    x = jax.random.normal(jax.random.key(1), (7, 5))
    base = model.apply(model.structure(3, (16,), 2, 5, emb)[0], plain, x)
    chex.assert_trees_all_equal(model.apply(graphdef, skip, x), base)
    # with a kernel W, every component's mean moves by x·W (float64 here) and nothing else moves
    w = np.random.default_rng(0).normal(size=(5, 6))
    moved = model.apply(graphdef, {**skip, "means_skip": {"kernel": jnp.asarray(w, jnp.float32)}}, x)
    expected = np.asarray(base[1], np.float64) + (np.asarray(x, np.float64) @ w).reshape(7, 3, 2)
    np.testing.assert_allclose(np.asarray(moved[1]), expected, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_equal((moved[0], moved[2]), (base[0], base[2]))


def test_the_skip_reads_a_padded_trial_as_zero_beside_a_set_encoder():
    emb = embeddings.Embedding("set", (8,), 4, features=1)  # 5 trials of one number; NaN: padding
    graphdef, params = model.init(jax.random.key(2), 2, (8,), 1, 5, emb, True)
    w = np.random.default_rng(1).normal(size=(5, 2))
    params = {**params, "means_skip": {"kernel": jnp.asarray(w, jnp.float32)}}
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    x[0, 4] = np.nan  # the first observation holds four trials
    _, means, _ = model.apply(graphdef, params, jnp.asarray(x))
    _, plain_means, _ = model.apply(graphdef, {**params, "means_skip": {"kernel": jnp.zeros((5, 2))}}, jnp.asarray(x))
    expected = np.asarray(plain_means, np.float64) + np.nan_to_num(x.astype(np.float64)) @ w
    np.testing.assert_allclose(np.asarray(means), expected, rtol=1e-5, atol=1e-5)


def _pruned_least_squares(x, z, t_min):
    """Reference for ``batches.skip_kernel``: per coordinate of z, least squares on the columns of
    x by ``lstsq`` on the design itself, standard errors from the residuals, dropping |t| < t_min."""
    w = np.zeros((x.shape[1], z.shape[1]))
    for d in range(z.shape[1]):
        keep = list(range(x.shape[1]))
        while keep:
            design = x[:, keep]
            coef = np.linalg.lstsq(design, z[:, d], rcond=None)[0]
            resid = z[:, d] - design @ coef
            sigma2 = resid @ resid / (len(x) - len(keep))
            se = np.sqrt(sigma2 * np.diag(np.linalg.inv(design.T @ design)))
            if (np.abs(coef) >= t_min * se).all():
                w[keep, d] = coef
                break
            keep = [k for k, c, s in zip(keep, coef, se, strict=True) if abs(c) >= t_min * s]
    return w


def test_the_per_sample_skip_is_the_least_squares_map_of_the_training_pairs_and_stays_fixed():
    normal = _normal_task(3, noise=0.3)

    def simulate(rng, n):  # θ + noise, then two inputs that carry nothing about θ (one heavy-tailed)
        theta, y = normal.simulate(rng, n)
        return theta, np.column_stack([y, rng.normal(size=n), rng.standard_t(2, size=n)])

    task = mdnjax.Task("normal3_noise", simulate, support=[(-np.inf, np.inf)] * 3)
    config = Config(**{**SMALL, "epochs": 3, "linear_skip": True})
    theta, y = task.simulate(np.random.default_rng(5), 3_000)
    res = mdnjax.fit(task, config, pairs=(theta, y))
    kernel = np.asarray(res.posterior.params["means_skip"]["kernel"], np.float64)
    # independent: least squares in float64 over the standardised training pairs, pruned by |t|
    train, _ = batches.split(3_000, config.validation, config.seed)
    x = (y[train] - y[train].mean(0)) / y[train].std(0)
    z = (theta[train] - theta[train].mean(0)) / theta[train].std(0)
    w = _pruned_least_squares(x, z, batches.SKIP_T)  # (M, D)
    np.testing.assert_allclose(kernel, np.tile(w, (1, 3)), rtol=2e-5, atol=2e-6)
    # each θ_d keeps its own y_d only, at about plain least squares' coefficient (≈ 0.92 here)
    assert (w != 0).sum() == 3 and np.all(np.diag(w[:3]) > 0.85)
    plain = np.linalg.lstsq(x, z, rcond=None)[0]
    np.testing.assert_allclose(np.diag(w[:3]), np.diag(plain[:3]), atol=0.01)
    # trained three passes, it has not moved (no gradient reaches it), and the rest has
    first = mdnjax.fit(task, {**config.to_dict(), "epochs": 1}, pairs=(theta, y))
    np.testing.assert_array_equal(np.asarray(first.posterior.params["means_skip"]["kernel"]), kernel.astype(np.float32))
    head = lambda r: np.asarray(r.posterior.params["means_head"]["kernel"])  # noqa: E731
    assert not np.array_equal(head(first), head(res))


def test_a_run_with_the_skip_saves_it_and_loads_it_and_old_posteriors_load_without_it(tmp_path):
    res = mdnjax.fit(_normal_task(2), Config(**{**SMALL, "epochs": 2, "linear_skip": True}))
    assert res.posterior.spec.linear_skip and np.asarray(res.posterior.params["means_skip"]["kernel"]).any()
    (tmp_path / "run").mkdir()
    res.posterior.save(tmp_path / "run")
    spec = json.loads((tmp_path / "run" / "posterior.json").read_text())
    assert spec["linear_skip"] is True
    back = mdnjax.load(tmp_path / "run")
    y = np.array([[0.3, -0.1], [1.0, 2.0]])
    np.testing.assert_array_equal(back.mean(y), res.posterior.mean(y))
    # a posterior.json written before the skip existed has no such key: loaded without it
    plain = mdnjax.fit(_normal_task(2), Config(**{**SMALL, "epochs": 1}))
    (tmp_path / "old").mkdir()
    plain.posterior.save(tmp_path / "old")
    spec = json.loads((tmp_path / "old" / "posterior.json").read_text())
    assert spec.pop("linear_skip") is False
    (tmp_path / "old" / "posterior.json").write_text(json.dumps(spec))
    np.testing.assert_array_equal(mdnjax.load(tmp_path / "old").mean(y), plain.posterior.mean(y))


def test_the_skip_is_on_by_default_for_the_per_sample_layout_from_skip_from_simulations_only():
    from mdnjax.config import SKIP_FROM

    def skip(**fields):
        return Config(**fields).resolve(tasks.BetaBinomial()).linear_skip

    assert skip(layout="per-sample", samples=SKIP_FROM) is True
    assert skip(layout="per-sample", samples=SKIP_FROM - 1) is False
    assert skip(layout="binned", samples=10 * SKIP_FROM) is False  # the bucketed layouts: unchanged
    assert skip(layout="per-sample", samples=SKIP_FROM, linear_skip=False) is False  # asked for: kept
    assert skip(layout="per-sample", samples=1_000, linear_skip=True) is True
    assert skip(layout="per-sample", samples=SKIP_FROM, embedding="mlp") is True
    assert skip(layout="per-sample", samples=SKIP_FROM, embedding={"kind": "set", "features": 1}) is False
    assert skip(layout="per-sample", samples=SKIP_FROM, embedding="conv") is False
    from mdnjax.train import run  # layout "auto": decided after the layout is chosen

    assert run.chosen(_normal_task(2), Config(samples=SKIP_FROM))[0].linear_skip is True
    assert run.chosen(tasks.BetaBinomial(), Config(samples=SKIP_FROM))[0].linear_skip is False
    # a run folder written before the default: resumed as it trained, without the skip
    saved = {k: v for k, v in Config(layout="per-sample", samples=SKIP_FROM).to_dict().items() if k != "linear_skip"}
    assert Config.from_run(saved).resolve().linear_skip is False


def test_stored_simulations_count_every_row_for_the_skip_default_held_out_ones_too():
    """10^5 simulations read from disk train with the skip as 10^5 simulated ones do, though the
    held-out share leaves fewer training rows; rounds pooling 10^5 in all likewise."""
    from mdnjax.config import SKIP_FROM
    from mdnjax.datasets import Arrays
    from mdnjax.train import rounds, run

    task = _normal_task(2)

    def resolved(rows):
        theta, y = task.simulate(np.random.default_rng(0), rows)
        stored, config = run.with_data(task, Arrays(theta, y), Config(layout="per-sample"))
        return stored, config.resolve(stored)

    stored, config = resolved(SKIP_FROM)
    assert config.samples == stored.train_rows < SKIP_FROM  # the held-out share left out of training
    assert config.linear_skip is True
    assert resolved(SKIP_FROM - 1)[1].linear_skip is False
    pooled, config = rounds.pooled_task(
        task, Config(layout="per-sample"), *task.simulate(np.random.default_rng(1), SKIP_FROM)
    )
    assert config.resolve(pooled).linear_skip is True


def test_the_skip_flag_reaches_the_config_and_a_non_boolean_is_refused():
    from mdnjax.cli import flags

    def config(argv):
        args = vars(flags.train_parser().parse_args(argv))
        return flags.config_from_flags(args, flags.task_from_flags(args)[0])

    assert config(["--prior", "gaussian_linear", "--linear-skip"]).linear_skip is True
    assert config(["--prior", "gaussian_linear", "--no-linear-skip"]).linear_skip is False
    assert config(["--prior", "gaussian_linear"]).linear_skip is None  # the default, decided by resolve
    with pytest.raises(ConfigError, match="linear_skip must be true or false"):
        Config(linear_skip="yes").resolve()
