"""XLA:CPU settings for the fused training step (applied by the CLI and the benchmarks).

XLA:CPU's experimental YNNPACK fusions (jaxlib 0.8.1 and later) emit the step's
elementwise-plus-reduction tiles about 1.5–2× slower than XLA's own loop emitter here.
``configure_cpu`` turns them off through ``XLA_FLAGS``, which XLA reads when its CPU client is
created: call it before the first JAX computation. It does nothing when the user already set the
flag, when ``MDNJAX_XLA_DEFAULTS=0``, or when the installed jaxlib predates the flag (an unknown
flag would abort the process), or when JAX will run on an accelerator (a GPU/TPU plugin installed,
or ``JAX_PLATFORMS`` naming another platform first).

Example:
    >>> flag_supported("0.8.0"), flag_supported("0.8.1"), flag_supported("0.10.2")
    (False, True, True)
"""

from __future__ import annotations

import os
import re

FLAG = "--xla_cpu_experimental_ynn_fusion_type="
FIRST_JAXLIB = (0, 8, 1)  # the first jaxlib release whose XLA knows the flag (0.8.0 does not)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def flag_supported(jaxlib_version: str) -> bool:
    """Whether a jaxlib of this version accepts ``FLAG``."""
    return _version(jaxlib_version) >= FIRST_JAXLIB


def _accelerator_expected() -> bool:
    """Whether JAX will run on an accelerator: ``JAX_PLATFORMS`` names no CPU, or (unset) a GPU or
    TPU plugin is installed. The flag is for XLA:CPU only; a GPU run does without it."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms:
        return "cpu" not in platforms.split(",")[0]
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return any(n.startswith(("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")) for n in names)


def configure_cpu() -> bool:
    """Adds the fast XLA:CPU flag to ``XLA_FLAGS``; returns whether the flag is now set."""
    flags = os.environ.get("XLA_FLAGS", "")
    name = FLAG.split("=")[0]
    if name in flags:
        return True
    if os.environ.get("MDNJAX_XLA_DEFAULTS", "1") == "0" or _accelerator_expected():
        return False
    from importlib import metadata

    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not flag_supported(version):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
