"""fit, the named state, the scan loop, recipes, simulation checks and streaming."""

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mdnjax
from mdnjax import Config, layout, metrics, model, sources, tasks, train
from mdnjax.testing.compiles import compilations


def test_same_seed_gives_same_parameters_and_different_seed_does_not():
    cfg = Config(samples=5000, epochs=30, log_every=10)
    a = mdnjax.fit("gamma", cfg)
    with compilations() as compiled:
        b = mdnjax.fit("gamma", cfg)
    assert "jit(run)" not in compiled and "jit(build)" not in compiled  # the first fit's programs, kept
    chex.assert_trees_all_equal(a.posterior.params, b.posterior.params)
    np.testing.assert_array_equal(a.losses, b.losses)
    c = mdnjax.fit("gamma", dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(a.losses, c.losses)


def test_the_cosine_schedule_takes_its_length_as_an_input():
    """The schedule equals optax's (float32, to rounding), and a fit to another epoch count (or a
    resume that trains longer) runs the program the first fit compiled."""
    counts = jnp.arange(0, 260, dtype=jnp.int32)
    for horizon in (7, 250):
        ours = jax.jit(lambda c, h: jax.vmap(train.loop.cosine(1e-2, h))(c))(counts, jnp.float32(horizon))
        np.testing.assert_allclose(ours, jax.vmap(optax.cosine_decay_schedule(1e-2, horizon))(counts), atol=1e-8)
    cfg = Config(samples=4000, epochs=20, log_every=10, seed=5)
    short = mdnjax.fit("gamma", cfg)
    with compilations() as compiled:
        longer = mdnjax.fit("gamma", dataclasses.replace(cfg, epochs=30))
    assert "jit(run)" not in compiled
    assert longer.config.schedule == "cosine" and not np.array_equal(longer.losses[:20], short.losses)


def test_result_carries_a_named_state_that_resumes_bitwise():
    cfg = Config(samples=5000, epochs=40, log_every=10)
    full = mdnjax.fit("beta", cfg)
    assert isinstance(full.state, train.TrainState) and int(full.state.epoch) == 40 and bool(full.state.finite)
    half = mdnjax.fit("beta", dataclasses.replace(cfg, epochs=40), should_stop=lambda: True)  # stops after 10
    assert half.stopped_at == 10 and int(half.state.epoch) == 10
    rest = mdnjax.fit("beta", cfg, init_state=half.state, history=half.losses)
    chex.assert_trees_all_equal(rest.posterior.params, full.posterior.params)
    np.testing.assert_array_equal(rest.losses, full.losses)


def test_progress_goes_to_the_callback_and_fit_prints_nothing(capsys):
    seen = []
    mdnjax.fit("gamma", Config(samples=3000, epochs=25, log_every=10), callback=seen.append)
    assert [p.epoch for p in seen] == [10, 20, 25]
    assert all(p.epochs == 25 and len(p.losses) == p.epoch - e for p, e in zip(seen, [0, 10, 20]))
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("kind", ["packed", "padded"])
def test_layouts_train_the_same_way(kind):
    cfg = Config(samples=5000, epochs=40, recipe="notebook")
    ref = mdnjax.fit("beta", dataclasses.replace(cfg, layout="padded"))
    got = mdnjax.fit("beta", dataclasses.replace(cfg, layout=kind))
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-4)
    assert got.losses.shape == (40,)


def test_the_epoch_loop_compiles_once():
    task = tasks.BetaBinomial()
    cfg = Config(samples=3000, epochs=10, layout="packed").resolve(task)
    b, _ = layout.build_layout(task, cfg)
    data = layout.to_data(b, (0.0, 100.0), block=1024)
    graphdef, _ = model.init(jax.random.key(0), cfg.components, cfg.hidden)
    run = train.make_run_epochs(train.make_step(train.make_loss(cfg, graphdef), train.optimizer(cfg)))
    state = train.initial_state(cfg)
    with compilations() as compiled:
        for _ in range(4):
            state, losses = run(state, data, 5)
    assert compiled.count("jit(run)") == 1
    assert losses.shape == (5,) and int(state.epoch) == 20


