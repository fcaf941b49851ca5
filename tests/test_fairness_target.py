"""The smooth-gap relaxation and the fairness target of stage 1: the relaxation against direct
computations and finite differences, the measured gap against fairlearn, the multiplier's
ascent step by hand, and the target's behaviour on data (met locally, monotone in τ)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate
from test_stage1 import _central_differences, _problem, _rel, standardised_gradient_error

from clients.fairness_terms import GroupRows, SmoothGap, make_relaxation
from clients.stage1 import (
    FairDistiller,
    Stage1Config,
    allocate_cells,
    draw_cells,
    fairness_vector,
)
from common import logistic
from common.datasets import make_synthetic
from common.encoding import Encoder, design_matrix
from common.errors import ConfigError
from common.global_model import fit_global_model


def _rows(seed: int, n: int = 120):
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < 0.4).astype(float)
    X = design_matrix(rng.normal(size=(n, 3)) + 0.5 * s[:, None], s)
    y = (rng.random(n) < 0.5).astype(float)
    return X, s, y, rng.normal(size=X.shape[1])


@pytest.mark.parametrize("measure, metric", [("sp", selection_rate),
                                             ("eo", true_positive_rate)])
def test_measured_gap_is_fairlearns_signed_difference(measure, metric):
    X, s, y, w = _rows(0)
    pred = (X @ w > 0).astype(int)
    frame = MetricFrame(metrics=metric, y_true=y.astype(int), y_pred=pred, sensitive_features=s)
    expected = frame.by_group[1.0] - frame.by_group[0.0]
    assert GroupRows(s, y, measure).gap(X @ w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("measure", ["sp", "eo"])
def test_smooth_gap_is_the_difference_of_mean_probabilities(measure):
    X, s, y, w = _rows(1)
    rows = np.ones(len(s), bool) if measure == "sp" else y == 1
    p = 1 / (1 + np.exp(-(X @ w) / 0.5))
    expected = p[rows & (s == 1)].mean() - p[rows & (s == 0)].mean()
    g, _ = SmoothGap(GroupRows(s, y, measure), temperature=0.5).value_rows(X @ w)
    assert g == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", ["gap", "covariance"])
@pytest.mark.parametrize("measure", ["sp", "eo"])
def test_relaxation_gradient_matches_central_differences(name, measure):
    X, s, y, w = _rows(2)
    relax = make_relaxation(name, X, s, y, measure)
    _, r = relax.value_rows(X @ w)
    fd = _central_differences(lambda v: relax.value_rows(X @ v)[0], w)
    np.testing.assert_allclose(X.T @ r, fd, rtol=1e-6, atol=1e-9)


def test_covariance_relaxation_is_zafars_covariance():
    """Against the definition: the mean of (s − s̄)·wᵀx over the measure's rows."""
    X, s, y, w = _rows(3)
    for measure in ("sp", "eo"):
        keep = np.ones(len(s), bool) if measure == "sp" else y == 1
        d, s_m = (X @ w)[keep], s[keep]
        direct = float(np.mean((s_m - s_m.mean()) * d))
        relax = make_relaxation("covariance", X, s, y, measure)
        assert relax.value_rows(X @ w)[0] == pytest.approx(direct, abs=1e-12)
        assert relax.c @ w == pytest.approx(direct, abs=1e-12)
        assert fairness_vector(X, s, y, measure) @ w == pytest.approx(direct, abs=1e-12)


def test_smooth_gap_tends_to_the_measured_gap_as_the_temperature_falls():
    X, s, y, w = _rows(4, n=400)
    groups = GroupRows(s, y, "sp")
    errors = [abs(SmoothGap(groups, t).value_rows(X @ w)[0] - groups.gap(X @ w))
              for t in (1.0, 0.1, 0.001)]
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.01


def test_an_empty_group_gives_no_gap_and_no_gradient():
    X, s, y, w = _rows(5)
    relax = make_relaxation("gap", X, np.ones_like(s), y, "sp")
    g, r = relax.value_rows(X @ w)
    assert g == 0.0 and not r.any() and relax.groups.gap(X @ w) == 0.0


GAP_CASES = [
    # seed, N, Ñ, learned, frozen, measure, ρ, τ, anchor
    (0, 40, 40, 3, 0, "sp", 5.0, None, False),
    (2, 50, 20, 2, 2, "eo", 5.0, None, True),
    (4, 45, 12, 3, 0, "sp", 30.0, 0.01, False),
]


