"""Lazy package attributes (PEP 562): ``import mdnjax`` and ``python -m mdnjax.train --help`` stay
instant, and JAX, Flax and SciPy are imported by the first attribute that needs them.

Example:
    >>> import mdnjax
    >>> mdnjax.Config.__name__  # imports mdnjax.config now
    'Config'
"""

from __future__ import annotations

import importlib
import sys


def exports(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is ``names[name]``'s, a module
    path relative to ``package`` (``".config"``) whose attribute of the same name it is, or the
    module itself when the path ends in the name (``".datasets"`` for ``datasets``)."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name], package)
        value = module if names[name].rsplit(".", 1)[-1] == name else getattr(module, name)
        globals_of(package)[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__():
        return sorted({*globals_of(package), *names})

    return __getattr__, __dir__


def globals_of(package: str) -> dict:
    return vars(sys.modules[package])