def test_a_shorter_last_dispatch_runs_through_the_same_program():
    """25 epochs at 10 per dispatch: 10, 10 and 5 through one compiled program (the loop's count
    is an input), with the parameters and losses of 25 plain steps."""

    def loss(p, d):
        return jnp.sum((p["w"] - d) ** 2) + jnp.sum(p["b"] ** 2)

    opt = optax.adam(0.05)
    params = {"w": jnp.array([0.5, -1.0]), "b": jnp.ones(3)}
    run = train.make_flat_run_epochs(loss, opt)  # built here: nothing kept from another test
    with compilations() as compiled:
        out = train.train(run, train.state_of(jax.tree.map(jnp.copy, params), opt), jnp.array([1.0, 2.0]), 25, 10)
    assert compiled.count("jit(run)") == 1
    step = jax.jit(train.make_step(loss, opt))
    p, o, expected = params, opt.init(params), []
    for _ in range(25):
        p, o, value = step(p, o, jnp.array([1.0, 2.0]))
        expected.append(float(value))
    assert int(out.state.epoch) == 25 and out.losses.shape == (25,)
    np.testing.assert_allclose(out.losses, expected, rtol=1e-6)
    chex.assert_trees_all_close(out.state.params, p, rtol=1e-6, atol=1e-6)


def test_non_finite_loss_stops_and_keeps_last_finite_parameters():
    # A loss that turns NaN once the parameter passes 2.5: parameters must freeze at the last finite point.
    def loss(p, d):
        return jnp.where(p["w"] > 2.5, jnp.nan, -p["w"])

    opt = optax.sgd(1.0)
    run = train.make_run_epochs(train.make_step(loss, opt))
    params = {"w": jnp.array(0.0)}
    state = train.TrainState(params, opt.init(params), {"w": jnp.array(0.0)}, jnp.array(True), jnp.array(0))
    state, losses = run(state, None, 6)
    losses = np.asarray(losses)
    # w: 0,1,2,3(NaN) -> losses 0,-1,-2,nan,...
    np.testing.assert_array_equal(losses[:3], [0.0, -1.0, -2.0])
    assert np.isnan(losses[3])
    assert not bool(state.finite) and int(state.epoch) == 3
    assert float(state.last_finite["w"]) == 2.0  # last parameters with a finite loss


def test_fit_reports_divergence_epoch():
    res = mdnjax.fit("gamma", Config(samples=5000, epochs=60, lr=1e30, log_every=20))
    assert res.diverged_at is not None and res.diverged_at < 60
    assert res.losses.size <= 60
    chex.assert_tree_all_finite(res.posterior.params)


def test_fast_recipe_beats_the_notebook_recipe_at_the_same_budget():
    kls = {}
    task = tasks.GammaPoisson()
    for recipe in ("fast", "notebook"):
        res = mdnjax.fit(task, Config(samples=30_000, epochs=400, recipe=recipe, log_every=200, holdout=0.0))
        b = res.buckets
        kls[recipe] = metrics.summarize(metrics.evaluate(res.posterior, task, b.y_values[b.counts >= 100]))["kl_mean"]
    assert kls["fast"] < 0.5 * kls["notebook"], kls


def test_a_prior_with_mass_at_the_support_edge_trains_finite():
    # Beta(0.5, 0.5): float32 θ rounds onto 1.0 (logit = inf); the transform runs in float64 first
    task = tasks.BetaBinomial(0.5, 0.5, 20)
    res = mdnjax.fit(task, Config(samples=200_000, epochs=200, log_every=100))
    assert res.diverged_at is None and np.all(np.isfinite(res.losses))
    rows = metrics.evaluate(res.posterior, task, [0, 10, 20])
    assert all(np.isfinite(r["kl"]) for r in rows)


