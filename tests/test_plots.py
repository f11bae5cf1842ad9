"""The figures say what they show: labels, titles and markers (each function returns its Figure)."""

import jax
import numpy as np
from scipy import stats

import mdnjax
from mdnjax import model, plots, tasks
from mdnjax.posterior import Posterior, PosteriorSpec


def _untrained(task, y_values, k: int = 2):
    """A posterior with freshly initialised parameters: enough to draw a figure."""
    y_values = np.asarray(y_values)
    cfg = mdnjax.Config(components=k, hidden=(8,)).resolve(task)
    inputs = 1 if y_values.ndim == 1 else y_values.shape[1]
    _, params = model.init(jax.random.key(0), k, (8,), len(task.support), inputs)
    embedding = (0.0, 10.0) if inputs == 1 else ((0.0,) * inputs, (10.0,) * inputs)
    spec = PosteriorSpec.of(task, cfg, embedding, y_values, np.full(len(y_values), 500))
    return Posterior(spec, params)


def test_kl_marks_every_plotted_y_also_one_with_few_samples(tmp_path):
    dense = [{"y": y, "kl": 1e-3} for y in range(10, 60)]
    plotted = [{"y": 30, "kl": 1e-3}, {"y": 95, "kl": 0.2}]  # y = 95: too few samples to be among the dense
    fig = plots.kl_by_y(dense, tmp_path / "kl.png", plotted_rows=plotted)
    marked = [line for line in fig.axes[0].lines if line.get_label() == "plotted y"][0]
    assert list(marked.get_xdata()) == [30, 95]


def test_a_quadrature_reference_is_not_called_exact(tmp_path):
    def simulate(rng, n):
        theta = rng.beta(2.0, 5.0, n)
        return theta, rng.binomial(20, theta)

    task = mdnjax.Task("coin", simulate, support=[(0.0, 1.0)])
    post = _untrained(task, np.arange(21))
    refs = {5: stats.beta(7, 20)}
    fig = plots.posterior_grid(post, task, [5], tmp_path / "posterior.png", references=refs)
    title = fig._suptitle.get_text()
    assert "quadrature reference" in title and "exact" not in title
    assert "exact" in plots.posterior_grid(post, tasks.BetaBinomial(), [5], tmp_path / "p.png")._suptitle.get_text()


def test_pair_plot_contours_are_labelled_with_their_mass(tmp_path):
    task = tasks.ABTest(trials=(20, 20), observed=(4, 9))
    post = _untrained(task, [[4, 9], [5, 5]])
    draws = np.random.default_rng(0).normal(size=(500, 2)) * 0.4 - 1.0
    fig = plots.pair_plot(post, task, np.array([4, 9]), tmp_path / "pairs.png", exact_draws=draws)
    labels = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"50%", "90%", "99%"} <= labels


def test_the_coverage_axis_does_not_borrow_a_parameters_name(tmp_path):
    result = {"levels": [0.5, 0.9], "coverage": [0.5, 0.9], "coverage_standard_error": [0.01, 0.01]}
    fig = plots.coverage(result, tmp_path / "coverage.png", "beta")
    assert "α" not in fig.axes[0].get_xlabel() and "nominal" in fig.axes[0].get_xlabel()
