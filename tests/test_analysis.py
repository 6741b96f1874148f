"""diagnostics.summarise: a segment's gradient statistics as one row, over the steps
where the estimator emits a gradient and a target exists."""

import math

import numpy as np
import pytest

import uorojax
from uorojax.analysis.diagnostics import GradientStatistics, summarise


def _stats(exact_norm):
    """Statistics whose value at step t is t (relative_bias), 10 t, 100 t and 1000 t."""
    t = np.arange(len(exact_norm), dtype=np.float64)
    return GradientStatistics(np.asarray(exact_norm, np.float64), t, 10 * t, 100 * t, 1000 * t)


def _estimator(window):
    return uorojax.Estimator(lambda p, s: None, lambda *a: None, window)


def test_a_per_step_estimator_is_summarised_after_its_first_compared_step():
    row = summarise(_stats([1, 1, 0, 1, 1]), _estimator(1))  # step 2 has no target
    assert row["target"] == "step"
    assert row["relative_bias"] == pytest.approx(np.mean([1, 3, 4]))  # after step 0
    assert row["relative_variance"] == pytest.approx(10 * np.mean([1, 3, 4]))
    assert row["mean_cosine"] == pytest.approx(100 * np.mean([1, 3, 4]))
    assert row["mean_norm_ratio"] == pytest.approx(1000 * np.mean([1, 3, 4]))
    assert row["last_relative_bias"] == 4 and row["last_mean_norm_ratio"] == 4000
    assert row["first_mean_cosine"] == 0


def test_a_windowed_estimator_is_summarised_at_its_windows_ends():
    row = summarise(_stats([1] * 9), _estimator(3))  # it emits at steps 2, 5, 8
    assert row["target"] == "window sum"
    assert row["relative_bias"] == pytest.approx(np.mean([5, 8]))
    assert row["last_mean_cosine"] == 800 and row["first_mean_cosine"] == 200


def test_one_compared_step_is_its_own_mean_and_none_gives_nan():
    row = summarise(_stats([0, 0, 1, 0]), _estimator(1))
    assert row["relative_bias"] == 2 and row["last_relative_bias"] == 2
    assert row["first_mean_cosine"] == 200  # the first step with a target, not step 0
    empty = summarise(_stats([0, 0, 0]), _estimator(1))
    assert all(math.isnan(v) for k, v in empty.items() if k != "target")
