import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdnjax import Config, train


def test_same_seed_gives_same_parameters_and_different_seed_does_not():
    cfg = Config(prior="gamma", samples=5000, epochs=30, log_every=10)
    a = train.fit(cfg, verbose=False)
    b = train.fit(cfg, verbose=False)
    chex.assert_trees_all_equal(a.posterior.params, b.posterior.params)
    np.testing.assert_array_equal(a.losses, b.losses)
    c = train.fit(Config(prior="gamma", samples=5000, epochs=30, log_every=10, seed=1), verbose=False)
    assert not np.array_equal(a.losses, c.losses)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_layouts_train_the_same_way(layout):
    cfg = Config(prior="beta", samples=5000, epochs=40, recipe="notebook")
    ref = train.fit(dataclasses.replace(cfg, layout="padded"), verbose=False)
    got = train.fit(dataclasses.replace(cfg, layout=layout), verbose=False)
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-4)
    assert got.losses.shape == (40,)


def test_the_epoch_loop_compiles_once():
    cfg = Config(prior="beta", samples=3000, epochs=10).validate()
    b = train.simulate_and_bucket(cfg)
    data = train.to_data(b, cfg.trials, block=1024)
    from mdnjax import model

    graphdef, params = model.init(jax.random.key(0), cfg.components)
    opt = optax.adam(1e-3)
    run = train.make_run_epochs(train.make_step(train.loss_fn("packed", graphdef), opt))
    state = (params, opt.init(params), jax.tree_util.tree_map(jnp.copy, params), jnp.array(True))
    for _ in range(4):
        state, losses = run(state, data, 5)
    assert run._cache_size() == 1
    assert losses.shape == (5,)


def test_non_finite_loss_stops_and_keeps_last_finite_parameters():
    # A loss that turns NaN once the parameter passes 2.5: parameters must freeze at the last finite point.
    def loss(p, d):
        return jnp.where(p["w"] > 2.5, jnp.nan, -p["w"])

    opt = optax.sgd(1.0)
    run = train.make_run_epochs(train.make_step(loss, opt))
    params = {"w": jnp.array(0.0)}
    state = (params, opt.init(params), {"w": jnp.array(0.0)}, jnp.array(True))
    state, losses = run(state, None, 6)
    losses = np.asarray(losses)
    # w: 0,1,2,3(NaN) -> losses 0,-1,-2,nan,...
    np.testing.assert_array_equal(losses[:3], [0.0, -1.0, -2.0])
    assert np.isnan(losses[3])
    assert not bool(state[3])
    assert float(state[2]["w"]) == 2.0  # last parameters with a finite loss


def test_fit_reports_divergence_epoch():
    res = train.fit(Config(prior="gamma", samples=5000, epochs=60, lr=1e30, log_every=20), verbose=False)
    assert res.diverged_at is not None and res.diverged_at < 60
    assert res.losses.size <= 60
    chex.assert_tree_all_finite(res.posterior.params)


def test_fast_recipe_beats_the_notebook_recipe_at_the_same_budget():
    from mdnjax import metrics

    kls = {}
    for recipe in ("fast", "notebook"):
        cfg = Config(prior="gamma", samples=50_000, epochs=600, recipe=recipe, log_every=200)
        res = train.fit(cfg, verbose=False)
        b = res.buckets
        kls[recipe] = metrics.summarize(metrics.evaluate(res.posterior, b.y_values[b.counts >= 100]))["kl_mean"]
    assert kls["fast"] < 0.5 * kls["notebook"], kls


def test_streamed_simulation_holds_every_chunk_in_the_fitting_space(monkeypatch):
    monkeypatch.setattr(train, "CHUNK", 10_000)  # stream above 10^4 samples
    monkeypatch.setattr(train, "STREAM_CHUNK", 7_000)
    cfg = Config(prior="beta", samples=25_000, space="unconstrained").validate()
    b = train.simulate_and_bucket(cfg, shards=2)
    parts = list(train.simulation_chunks(cfg)())
    assert [len(t) for t, _ in parts] == [7_000, 7_000, 7_000, 4_000]
    theta = np.concatenate([t for t, _ in parts])
    task = cfg.task()
    raw = [task.simulate(np.random.default_rng([cfg.seed, i]), len(t))[0] for i, (t, _) in enumerate(parts)]
    np.testing.assert_allclose(theta, task.to_unconstrained(np.concatenate(raw).astype(np.float64)), rtol=1e-6)
    kept = np.isin(np.concatenate([y for _, y in parts]), b.y_values)
    np.testing.assert_array_equal(np.sort(b.theta[b.mask]), np.sort(theta[kept]))
    data = train.to_data(b, cfg.trials, shards=2)  # the spare rows were made for 2 shards: no copy
    assert data.theta.shape[0] * data.theta.shape[1] == b.theta.shape[0]
