"""A trained amortized posterior q(θ | y): densities, samples, moments; save and load.

Example:
    >>> import mdnjax, jax
    >>> post = mdnjax.load("runs/beta-example")            # doctest: +SKIP
    >>> post.log_prob(jax.numpy.linspace(0.1, 0.5, 5), y=30)  # doctest: +SKIP
    >>> post.mean(30), post.std(30)                          # doctest: +SKIP
    >>> post.sample(jax.random.key(0), y=30, n=1000)         # doctest: +SKIP

A run directory holds ``config.json`` and ``checkpoint.npz`` (plain arrays, read with
``allow_pickle=False``: loading never executes code).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import mixture, model
from mdnjax.config import Config

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
STATE = "state.npz"


class Posterior:
    """An MDN posterior for one task.

    Args:
        config: the (resolved) run configuration.
        params: MDN parameters (pure dict of arrays).
    """

    def __init__(self, config: Config, params, graphdef=None):
        self.config = config
        self.task = config.task()
        if graphdef is None:
            graphdef, _ = model.init(jax.random.key(0), config.components, config.hidden)
        self.graphdef = graphdef
        self.params = params
        self._mixture = jax.jit(lambda p, x: model.apply(graphdef, p, x))

    def mixture(self, y):
        """Mixture parameters (logits, means, log_vars) at observations y.

        Args:
            y: an int or an array of ints, shape (B,) or ().

        Returns:
            Three arrays of shape y.shape + (K,).
        """
        y_arr = np.asarray(y)
        for value in y_arr.reshape(-1):
            self.task.check_y(value)
        x = jnp.asarray(y_arr.reshape(-1), jnp.float32) / self.task.trials
        out = self._mixture(self.params, x)
        return tuple(o.reshape(y_arr.shape + o.shape[-1:]) for o in out)

    @property
    def unconstrained(self) -> bool:
        """Whether the mixture lives on u = logit(θ) or log(θ) rather than on θ."""
        return self.config.space == "unconstrained"

    def log_prob(self, theta, y: int):
        """log q(θ | y) for an array θ at one observation y; returns an array shaped like θ.

        In the unconstrained space, q(θ) = q_u(u(θ)) |du/dθ|, and −inf outside θ's support.
        """
        logits, means, log_vars = self.mixture(int(y))
        theta = jnp.asarray(theta, means.dtype)
        if not self.unconstrained:
            return mixture.log_prob(theta, logits, means, log_vars)
        lo, hi = self.task.support
        inside = (theta > lo) & (theta < hi)
        safe = jnp.where(inside, theta, 0.5 if hi == 1.0 else 1.0)
        u = self.task.to_unconstrained(safe, xp=jnp)
        lp = mixture.log_prob(u, logits, means, log_vars) + self.task.log_abs_det_jacobian(safe, xp=jnp)
        return jnp.where(inside, lp, -jnp.inf)

    def sample(self, key, y: int, n: int):
        """``n`` draws from q(θ | y), shape (n,)."""
        draws = mixture.sample(key, *self.mixture(int(y)), n)
        return self.task.from_unconstrained(draws, xp=jnp) if self.unconstrained else draws

    def _moments(self, y):
        from mdnjax import metrics

        logits, means, log_vars = (np.asarray(a, np.float64) for a in self.mixture(y))
        flat = [a.reshape(-1, a.shape[-1]) for a in (logits, means, log_vars)]
        out = np.array([metrics.transformed_moments(self.task.from_unconstrained, *p) for p in zip(*flat)])
        return out.reshape(logits.shape[:-1] + (2,))

    def mean(self, y):
        """Posterior mean at y (int or array)."""
        if self.unconstrained:
            return jnp.asarray(self._moments(y)[..., 0])
        return mixture.mean(*self.mixture(y))

    def std(self, y):
        """Posterior standard deviation at y (int or array)."""
        if self.unconstrained:
            return jnp.asarray(self._moments(y)[..., 1])
        return mixture.std(*self.mixture(y))

    def save(self, run_dir) -> None:
        """Writes ``config.json`` and ``checkpoint.npz`` atomically into ``run_dir``."""
        save_params(Path(run_dir) / CHECKPOINT, self.params)
        atomic_write(Path(run_dir) / CONFIG, self.config.to_json().encode())


def _flat(tree, prefix: str = "") -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)  # noqa: E731
    return {prefix + name(path): np.asarray(v) for path, v in leaves}


def atomic_write(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_params(path, params) -> None:
    """Saves a parameter pytree as a flat ``.npz`` of named arrays, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **_flat(params))
    atomic_write(path, buf.getvalue())