def test_draws_on_a_bound_are_moved_inside_counted_and_reported():
    def simulate(rng, n):
        theta = rng.uniform(size=n)
        theta[:5] = 0.0  # on the bound
        theta[5:8] = 1.0
        return theta, rng.binomial(10, theta)

    task = mdnjax.Task("edges", simulate, support=[(0.0, 1.0)])
    with pytest.warns(RuntimeWarning, match="8 draws lay on a bound"):
        res = mdnjax.fit(task, Config(samples=20_000, epochs=5, log_every=5))
    assert res.report["moved_to_interior"] == 8 and np.all(np.isfinite(res.losses))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(samples=1), "samples"),
        (dict(samples=2.5), "samples must be an integer"),
        (dict(components=0), "components"),
        (dict(components=1000), "components"),
        (dict(epochs=10**12), "epochs"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("inf")), "lr"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**40), "seed"),
        (dict(hidden=(0,)), "hidden"),
        (dict(weighting="per-row"), "weighting"),
        (dict(layout="dense"), "layout"),
        (dict(recipe="magic"), "recipe"),
        (dict(log_every=0), "log_every"),
    ],
)
def test_bad_settings_name_the_field_not_a_flag(overrides, match):
    with pytest.raises(mdnjax.ConfigError, match=match) as err:
        Config(**overrides).resolve(tasks.BetaBinomial())
    assert "--" not in str(err.value) and "\n" not in str(err.value)


def test_integral_floats_are_accepted_for_integers():
    cfg = Config(samples=1e4, epochs=2e3).resolve(tasks.BetaBinomial())
    assert cfg.samples == 10_000 and isinstance(cfg.samples, int) and cfg.epochs == 2000


def test_numpy_scalars_and_a_dict_config_are_accepted_and_wrong_types_name_the_field():
    task = tasks.BetaBinomial()
    cfg = Config(samples=np.int64(20_000), lr=np.float32(0.01), hidden=np.array([8, 8]), holdout=np.float64(0.1))
    got = cfg.resolve(task)
    assert (got.samples, got.hidden) == (20_000, (8, 8)) and isinstance(got.samples, int)
    assert got.lr == pytest.approx(0.01, rel=1e-6) and isinstance(got.lr, float)
    assert Config.of({"samples": 5000, "epochs": 3}) == Config(samples=5000, epochs=3)
    for bad, match in [({"samples": "many"}, "samples must be an integer"), ({"lr": True}, "lr must be")]:
        with pytest.raises(mdnjax.ConfigError, match=match):
            Config(**bad).resolve(task)
    with pytest.raises(mdnjax.ConfigError, match="unknown fields: sample"):
        mdnjax.fit(task, {"sample": 10})
    with pytest.raises(mdnjax.ConfigError, match="must be a mdnjax.Config or a dict"):
        mdnjax.fit(task, [("samples", 10)])


