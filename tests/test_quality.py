"""Synthetic-data quality metrics (common/quality.py) against SciPy and hand computation."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from common import datasets, quality
from common.global_model import fit_global_model
from common.schema import Column, Schema, TabularData


@settings(max_examples=80, deadline=None)
@given(a=st.lists(st.integers(-5, 5), min_size=1, max_size=40),
       b=st.lists(st.floats(-6, 6, allow_nan=False), min_size=1, max_size=40))
def test_ks_matches_scipy_including_ties(a, b):
    with warnings.catch_warnings():  # only the statistic is compared, not SciPy's p-value
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = ks_2samp(a, b).statistic
    assert quality.ks_statistic(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-12)


def test_tvd_by_hand():
    assert quality.tvd(np.array([2, 2, 0]), np.array([1, 1, 2])) == pytest.approx(0.5)
    assert quality.tvd(np.array([1, 0]), np.array([0, 5])) == pytest.approx(1.0)
    assert quality.tvd(np.array([3, 1]), np.array([6, 2])) == pytest.approx(0.0)


def _data(features: dict, s, y) -> TabularData:
    schema = Schema("q", (Column("x", bounds=(0.0, 10.0)),
                          Column("k", bounds=(1.0, 3.0), integer=True),
                          Column("c", kind="categorical", categories=("u", "v"))),
                    "s", "1", "y", "1")
    return TabularData(schema, pd.DataFrame(features), np.array(s, dtype=np.int8),
                       np.array(y, dtype=np.int8))


def test_column_distances_by_hand():
    real = _data({"x": [0.2, 0.7, 9.9, 5.0], "k": [1, 1, 2, 3], "c": ["u", "u", "v", "v"]},
                 [0, 1, 1, 1], [0, 0, 1, 1])
    syn = _data({"x": [0.1, 0.3, 0.4, 0.6], "k": [1, 2, 2, 2], "c": ["u", "u", "u", "v"]},
                [1, 1, 1, 1], [0, 1, 1, 1])
    d = quality.column_distances(real, syn)
    assert d["x"]["ks"] == pytest.approx(ks_2samp(real.features["x"], syn.features["x"]).statistic)
    # 20 bins of width 0.5 on [0, 10]: real has 2 of 4 in bin 0, 1 in bin 10, 1 in bin 19;
    # synthetic has all 4 in bins 0–1 (0.1, 0.3, 0.4 in bin 0; 0.6 in bin 1)
    assert d["x"]["tvd"] == pytest.approx(0.5 * (abs(0.5 - 0.75) + 0.25 + 0.25 + 0.25))
    assert d["k"]["tvd"] == pytest.approx(0.5 * (abs(0.5 - 0.25) + abs(0.25 - 0.75) + 0.25))
    assert d["c"] == {"tvd": pytest.approx(0.25)}
    assert d["s"]["tvd"] == pytest.approx(0.25)
    # cells 2s + y: real (0, 2, 3, 3) → (¼, 0, ¼, ½); synthetic (2, 3, 3, 3) → (0, 0, ¼, ¾)
    assert d["cell"]["tvd"] == pytest.approx(0.5 * (0.25 + 0.0 + 0.0 + 0.25))


def test_identical_rows_are_at_distance_zero():
    data = datasets.make_synthetic(300, seed=1)
    report = quality.quality_report(data, data, data)
    assert report["ks_mean"] == 0 and report["tvd_mean"] == 0 and report["cell_tvd"] == 0
    assert report["tstr_accuracy"] == report["trtr_accuracy"]


def test_tstr_is_the_server_model_trained_on_synthetic_rows():
    real = datasets.make_synthetic(400, seed=2)
    syn = datasets.make_synthetic(400, seed=3)
    expected = fit_global_model([syn], lam=0.5).evaluate(real)["accuracy"]
    assert quality.tstr_accuracy(syn, real, lam=0.5) == expected


def test_server_metrics_train_on_the_union():
    parts = [datasets.make_synthetic(200, seed=k) for k in range(2)]
    test = datasets.make_synthetic(300, seed=9)
    assert quality.server_metrics(parts, test) == fit_global_model(parts).evaluate(test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_and_coverage_match_prdc(seed):
    """Against the reference implementation of Naeem et al. (the ``prdc`` package)."""
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(300, 4))
    fake = rng.normal(loc=0.3 * seed, scale=1.0 + 0.2 * seed, size=(250, 4))
    ours = quality.density_coverage_arrays(real, fake, k=5, chunk=64)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = prdc.compute_prdc(real, fake, nearest_k=5)
    assert ours["density"] == pytest.approx(ref["density"], rel=1e-12)
    assert ours["coverage"] == pytest.approx(ref["coverage"], rel=1e-12)


def test_density_and_coverage_by_hand():
    """Real rows 0, 1, 3 on a line, k = 1: radii 1, 1, 2. A synthetic row at 0.5 lies in the
    balls of 0 and 1 (and of 3: 2.5 > 2, no), one at 10 in none: density (2 + 0)/(1·2) = 1,
    coverage 2/3 (the ball of 3 holds no synthetic row)."""
    real = np.array([[0.0], [1.0], [3.0]])
    out = quality.density_coverage_arrays(real, np.array([[0.5], [10.0]]), k=1)
    assert out == {"density": 1.0, "coverage": pytest.approx(2 / 3)}
    # the real rows themselves cover every ball (their own row is inside it)
    assert quality.density_coverage_arrays(real, real, k=1)["coverage"] == 1.0


def test_density_and_coverage_on_tabular_rows_fall_with_a_shift():
    data = datasets.load("synthetic")
    real, other = data.subset(np.arange(0, 2000)), data.subset(np.arange(2000, 4000))
    same = quality.density_coverage(real, other, max_rows=2000)
    shifted = other.features.copy()
    for name in shifted.select_dtypes("number").columns:
        shifted[name] = shifted[name] + 3 * shifted[name].std()
    moved = quality.density_coverage(
        real, dataclasses.replace(other, features=shifted), max_rows=2000)
    assert 0.8 < same["density"] < 1.2 and same["coverage"] > 0.9
    assert moved["density"] < 0.5 * same["density"] and moved["coverage"] < 0.5


def test_density_and_coverage_refuse_impossible_k():
    with pytest.raises(ValueError, match="k"):
        quality.density_coverage_arrays(np.zeros((3, 2)), np.zeros((2, 2)), k=3)
