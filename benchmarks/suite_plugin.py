"""A pytest plugin for ``benchmarks/suite_profile.py``: per test, its wall time and the XLA
compilations it caused (count and backend seconds, from ``jax.monitoring``), and the persistent
cache's hits; each pytest process writes ``SUITE_PROFILE_DIR/<worker>.json`` at the end.

Loaded with ``-p suite_plugin`` from a folder of its own on ``PYTHONPATH`` (the driver copies it
there: ``benchmarks/`` itself holds ``sbibm.py``, which would shadow the sbibm package); it changes
nothing the tests compute. Subprocesses the tests start are not seen (their time is in their test's wall time).
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import jax.monitoring
import pytest

_current = {"test": "(collection)"}
_compiles: dict = collections.defaultdict(lambda: [0, 0.0])  # test -> [count, backend seconds]
_hits: collections.Counter = collections.Counter()
_wall: dict = collections.defaultdict(float)


def _on_duration(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        entry = _compiles[_current["test"]]
        entry[0] += 1
        entry[1] += duration


def _on_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _hits[_current["test"]] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["test"] = item.nodeid
    start = time.perf_counter()
    yield
    _wall[item.nodeid] += time.perf_counter() - start


def pytest_sessionfinish(session):
    out = os.environ.get("SUITE_PROFILE_DIR")
    if not out:
        return
    if not _wall:  # xdist's controller runs no test
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    tests = sorted(set(_wall) | set(_compiles))
    rows = {
        t: {
            "wall_s": _wall.get(t, 0.0),
            "compiles": _compiles[t][0] if t in _compiles else 0,
            "compile_s": _compiles[t][1] if t in _compiles else 0.0,
            "cache_hits": _hits.get(t, 0),
        }
        for t in tests
    }
    Path(out, f"{worker}.json").write_text(json.dumps(rows))