def test_samples_that_cannot_be_trained_on_are_refused_or_warned():
    with pytest.raises(mdnjax.ConfigError, match="19,9.. of 20,000 samples"):
        mdnjax.fit(tasks.BetaBinomial(trials=10**9), Config(samples=20_000, epochs=2, layout="binned"))
    with pytest.warns(RuntimeWarning, match="fall on a y seen once"):
        mdnjax.fit(tasks.GammaPoisson(), Config(samples=3000, epochs=2, log_every=2, layout="binned"))
    # on auto nothing is refused or left out: y that never repeat train per sample
    thin = mdnjax.fit(tasks.BetaBinomial(trials=10**9), Config(samples=2_000, epochs=2))
    assert thin.config.layout == "per-sample" and thin.report["dropped"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mdnjax.fit(tasks.BetaBinomial(), Config(samples=20_000, epochs=2, log_every=2))


def test_streamed_simulation_holds_every_chunk_in_the_fitting_space(monkeypatch):
    monkeypatch.setattr(sources, "CHUNK", 10_000)  # stream above 10^4 samples
    monkeypatch.setattr(sources, "STREAM_CHUNK", 7_000)
    task = tasks.BetaBinomial()
    cfg = Config(samples=25_000, layout="packed").resolve(task)
    b, report = layout.build_layout(task, cfg, shards=2)
    sizes = [7_000, 7_000, 7_000, 4_000]
    parts = [task.simulate(np.random.default_rng([cfg.seed, i]), n) for i, n in enumerate(sizes)]
    theta = task.support[0].forward(np.concatenate([t for t, _ in parts])).astype(np.float32)
    y = np.concatenate([y for _, y in parts])
    kept = np.isin(y, b.y_values)
    np.testing.assert_array_equal(np.sort(b.theta[b.mask]), np.sort(theta[kept]))
    assert report["dropped"] == (~kept).sum() and report["samples"] == 25_000
    data = layout.to_data(b, (0.0, 100.0), shards=2)  # the spare rows were made for 2 shards: no copy
    assert data.theta.shape[0] * data.theta.shape[1] == b.theta.shape[0]


def _vector_task():
    """θ ∈ ℝ^2 (one bounded coordinate), y ∈ ℤ^3 with negative values: the user-facing contract."""

    def simulate(rng, n):
        theta = np.column_stack([rng.normal(size=n), rng.uniform(0.0, 1.0, n)])
        y = np.column_stack(
            [
                rng.poisson(np.exp(0.5 * theta[:, 0])) - 2,  # shifted counts: negative values too
                rng.binomial(4, theta[:, 1]),
                (theta[:, 0] > 0).astype(np.int64),
            ]
        )
        return theta, y

    return mdnjax.Task("vector", simulate, support=[(-np.inf, np.inf), (0.0, 1.0)], y_range=(-2, 100))


def test_a_users_vector_task_trains_with_a_standardised_input_per_component():
    task = _vector_task()
    res = mdnjax.fit(task, Config(samples=30_000, epochs=60, log_every=30))
    b, post = res.buckets, res.posterior
    assert b.y_values.shape[1] == 3 and (b.y_values[:, 0] < 0).any() and res.config.layout == "binned"
    shift, scale = post.spec.embedding
    np.testing.assert_allclose(shift, np.average(b.y_values, axis=0, weights=b.counts), rtol=1e-6)
    assert len(scale) == 3 and min(scale) > 0
    y = b.y_values[np.argmax(b.counts)]
    assert post.training_samples(y) == b.counts.max()
    draws = post.sample(jax.random.key(0), y, 500)
    assert draws.shape == (500, 2) and np.all((draws[:, 1] > 0) & (draws[:, 1] < 1))
    assert np.isfinite(np.asarray(post.log_prob(draws, y))).all()
    assert np.all(np.isfinite(res.losses)) and res.losses[-1] < res.losses[0]


def test_streaming_vector_observations_codes_them_across_chunks(monkeypatch):
    monkeypatch.setattr(sources, "CHUNK", 10_000)
    monkeypatch.setattr(sources, "STREAM_CHUNK", 6_000)
    task = mdnjax.Task(
        "scalar-theta-vector-y",
        lambda rng, n: (lambda t: (t, rng.binomial(5, np.column_stack([t, 1 - t]))))(rng.uniform(0, 1, n)),
        support=[(0.0, 1.0)],
        y_range=(0, 5),
    )
    for kind in ("packed", "binned"):
        cfg = Config(samples=25_000, layout=kind).resolve(task)
        b, report = layout.build_layout(task, cfg)
        parts = [task.simulate(np.random.default_rng([cfg.seed, i]), n) for i, n in enumerate([6000] * 4 + [1000])]
        y = np.concatenate([y for _, y in parts])
        rows, counts = np.unique(y, axis=0, return_counts=True)
        keep = counts >= layout.MIN_COUNT
        np.testing.assert_array_equal(b.y_values, rows[keep])  # one code per distinct row, over every chunk
        np.testing.assert_array_equal(b.counts, counts[keep])
