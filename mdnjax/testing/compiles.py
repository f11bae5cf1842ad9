"""Counting XLA compilations, for tests that a step compiles once (JAX's own compile log, read
through a handler on the ``jax`` logger: no private cache attribute).

Example:
    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda x: 2 * x)
    >>> with compilations() as names:
    ...     _ = f(jnp.ones(3)), f(jnp.ones(3)), f(jnp.ones(4))
    >>> names.count("jit(<lambda>)")
    2
"""

from __future__ import annotations

import contextlib
import logging
import re

import jax

_COMPILING = re.compile(r"Compiling (\S+) with global shapes")


class _Collect(logging.Handler):
    def __init__(self, names: list[str]):
        super().__init__(logging.DEBUG)
        self.names = names

    def emit(self, record: logging.LogRecord) -> None:
        match = _COMPILING.match(record.getMessage())
        if match:
            self.names.append(match.group(1))


@contextlib.contextmanager
def compilations():
    """Yields a list that collects the name of every computation compiled inside the block
    (``"jit(run)"``; one entry per new function and shapes, served by a persistent cache or not)."""
    names: list[str] = []
    logger = logging.getLogger("jax")
    handler = _Collect(names)
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield names
    finally:
        logger.removeHandler(handler)
