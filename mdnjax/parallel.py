"""Devices and processes: the mesh the bucket rows are split over, and host copies of device arrays.

Data parallel: rows of every block are split over a 1-D mesh, parameters and optimizer state
are replicated; XLA's SPMD partitioner inserts the all-reduces of the loss and the gradients.
Several processes join through ``initialize`` (gloo on CPU) before any JAX computation.
"""

from __future__ import annotations

import jax
import numpy as np

from mdnjax.config import ConfigError
from mdnjax.data import Data


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process run (call before the first JAX computation)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; before any backend starts
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def device_mesh(devices: int | None):
    """A 1-D ``Mesh`` over the first ``devices`` devices (``None``: all), or None for one device."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ConfigError(
            f"devices {n}: this machine has {len(available)} {available[0].platform} device(s)", "devices"
        )
    if n == 1:
        return None
    return jax.sharding.Mesh(np.array(available[:n]), ("rows",))


def host(tree):
    """NumPy copies of (possibly multi-process, replicated) arrays: reads this process's copy."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = a.addressable_data(0)
        return np.array(a, copy=True)

    return jax.tree_util.tree_map(one, tree)


def shard(data: Data, state, mesh):
    """Places ``data`` with its rows split over ``mesh`` and ``state`` replicated."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    # from host copies: with several processes, each one places its own devices' shards
    put = lambda tree, spec: jax.device_put(host(tree), NamedSharding(mesh, spec))  # noqa: E731
    data = Data(
        x=put(data.x, P()),
        theta=put(data.theta, P(None, "rows", None)),
        row_count=put(data.row_count, P(None, "rows")),
        row_y=put(data.row_y, P(None, "rows")),
        weight=put(data.weight, P(None, "rows")),
        centre=None if data.centre is None else put(data.centre, P()),
    )
    return data, put(state, P())


def process_share() -> tuple[int, int]:
    """(this process's rank, the number of processes)."""
    return jax.process_index(), jax.process_count()


def allgather_rows(a: np.ndarray) -> list[np.ndarray]:
    """Every process's ``a`` (shapes may differ along the first axis), bit for bit.

    The arrays travel as bytes (``process_allgather`` would cast float64 to float32 when x64 is
    off), padded to the longest; every process receives the same list, rank order.
    """
    from jax.experimental import multihost_utils

    a = np.ascontiguousarray(a)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([a.shape[0]], np.int32))).reshape(-1)
    row_bytes = a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
    raw = np.zeros((int(sizes.max()), max(row_bytes, 1)), np.uint8)
    raw[: a.shape[0], :row_bytes] = a.view(np.uint8).reshape(a.shape[0], row_bytes)
    got = np.asarray(multihost_utils.process_allgather(raw))  # (processes, longest, row bytes)
    return [
        got[p, : sizes[p], :row_bytes].copy().view(a.dtype).reshape((int(sizes[p]),) + a.shape[1:])
        for p in range(len(sizes))
    ]
