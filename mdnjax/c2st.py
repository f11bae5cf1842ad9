"""The classifier two-sample test (C2ST) exactly as sbibm computes it: 0.5 when a classifier
cannot tell q's draws from the reference's, 1.0 when it always can.

Both sets are z-scored by the reference's mean and standard deviation (ddof 1); a scikit-learn
``MLPClassifier`` (ReLU, two hidden layers of 10·D, Adam, ``max_iter=10000``, ``random_state=1``)
is scored by 5-fold shuffled ``KFold(random_state=1)``; the result is the mean accuracy.
scikit-learn is an optional extra (``pip install mdnjax[bench]``).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 2)), rng.normal(3.0, 1.0, size=(500, 2))
    >>> c2st(a, b) > 0.9
    True
"""

from __future__ import annotations

import numpy as np


def c2st(reference, draws, seed: int = 1, folds: int = 5) -> float:
    """The C2ST accuracy of ``draws`` (n, D) against ``reference`` (m, D)."""
    try:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise ImportError("C2ST needs scikit-learn: pip install scikit-learn (or mdnjax[bench])") from None
    x = np.asarray(reference, np.float64)
    y = np.asarray(draws, np.float64)
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference draws have {x.shape[1]} coordinates and draws {y.shape[1]}")
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    x, y = (x - mean) / sd, (y - mean) / sd
    dim = x.shape[1]
    clf = MLPClassifier(
        activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim), max_iter=10000, solver="adam", random_state=seed
    )
    data = np.concatenate([x, y]).astype(np.float32)
    target = np.concatenate([np.zeros(x.shape[0]), np.ones(y.shape[0])])
    with _one_thread():  # small matmuls: BLAS threads only contend (several C2STs run side by side 3× faster)
        scores = cross_val_score(
            clf, data, target, cv=KFold(n_splits=folds, shuffle=True, random_state=seed), scoring="accuracy"
        )
    return float(np.mean(scores))


def _one_thread():
    """BLAS limited to one thread where threadpoolctl (a scikit-learn dependency) is present."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)
