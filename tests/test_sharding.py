"""Data parallel over several (forced) CPU devices: same loss, gradients and training as one device."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.processes

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import chex, jax, numpy as np
    import mdnjax
    from mdnjax import Config, kernels, layout, model, objective, parallel, tasks

    assert len(jax.devices()) == 4
    task = tasks.GammaPoisson()
    theta, y = task.simulate(np.random.default_rng(0), 30_000)
    b = layout.bucket_packed(theta, y)
    graphdef, params = model.init(jax.random.key(0), 8)
    f = jax.jit(jax.value_and_grad(lambda p, d: objective.loss(p, graphdef, d, kernels.tiles.nll)))
    one = layout.to_data(b, (0.0, 100.0), block=4096)
    v1, g1 = f(params, one)
    for n in (2, 3, 4):  # 3 does not divide the rows of a block: padded with empty rows
        mesh = parallel.device_mesh(n)
        data = layout.to_data(b, (0.0, 100.0), block=4096, shards=n)
        assert data.theta.shape[1] % n == 0
        data, p = parallel.shard(data, params, mesh)
        assert len(data.theta.sharding.device_set) == n
        v, g = f(p, data)
        np.testing.assert_allclose(float(v), float(v1), rtol=1e-5)
        chex.assert_trees_all_close(g, g1, rtol=1e-5, atol=1e-7)
    # training end to end: the same path, up to the float32 rounding of the sums' order
    import dataclasses
    cfg = Config(samples=30_000, epochs=30, log_every=10, layout="packed")  # rows split over the devices
    r1 = mdnjax.fit(task, dataclasses.replace(cfg, devices=1))
    r4 = mdnjax.fit(task, dataclasses.replace(cfg, devices=4))
    np.testing.assert_allclose(r4.losses, r1.losses, rtol=1e-3, atol=1e-4)
    chex.assert_trees_all_close(r4.posterior.params, r1.posterior.params, rtol=1e-3, atol=1e-4)
    try:
        parallel.device_mesh(5)
        raise AssertionError("5 of 4 devices accepted")
    except ValueError as err:
        assert "4 cpu device" in str(err)
    print("SHARDING-OK")
    """
)


def test_sharded_loss_gradients_and_training_match_one_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDING-OK" in proc.stdout