@pytest.mark.parametrize("target", [None, 0.05])
@pytest.mark.parametrize("case", GAP_CASES, ids=[f"case{c[0]}-{c[5]}" for c in GAP_CASES])
def test_smooth_gap_hypergradient_matches_central_differences(case, target):
    seed, n, n_syn, L, F, measure, rho, tol, anchor = case
    problem, u = _problem(seed, n=n, n_syn=n_syn, n_learn=L, n_fixed=F, measure=measure, rho=rho,
                          tolerance=None if target else tol, anchor=anchor, relaxation="gap",
                          target=target)
    w = problem.inner(u, tol=1e-13)
    grad, _ = problem.hypergradient(u, w)
    fd = _central_differences(problem.objective, u)
    assert _rel(np.asarray(grad), fd) <= 1e-5
    # the same through the standardisation of the learned columns
    assert standardised_gradient_error(problem, u, anchor=anchor) <= 1e-5


def test_target_form_is_the_lagrangian_with_the_multiplier_fixed():
    problem, u = _problem(6, n=40, n_syn=40, n_learn=2, n_fixed=1, measure="sp", rho=0.0,
                          relaxation="gap", target=0.05)
    w = problem.inner(u, tol=1e-13)
    f, _ = problem.outer_value_grad(w)
    last = problem.last
    assert f == pytest.approx(last["loss"] + 3.0 * -1.0 * last["relaxation"])


def test_multiplier_ascends_on_the_measured_gap():
    problem, u = _problem(7, n=60, n_syn=60, n_learn=2, n_fixed=0, measure="sp", rho=0.0,
                          relaxation="gap", target=0.05)
    problem.multiplier, problem.direction, problem.multiplier_lr = 0.0, 0.0, 2.0
    problem.last = {"gap": -0.3}
    problem.update_multiplier()  # μ = max(0, 0 + 2(0.3 − 0.05)) = 0.5, σ = −1
    assert (problem.multiplier, problem.direction) == (pytest.approx(0.5), -1.0)
    problem.last = {"gap": 0.01}
    problem.update_multiplier()  # μ = max(0, 0.5 + 2(0.01 − 0.05)) = 0.42, σ = +1
    assert (problem.multiplier, problem.direction) == (pytest.approx(0.42), 1.0)
    problem.last = {"gap": 0.0}
    problem.multiplier = 0.05
    problem.update_multiplier()  # never below 0; a zero gap keeps the direction
    assert (problem.multiplier, problem.direction) == (0.0, 1.0)


@pytest.mark.parametrize("relaxation", ["gap", "covariance"])
def test_target_is_met_locally_and_monotone(relaxation):
    data = make_synthetic(1500, seed=4)
    base = fit_global_model([data]).evaluate(data)["spd"]
    assert base > 0.2  # the toy data is biased enough for the targets to bind
    gaps = []
    for target in (0.15, 0.08, 0.03):
        result = FairDistiller(Stage1Config(target=target, relaxation=relaxation,
                                            iterations=200), progress=False).fit(data)
        assert abs(result.gap) <= target
        assert len(result.gaps) == 200 and abs(result.gaps[0]) > target  # it had to move
        gaps.append(abs(fit_global_model([result.data]).evaluate(data)["spd"]))
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] <= 0.03 + 0.02


