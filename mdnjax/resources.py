"""How much memory this machine has free, and a one-line refusal for work that cannot fit.

Example:
    >>> fits(10, "a tiny job", "nothing to do")
    >>> available_memory() is None or available_memory() > 0
    True
"""

from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free pages), or
    None when the platform does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits(needed: float, what: str, fix: str) -> None:
    """Raises ``MemoryError`` (one line: what needs how much, what is free, the fix) when ``needed``
    bytes exceed the memory available."""
    free = available_memory()
    if free is not None and needed > free:
        raise MemoryError(f"{what} needs about {needed / 2**30:,.1f} GiB; {free / 2**30:,.1f} GiB is available: {fix}")
