"""Stage 1: hypergradients against finite differences, inner optimality, allocation, fairness."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.fairness_terms import make_relaxation
from clients.stage1 import (
    BilevelProblem,
    FairDistiller,
    Stage1Config,
    allocate_cells,
    fairness_vector,
    standardise,
    utility_weights,
)
from common import logistic
from common.datasets import make_synthetic
from common.encoding import Encoder, design_matrix
from common.errors import ConfigError, DataError
from common.global_model import fit_global_model


def _problem(seed: int, *, n: int, n_syn: int, n_learn: int, n_fixed: int, measure: str,
             rho: float, tolerance=None, anchor=False, utility="accuracy",
             relaxation="covariance", target=None):
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < 0.6).astype(float)
    z = rng.normal(size=(n, n_learn + n_fixed)) + 0.8 * s[:, None]
    y = (rng.random(n) < 1 / (1 + np.exp(-(z[:, 0] - 0.5 * z[:, 1] + s - 0.3)))).astype(float)
    X = design_matrix(z, s)
    relaxation = make_relaxation(relaxation, X, s, y, measure)
    idx = rng.choice(n, n_syn, replace=False)
    u0 = z[idx, :n_learn] + 0.1 * rng.normal(size=(n_syn, n_learn))
    problem = BilevelProblem(X, y, z[idx, n_learn:], s[idx], y[idx], relaxation, rho=rho,
                             lam_in=0.5, lam_out=0.05, tolerance=tolerance,
                             anchor=z[idx, :n_learn] if anchor else None,
                             weights=utility_weights(y, utility), target=target)
    if target is not None:  # a multiplier and direction somewhere along a target run
        problem.multiplier, problem.direction = 3.0, -1.0
    return problem, u0


def _central_differences(fun, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        grad[idx] = (fun(xp) - fun(xm)) / (2 * h)
    return grad


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


CASES = [
    # seed, N, Ñ, learned, frozen, measure, ρ, τ, anchor
    (0, 40, 40, 3, 0, "sp", 5.0, None, False),
    (1, 40, 15, 3, 1, "sp", 50.0, None, True),
    (2, 50, 20, 2, 2, "eo", 5.0, None, False),
    (3, 30, 30, 4, 0, "eo", 20.0, None, True),
    (4, 45, 12, 3, 0, "sp", 30.0, 0.01, False),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{c[0]}-{c[5]}" for c in CASES])
def test_hypergradient_matches_central_differences(case):
    seed, n, n_syn, L, F, measure, rho, tol, anchor = case
    problem, u = _problem(seed, n=n, n_syn=n_syn, n_learn=L, n_fixed=F, measure=measure, rho=rho,
                          tolerance=tol, anchor=anchor)
    w = problem.inner(u, tol=1e-13)
    grad, _ = problem.hypergradient(u, w)
    fd = _central_differences(problem.objective, u)
    assert _rel(np.asarray(grad), fd) <= 1e-5


@pytest.mark.parametrize("case", CASES[:3], ids=[f"case{c[0]}-{c[5]}" for c in CASES[:3]])
def test_balanced_utility_hypergradient_matches_central_differences(case):
    seed, n, n_syn, L, F, measure, rho, tol, anchor = case
    problem, u = _problem(seed, n=n, n_syn=n_syn, n_learn=L, n_fixed=F, measure=measure, rho=rho,
                          tolerance=tol, anchor=anchor, utility="balanced")
    w = problem.inner(u, tol=1e-13)
    grad, _ = problem.hypergradient(u, w)
    fd = _central_differences(problem.objective, u)
    assert _rel(np.asarray(grad), fd) <= 1e-5


def test_balanced_weights_give_each_label_half_the_loss():
    y = np.array([1, 1, 1, 0])
    w = utility_weights(y, "balanced")
    np.testing.assert_allclose(w, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum()) and w.mean() == pytest.approx(1.0)
    assert utility_weights(y, "accuracy") is None
    np.testing.assert_allclose(utility_weights(np.ones(3, dtype=int), "balanced"), [1, 1, 1])


@pytest.mark.parametrize("case", CASES[:4], ids=[f"case{c[0]}-{c[5]}" for c in CASES[:4]])
def test_standardised_hypergradient_matches_central_differences(case):
    seed, n, n_syn, L, F, measure, rho, tol, anchor = case
    problem, r = _problem(seed, n=n, n_syn=n_syn, n_learn=L, n_fixed=F, measure=measure, rho=rho,
                          tolerance=tol)
    assert standardised_gradient_error(problem, r, anchor=anchor) <= 1e-5


def standardised_gradient_error(problem: BilevelProblem, r: np.ndarray, *, anchor: bool) -> float:
    """Relative error of ``∇_r F`` through ``u = standardise(r)`` against central differences
    (with ``anchor``, the outer regulariser centred on a shifted copy of the rows)."""
    if anchor:
        problem.anchor = standardise(r + 0.3)[0]
    u, std = standardise(r)
    w = problem.inner(u, tol=1e-13)
    grad, _ = problem.hypergradient_standardised(u, w, std)
    fd = _central_differences(lambda x: problem.objective(standardise(x)[0]), r)
    return _rel(np.asarray(grad), fd)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_inner_solution_is_stationary(solver):
    rng = np.random.default_rng(7)
    X = design_matrix(rng.normal(size=(300, 5)), rng.integers(0, 2, 300))
    y = (rng.random(300) < 0.7).astype(float)
    w = logistic.fit(X, y, lam=0.3, solver=solver, tol=1e-10)
    assert np.max(np.abs(logistic.gradient(w, X, y, 0.3))) <= 1e-8


def test_newton_and_lbfgs_agree():
    rng = np.random.default_rng(8)
    X = design_matrix(rng.normal(size=(200, 3)), rng.integers(0, 2, 200))
    y = (rng.random(200) < 0.4).astype(float)
    np.testing.assert_allclose(logistic.fit(X, y, lam=1.0),
                               logistic.fit(X, y, lam=1.0, solver="lbfgs"), atol=1e-7)


def test_logistic_gradient_and_hessian_match_central_differences():
    rng = np.random.default_rng(9)
    X = design_matrix(rng.normal(size=(50, 3)), rng.integers(0, 2, 50))
    y = (rng.random(50) < 0.5).astype(float)
    w = rng.normal(size=X.shape[1])
    fd = _central_differences(lambda v: logistic.loss(v, X, y, 0.7), w)
    np.testing.assert_allclose(logistic.gradient(w, X, y, 0.7), fd, rtol=1e-7, atol=1e-9)
    H = logistic.hessian(w, X, 0.7)
    fd_h = np.stack([_central_differences(lambda v, k=k: logistic.gradient(v, X, y, 0.7)[k], w)
                     for k in range(len(w))])
    np.testing.assert_allclose(H, fd_h, rtol=1e-6, atol=1e-8)


def test_fairness_vector_is_the_covariance():
    rng = np.random.default_rng(10)
    X = design_matrix(rng.normal(size=(80, 3)), rng.integers(0, 2, 80))
    s, y = X[:, -2], (rng.random(80) < 0.5).astype(float)
    w = rng.normal(size=X.shape[1])
    d = X @ w
    assert fairness_vector(X, s, y, "sp") @ w == pytest.approx(np.mean((s - s.mean()) * d))
    pos = y == 1
    expected = np.mean((s[pos] - s[pos].mean()) * d[pos])
    assert fairness_vector(X, s, y, "eo") @ w == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 400), min_size=4, max_size=4).filter(lambda c: sum(c) > 4),
       fraction=st.floats(0.01, 1.0))
def test_allocation_keeps_cell_proportions(counts, fraction):
    s = np.repeat([0, 0, 1, 1], counts)
    y = np.repeat([0, 1, 0, 1], counts)
    n = len(s)
    nonempty = sum(c > 0 for c in counts)
    n_syn = max(nonempty, int(round(fraction * n)))
    alloc = allocate_cells(s, y, n_syn)
    got = [alloc[(0, 0)], alloc[(0, 1)], alloc[(1, 0)], alloc[(1, 1)]]
    assert sum(got) == n_syn
    for c, g in zip(counts, got):
        if c == 0:
            assert g == 0
        else:
            assert g >= 1
            # largest remainder: within one row of the exact quota, except where the
            # one-row floor for small cells had to be paid by the others
            assert abs(g - n_syn * c / n) <= 1 + nonempty


def test_allocation_rejects_too_few_rows():
    s, y = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="non-empty"):
        allocate_cells(s, y, 3)


def test_covariance_falls_as_rho_grows():
    data = make_synthetic(800, seed=1)
    covs = []
    for rho in [0.0, 10.0, 100.0, 1000.0]:
        result = FairDistiller(Stage1Config(rho=rho, iterations=150), progress=False).fit(data)
        covs.append(abs(result.covariance[-1]))
    assert covs == sorted(covs, reverse=True)
    assert covs[-1] < 0.1 * covs[0]


def test_fewer_synthetic_rows_keep_cells_and_original_units():
    data = make_synthetic(500, seed=2)
    config = Stage1Config(rho=50.0, fraction=0.2, iterations=50)
    result = FairDistiller(config, progress=False).fit(data)
    syn = result.data
    assert len(syn) == 100
    alloc = allocate_cells(data.s, data.y, 100)
    assert syn.cell_counts() == alloc
    # each learned column keeps the real rows' mean and std (original units)
    np.testing.assert_allclose(syn.features.mean(), data.features.mean(), atol=1e-9)
    np.testing.assert_allclose(syn.features.std(ddof=0), data.features.std(ddof=0), rtol=1e-9)


def test_server_model_on_stage1_rows_is_fairer():
    data = make_synthetic(1500, seed=4)
    base = fit_global_model([data]).evaluate(data)
    fair = FairDistiller(Stage1Config(rho=100.0, iterations=200), progress=False).fit(data).data
    after = fit_global_model([fair]).evaluate(data)
    assert after["spd"] < 0.5 * base["spd"]


def test_categorical_columns_are_kept_from_initial_rows():
    import pandas as pd

    from common.schema import Column, Schema, from_frame

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n),
                          "g": rng.integers(0, 2, n), "t": rng.integers(0, 2, n)})
    schema = Schema("t", (Column("x"), Column("c", kind="categorical", categories=("a", "b", "c"))),
                    sensitive="g", privileged="1", label="t", favourable="1")
    data = from_frame(frame, schema)
    syn = FairDistiller(Stage1Config(rho=10.0, iterations=30), progress=False).fit(data).data
    assert (syn.features["c"] == data.features["c"]).all()
    assert not np.allclose(syn.features["x"], data.features["x"])


@pytest.mark.parametrize("seed", [3, 7, 10])
def test_a_column_constant_among_the_initial_rows_is_held_fixed(seed):
    """A skewed column (capital-loss: nearly all 0) can be constant among the sampled initial
    rows without being constant in the data. Its std then rounds to 0 or to ~1e-17 depending
    on the summation order; stage 1 must hold it fixed, not divide by it."""
    import pandas as pd

    from common.schema import Column, Schema, from_frame

    rng = np.random.default_rng(seed)
    n = 1000
    k = np.zeros(n)
    k[:3] = rng.uniform(100, 5000, 3)
    frame = pd.DataFrame({"x": rng.normal(size=n), "k": k, "g": rng.integers(0, 2, n),
                          "t": rng.integers(0, 2, n)})
    schema = Schema("t", (Column("x"), Column("k")), sensitive="g", privileged="1", label="t",
                    favourable="1")
    data = from_frame(frame, schema)
    config = Stage1Config(rho=10.0, iterations=10, fraction=0.1, seed=seed)
    syn = FairDistiller(config, progress=False).fit(data).data
    assert len(syn) == 100
    assert np.isfinite(syn.features["x"]).all()
    assert syn.features["k"].nunique() == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": -1.0}, "rho"),
    ({"fraction": 0.0}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
    ({"lam_in": -1.0}, "lam_in"),
    ({"measure": "dp"}, "measure"),
    ({"iterations": -3}, "iterations"),
    ({"lr": 0.0}, "lr"),
    ({"solver": "sgd"}, "solver"),
])
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Stage1Config(**kwargs)


def test_client_without_a_group_proceeds_with_warning(caplog):
    data = make_synthetic(400, seed=5)
    only_privileged = data.subset(np.flatnonzero(data.s == 1))
    with caplog.at_level(logging.WARNING):
        result = FairDistiller(Stage1Config(rho=100.0, iterations=20),
                               progress=False).fit(only_privileged)
    assert "only group" in caplog.text
    assert len(result.data) == len(only_privileged)
    assert np.all(np.isfinite(result.data.features.to_numpy(dtype=float)))
    assert np.all(result.covariance == 0.0)


def test_client_missing_a_cell_proceeds_with_warning(caplog):
    data = make_synthetic(400, seed=6)
    keep = ~((data.s == 0) & (data.y == 1))
    with caplog.at_level(logging.WARNING):
        result = FairDistiller(Stage1Config(rho=10.0, fraction=0.5, iterations=20),
                               progress=False).fit(data.subset(np.flatnonzero(keep)))
    assert "cell" in caplog.text
    assert result.data.cell_counts()[(0, 1)] == 0


def test_empty_client_is_an_error():
    data = make_synthetic(100, seed=0)
    with pytest.raises(DataError, match="no rows"):
        FairDistiller(Stage1Config(iterations=1)).fit(data.subset(np.array([], dtype=int)))


@pytest.mark.parametrize("measure", ["sp", "eo"])
def test_warm_started_inner_solutions_are_stationary_throughout_stage_one(measure):
    """The model stage 1 ends with is the exact minimiser of the inner problem on the rows it
    returns (∇g = 0 to 1e-8), although every inner solve was warm-started from the last."""
    from common.encoding import Encoder

    data = make_synthetic(600, seed=11)
    cfg = Stage1Config(measure=measure, rho=100.0, iterations=80, fraction=0.5)
    result = FairDistiller(cfg, progress=False).fit(data)
    enc = Encoder.fit(data)  # the client's own scaling, as stage 1 uses it
    X = design_matrix(enc.encode_z(result.data), result.data.s)
    grad = logistic.gradient(result.w, X, result.data.y.astype(float), result.lam_in)
    assert np.max(np.abs(grad)) <= 1e-8


@pytest.mark.parametrize("measure", ["sp", "eo"])
def test_a_client_missing_a_cell_still_becomes_fairer(measure, caplog):
    """Skewed federated splits lack whole (s, y) cells; stage 1 proceeds with a warning, keeps
    the cell empty, and still drives the covariance down."""
    data = make_synthetic(800, seed=12)
    keep = ~((data.s == 0) & (data.y == 0))  # no unprivileged negatives
    client = data.subset(np.flatnonzero(keep))
    with caplog.at_level(logging.WARNING):
        result = FairDistiller(Stage1Config(measure=measure, rho=1000.0, fraction=0.5,
                                            iterations=150), progress=False).fit(client)
    assert "cell" in caplog.text
    assert result.data.cell_counts()[(0, 0)] == 0
    assert result.data.cell_counts() == allocate_cells(client.s, client.y, len(result.data))
    assert abs(result.covariance[-1]) < 0.2 * abs(result.covariance[0])


def test_eo_on_a_client_whose_positives_hold_one_group_warns_and_proceeds(caplog):
    data = make_synthetic(500, seed=13)
    keep = ~((data.s == 0) & (data.y == 1))  # no unprivileged positives: EO is 0 here
    with caplog.at_level(logging.WARNING):
        result = FairDistiller(Stage1Config(measure="eo", rho=100.0, iterations=20),
                               progress=False).fit(data.subset(np.flatnonzero(keep)))
    assert "positive rows hold one group only" in caplog.text
    assert np.all(result.covariance == 0.0)
    assert np.all(np.isfinite(result.data.features.to_numpy(dtype=float)))


def test_cross_validated_lambda_against_a_direct_computation():
    """The chosen λ minimises the mean held-out log-loss over stratified folds, recomputed here
    directly: fit on k−1 folds from zero (no warm start), score the k-th."""
    from sklearn.model_selection import StratifiedKFold

    from common.logistic import LAMBDA_GRID, cross_validated_lambda, fit, log1pexp

    data = make_synthetic(600, seed=3)
    X = Encoder.fit(data).design(data)
    y = data.y.astype(np.int64)
    chosen = cross_validated_lambda(X, y, folds=3, seed=1)
    perm = np.random.default_rng(5).permutation(len(y))
    assert cross_validated_lambda(X[perm], y[perm], folds=3, seed=1) == chosen  # order-free
    canonical = np.lexsort(np.column_stack([X, y]).T[::-1])
    X, y = X[canonical], y[canonical]
    folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=1).split(X, y))
    scores = []
    for lam in LAMBDA_GRID:
        held = []
        for train, test in folds:
            w = fit(X[train], y[train], lam=lam)
            held.append(np.mean(log1pexp(-(2.0 * y[test] - 1) * (X[test] @ w))))
        scores.append(np.mean(held))
    assert chosen == LAMBDA_GRID[int(np.argmin(scores))]
    assert cross_validated_lambda(X[:5], y[:5]) == max(LAMBDA_GRID)  # too few rows


def test_lam_in_zero_is_chosen_by_cross_validation():
    from common.logistic import LAMBDA_GRID

    data = make_synthetic(400, seed=2)
    result = FairDistiller(Stage1Config(rho=10.0, lam_in=0.0, iterations=5),
                           progress=False).fit(data)
    assert result.lam_in in LAMBDA_GRID
    fixed = FairDistiller(Stage1Config(rho=10.0, lam_in=0.5, iterations=5),
                          progress=False).fit(data)
    assert fixed.lam_in == 0.5


def test_learned_values_stay_within_the_declared_bounds():
    # A learned row pushed far past a column's public range comes back at the bound (the
    # server rejects a release with values far outside it); inside the range, unchanged.
    from clients.stage1 import _decode

    data = make_synthetic(50, seed=2)
    enc = Encoder.fit(data)
    z = enc.encode_z(data)[:3].copy()
    j = 0  # the first continuous column, bounds (-8, 8)
    z[0, j] = (100.0 - enc.mean[j]) / enc.std[j]
    z[1, j] = (-100.0 - enc.mean[j]) / enc.std[j]
    out = _decode(enc, data, np.arange(3), z)
    values = out.features[enc.schema.continuous[j].name].to_numpy()
    np.testing.assert_allclose(values[:2], [8.0, -8.0])
    assert values[2] == pytest.approx(data.features[enc.schema.continuous[j].name].iloc[2])