def save_state(path, epoch: int, params, opt_state, losses) -> None:
    """Saves a resumable training state (parameters, optimizer state, epoch, losses), atomically."""
    buf = io.BytesIO()
    arrays = {**_flat(params, "params/"), **_flat(opt_state, "opt/")}
    np.savez(buf, epoch=np.int64(epoch), losses=np.asarray(losses, np.float32), **arrays)
    atomic_write(path, buf.getvalue())


def load_state(path, params_template, opt_template):
    """Reads ``save_state``'s file into the given structures: (epoch, params, opt_state, losses).

    Raises:
        ValueError: missing, truncated, corrupt or mismatched.
    """
    p_names, o_names = _flat(params_template, "params/"), _flat(opt_template, "opt/")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in [*p_names, *o_names, "epoch", "losses"]}
    except FileNotFoundError:
        raise ValueError(f"no training state at {path}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(f"training state {path} is corrupt or incomplete ({type(err).__name__}: {err})") from None
    for name, ref in {**p_names, **o_names}.items():
        if arrays[name].shape != ref.shape or arrays[name].dtype != ref.dtype:
            raise ValueError(f"training state {path}: {name!r} does not match this configuration")
    epoch = int(arrays["epoch"])
    if epoch < 0 or arrays["losses"].shape != (epoch,):
        raise ValueError(f"training state {path}: epoch {epoch} and {arrays['losses'].shape[0]} losses disagree")
    unflat = lambda names, tmpl: jax.tree_util.tree_unflatten(  # noqa: E731
        jax.tree_util.tree_structure(tmpl), [arrays[n] for n in names]
    )
    return epoch, unflat(p_names, params_template), unflat(o_names, opt_template), arrays["losses"]


def load_params(path, template):
    """Loads a ``.npz`` written by ``save_params`` into the structure of ``template``.

    Raises:
        ValueError: the file is missing, truncated, corrupt or does not match the template.
    """
    names = _flat(template)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in names}
    except FileNotFoundError:
        raise ValueError(f"no checkpoint at {path}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or incomplete ({type(err).__name__}: {err})") from None
    for name, ref in names.items():
        if arrays[name].shape != ref.shape or not np.all(np.isfinite(arrays[name])):
            raise ValueError(
                f"checkpoint {path}: array {name!r} has shape {arrays[name].shape} "
                f"(expected {ref.shape}) or non-finite values"
            )
    leaves, treedef = jax.tree_util.tree_flatten(template)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[n], ref.dtype) for n, ref in zip(names, leaves)])


def load(run_dir) -> Posterior:
    """Loads the posterior saved in a run directory.

    Args:
        run_dir: a folder written by ``python -m mdnjax.train`` or ``Posterior.save``.

    Returns:
        The ``Posterior``.

    Raises:
        ValueError: the folder, its config or its checkpoint is missing or unreadable.
    """
    run_dir = Path(run_dir)
    try:
        config = Config.from_dict(json.loads((run_dir / CONFIG).read_text())).validate()
    except FileNotFoundError:
        raise ValueError(f"{run_dir} has no {CONFIG}: not a run directory") from None
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{run_dir / CONFIG} is not a valid config ({err})") from None
    graphdef, template = model.init(jax.random.key(0), config.components, config.hidden)
    params = load_params(run_dir / CHECKPOINT, template)
    return Posterior(config, params, graphdef)
