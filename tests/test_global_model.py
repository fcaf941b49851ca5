"""The server's logistic model on the union of released rows (common/global_model.py): the
intercept-only fallback when the clients' rows share no signal, checked against a direct
leave-one-client-out computation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from common import logistic
from common.datasets import make_synthetic
from common.encoding import Encoder
from common.global_model import fit_global_model, intercept_only, parts_disagree
from common.schema import concat


def noise_labels(rows, seed):
    """``rows`` with labels drawn at their own rate, independently of everything else."""
    rng = np.random.default_rng(seed)
    return dataclasses.replace(rows, y=(rng.random(len(rows)) < rows.y.mean()).astype(rows.y.dtype))


def spurious(rows, column, sign, seed):
    """``rows`` whose label follows one feature's sign (``sign`` ±1): a pattern of this part
    only, as the artefacts of one client's DP generator are."""
    x = rows.features[column].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    y = (sign * (x - np.median(x)) + rng.normal(0, 0.3 * x.std(), len(x)) > 0)
    return dataclasses.replace(rows, y=y.astype(rows.y.dtype))


@pytest.fixture(scope="module")
def table():
    return make_synthetic(2400, seed=21)


def halves(table):
    return table.subset(np.arange(0, 1200)), table.subset(np.arange(1200, 2400))


def by_hand(parts, lam):
    """Leave-one-part-out log-losses of the model and of the label rate, size-weighted."""
    union = concat(parts)
    encoder = Encoder.fit(union)
    total, model, null = len(union), 0.0, 0.0
    for k, held in enumerate(parts):
        rest = concat([p for j, p in enumerate(parts) if j != k])
        X, y = encoder.design(rest), rest.y
        w = logistic.fit(X, y, lam=lam)
        rate = y.mean()
        sign = 2.0 * held.y - 1.0
        margin = encoder.design(held) @ w
        model += len(held) / total * np.mean(np.log1p(np.exp(-sign * margin)))
        p = np.where(held.y == 1, rate, 1 - rate)
        null += len(held) / total * np.mean(-np.log(p))
    return model, null


def test_parts_that_share_their_signal_keep_the_model(table):
    parts = list(halves(table))
    union = concat(parts)
    encoder = Encoder.fit(union)
    X = encoder.design(union)
    lam = logistic.cross_validated_lambda(X, union.y)
    designs = [encoder.design(p) for p in parts]
    assert parts_disagree(designs, [p.y for p in parts], lam=lam) is None
    model, null = by_hand(parts, lam)
    assert model < null
    np.testing.assert_allclose(fit_global_model(parts).w, logistic.fit(X, union.y, lam=lam))


def test_parts_whose_patterns_contradict_get_the_label_rate(table, caplog):
    """Each part's label follows a different feature: trained on one part, the model scores
    the other worse than the label rate does, so the server returns the intercept-only model
    (every row at the union's label rate) and logs why."""
    a, b = halves(table)
    column = a.schema.features[0].name
    parts = [spurious(a, column, +1, 1), spurious(b, column, -1, 2)]
    union = concat(parts)
    encoder = Encoder.fit(union)
    lam = logistic.cross_validated_lambda(encoder.design(union), union.y)
    found = parts_disagree([encoder.design(p) for p in parts], [p.y for p in parts], lam=lam)
    assert found is not None
    assert found == pytest.approx(by_hand(parts, lam), rel=1e-6)
    with caplog.at_level("WARNING"):
        model = fit_global_model(parts)
    assert "intercept only" in caplog.text
    rate = union.y.mean()
    assert np.all(model.w[:-1] == 0) and model.w[-1] == pytest.approx(math.log(rate / (1 - rate)))
    decision = model.decision(union)
    assert np.all(decision == decision[0])  # one prediction for every row


def test_a_given_lambda_or_one_part_skips_the_check(table):
    """Only a server that chose λ itself checks the parts (a fixed λ is an experiment's, or
    a baseline's); one part has nothing to check against."""
    a, b = halves(table)
    column = a.schema.features[0].name
    parts = [spurious(a, column, +1, 1), spurious(b, column, -1, 2)]
    union = concat(parts)
    X = Encoder.fit(union).design(union)
    np.testing.assert_allclose(fit_global_model(parts, lam=0.01).w,
                               logistic.fit(X, union.y, lam=0.01))
    one = noise_labels(a, 3)
    assert np.any(fit_global_model([one]).w[:-1] != 0)


def test_the_intercept_only_model_predicts_the_label_rate():
    y = np.array([1, 1, 1, 0])
    X = np.column_stack([np.arange(4.0), np.ones(4)])
    w = intercept_only(X, y)
    assert w[0] == 0 and logistic.sigmoid(X @ w) == pytest.approx(np.full(4, 0.75))
    assert np.isfinite(intercept_only(X, np.ones(4))).all()  # one class: clipped, finite
