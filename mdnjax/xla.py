"""XLA:CPU settings for the fused training step (applied by the CLI and the benchmarks).

XLA:CPU's experimental YNNPACK fusions (on by default in recent jaxlib releases) emit the
step's elementwise-plus-reduction tiles about 1.5–2× slower than XLA's own loop emitter here.
``configure_cpu`` turns them off through ``XLA_FLAGS``, which XLA reads when its CPU client is
created: call it before the first JAX computation. It does nothing when the user already set the
flag, when ``MDNJAX_XLA_DEFAULTS=0``, or when the installed jaxlib does not know the flag (an
unknown flag would abort the process).
"""

from __future__ import annotations

import functools
import glob
import mmap
import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type="


@functools.cache
def _jaxlib_knows(name: bytes) -> bool:
    import jaxlib

    for path in glob.glob(os.path.join(os.path.dirname(jaxlib.__file__), "**", "*.so"), recursive=True):
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(name) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


def configure_cpu() -> bool:
    """Adds the fast XLA:CPU flag to ``XLA_FLAGS``; returns whether the flag is now set."""
    flags = os.environ.get("XLA_FLAGS", "")
    name = FLAG.split("=")[0]
    if name in flags:
        return True
    if os.environ.get("MDNJAX_XLA_DEFAULTS", "1") == "0" or not _jaxlib_knows(name.lstrip("-").encode()):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