def test_target_reports_the_nearest_miss_when_out_of_reach(caplog):
    data = make_synthetic(600, seed=3)
    with caplog.at_level(logging.WARNING):
        result = FairDistiller(Stage1Config(target=0.001, iterations=3),
                               progress=False).fit(data)
    assert 0.001 < abs(result.gap) <= np.abs(result.gaps).min()
    assert "did not reach the target" in caplog.text


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 0.0}, "target"),
    ({"target": 1.0}, "target"),
    ({"target": 0.05, "tolerance": 0.01}, "target and tolerance"),
    ({"relaxation": "hinge"}, "relaxation"),
    ({"multiplier_lr": 0.0}, "multiplier_lr"),
])
def test_bad_target_settings_raise(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Stage1Config(**kwargs)


def test_real_rows_that_meet_the_target_come_back_unchanged():
    data = make_synthetic(800, seed=6)
    start = abs(FairDistiller(Stage1Config(target=0.99, iterations=0), progress=False)
                .fit(data).gap)
    assert 0.05 < start < 0.98
    result = FairDistiller(Stage1Config(target=start + 0.01, iterations=100),
                           progress=False).fit(data)
    assert len(result.gaps) == 1 and result.gap == pytest.approx(result.gaps[0])
    np.testing.assert_allclose(result.data.features.to_numpy(float),
                               data.features.to_numpy(float), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("keep", ["first", "loss"])
def test_keep_chooses_among_the_steps_that_met_the_target(keep):
    data = make_synthetic(800, seed=7)
    result = FairDistiller(Stage1Config(target=0.05, iterations=120, keep=keep),
                           progress=False).fit(data)
    met = np.flatnonzero(np.abs(result.gaps) <= 0.05)
    assert len(met) > 1 and abs(result.gaps[0]) > 0.05
    if keep == "first":
        assert result.gap == result.gaps[met[0]]
    else:  # one of the steps that met it (or the final one)
        assert abs(result.gap) <= 0.05


def test_balanced_allocation_gives_each_label_half_by_hand():
    # cells (s, y): (0,0) 10, (0,1) 30, (1,0) 10, (1,1) 150 -> labels 20 and 180 rows
    s = np.repeat([0, 0, 1, 1], [10, 30, 10, 150])
    y = np.repeat([0, 1, 0, 1], [10, 30, 10, 150])
    alloc = allocate_cells(s, y, 200, balanced=True)
    # y = 0: 100 rows, split 10:10; y = 1: 100 rows, split 30:150
    assert alloc == {(0, 0): 50, (1, 0): 50, (0, 1): 17, (1, 1): 83}
    assert allocate_cells(s, y, 200) == {(0, 0): 10, (0, 1): 30, (1, 0): 10, (1, 1): 150}


def test_drawing_more_rows_than_a_cell_holds_keeps_every_row():
    s = np.repeat([0, 0, 1, 1], [10, 30, 10, 150])
    y = np.repeat([0, 1, 0, 1], [10, 30, 10, 150])
    alloc = allocate_cells(s, y, 200, balanced=True)
    rows = draw_cells(s, y, alloc, np.random.default_rng(0))
    assert len(rows) == 200
    cell = 2 * s[rows] + y[rows]
    assert np.bincount(cell, minlength=4).tolist() == [50, 17, 50, 83]
    assert set(np.flatnonzero((s == 0) & (y == 0))) <= set(rows)  # oversampled: all kept
    assert len(set(rows[cell == 3])) == 83  # undersampled: without replacement


def test_balanced_utility_trains_the_server_on_label_balanced_rows():
    data = make_synthetic(1500, seed=9, label_bias=1.5)
    counts = np.bincount(data.y, minlength=2)
    assert counts.max() > 1.5 * counts.min()  # skewed labels
    reports = {}
    for utility in ("accuracy", "balanced"):
        result = FairDistiller(Stage1Config(target=0.05, utility=utility, iterations=150),
                               progress=False).fit(data)
        assert abs(result.gap) <= 0.05 and len(result.data) == len(data)
        labels = np.bincount(result.data.y, minlength=2)
        if utility == "balanced":
            assert abs(int(labels[0]) - int(labels[1])) <= 1
        reports[utility] = fit_global_model([result.data]).evaluate(data)
    assert (reports["balanced"]["balanced_accuracy"]
            > reports["accuracy"]["balanced_accuracy"] + 0.01)


@pytest.mark.parametrize("keep_moments", [False, True])
def test_stage_one_rows_stay_in_their_declared_bounds_and_carry_the_reported_gap(keep_moments):
    """With tight bounds (each column's observed range), the learned values are projected onto
    them during the optimisation, not clipped afterwards: the inner model refitted on the
    released rows is the one whose gap stage 1 reports. (Without kept moments the rows press
    on the bounds; with them they move inwards on this table.)"""
    data = make_synthetic(1500, seed=4)
    frame = data.features
    tight = dataclasses.replace(data.schema, features=tuple(
        dataclasses.replace(c, bounds=(float(frame[c.name].min()), float(frame[c.name].max())))
        for c in data.schema.features))
    data = dataclasses.replace(data, schema=tight)
    result = FairDistiller(Stage1Config(target=0.03, iterations=200, keep_moments=keep_moments),
                           progress=False).fit(data)
    out = result.data.features
    on_bound = 0
    for c in tight.features:
        lo, hi = c.bounds
        assert out[c.name].between(lo, hi).all()
        on_bound += int(np.isclose(out[c.name], lo).sum() + np.isclose(out[c.name], hi).sum())
    if not keep_moments:  # the bounds bind: more rows on them than the real extremes
        assert on_bound > 2 * len(tight.features)
    enc = Encoder.fit(data)
    w = logistic.fit(enc.design(result.data), result.data.y, lam=result.lam_in)
    pred = enc.design(data) @ w > 0
    gap = pred[data.s == 1].mean() - pred[data.s == 0].mean()
    assert abs(gap) == pytest.approx(abs(result.gap), abs=1e-6)
    assert abs(gap) <= 0.03
