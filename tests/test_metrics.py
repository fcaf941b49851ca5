"""Every metric against fairlearn (an independent implementation) or numpy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    true_positive_rate,
)
from sklearn.metrics import balanced_accuracy_score

from common.metrics import fairness_report


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_fairlearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 500))
    s = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(int)
    y = (rng.random(n) < 0.6).astype(int)
    d = rng.normal(size=n) + 0.7 * s
    y_hat = (d > 0).astype(int)
    report = fairness_report(y, y_hat, sensitive=s, decision=d)

    assert report["accuracy"] == pytest.approx(np.mean(y == y_hat))
    assert report["constant_accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, y_hat))
    assert report["positive_rate"] == pytest.approx(y_hat.mean())
    assert report["spd"] == pytest.approx(
        demographic_parity_difference(y, y_hat, sensitive_features=s))
    assert report["dpr"] == pytest.approx(demographic_parity_ratio(y, y_hat, sensitive_features=s))
    tpr = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=y_hat, sensitive_features=s)
    assert report["eod"] == pytest.approx(tpr.difference())
    assert report["eor"] == pytest.approx(tpr.ratio())
    # signs follow METHOD.md: unprivileged minus privileged
    assert report["spd_signed"] == pytest.approx(y_hat[s == 0].mean() - y_hat[s == 1].mean())
    assert report["cov"] == pytest.approx(np.cov(s, d, bias=True)[0, 1])
    assert report["corr"] == pytest.approx(np.corrcoef(s, d)[0, 1])
    # Equal opportunity: the same quantities among the rows with y = 1.
    pos = y == 1
    assert report["cov_eo"] == pytest.approx(np.cov(s[pos], d[pos], bias=True)[0, 1])
    assert report["corr_eo"] == pytest.approx(np.corrcoef(s[pos], d[pos])[0, 1])


def test_hand_computed_example():
    y = np.array([1, 1, 0, 1, 1, 0, 1, 0])
    s = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    y_hat = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    r = fairness_report(y, y_hat, sensitive=s)
    # P(ŷ=1|s=0) = 1/4, P(ŷ=1|s=1) = 3/4; TPR: s=0: 1/2, s=1: 2/3
    assert r["spd_signed"] == pytest.approx(0.25 - 0.75)
    assert r["eod_signed"] == pytest.approx(0.5 - 2 / 3)
    assert r["dpr"] == pytest.approx(1 / 3)
    assert r["eor"] == pytest.approx(0.75)
    assert r["accuracy"] == pytest.approx(5 / 8)


def test_empty_group_gives_nan_not_an_error():
    r = fairness_report(np.array([1, 0, 1]), np.array([1, 0, 0]), sensitive=np.array([1, 1, 1]))
    assert np.isnan(r["spd"]) and np.isnan(r["dpr"])
    assert r["accuracy"] == pytest.approx(2 / 3)


def test_a_model_no_better_than_a_constant_prediction_is_called_so():
    """The run's summary warns when the pooled accuracy is at most the majority label's share
    (7 of 10 rows here); not when the model beats it, nor when the metrics are missing."""
    from common.comm import Exchange
    from server.result import FederationResult

    y, s = np.array([1] * 7 + [0] * 3), np.array([0, 1] * 5)

    def result(y_hat) -> FederationResult:
        return FederationResult(
            strategy="oneshot", model="logistic", params=4, columns=5,
            metrics={"n": 10.0, "positive_rate": float(np.mean(y_hat)),
                     **fairness_report(y, np.asarray(y_hat), sensitive=s)},
            rounds=1, exchanges=(Exchange(0, "query", 1, 1, 10, 100, 8, 90, 0.1),),
            formula_numbers={"rows": 10}, covered=(("query", "up"),))

    weak = result([1, 1, 1, 1, 0, 0, 0, 1, 1, 0])  # 6 of 10 right
    assert weak.metrics["constant_accuracy"] == pytest.approx(0.7)
    (line,) = weak.caveats()
    assert "no more accurate than a constant prediction, which scores 70.00 %" in line
    assert line in weak.summary_lines()
    assert result([1] * 7 + [0, 0, 1]).caveats() == []  # 9 of 10 right
    assert result([1] * 10).caveats() != []  # the constant itself
    missing = dataclasses.replace(weak, metrics={"accuracy": float("nan")})
    assert missing.caveats() == []
    # the printed table and the summary give each gap with its standard error
    from simulations.report import result_table

    (row,) = result_table(weak).rows
    se = np.sqrt(2 * 0.6 * 0.4 / 5)  # P(ŷ=1) = 3/5 in both groups of 5 rows
    assert weak.metrics["spd_se"] == pytest.approx(se)
    assert f"{weak.metrics['spd']:.4f} ± {se:.4f}" in row
    assert f"|SPD| {weak.metrics['spd']:.4f} ± {se:.4f}" in weak.summary_lines()[0]
    older = dataclasses.replace(weak, metrics={k: v for k, v in weak.metrics.items()
                                               if not k.endswith("_se")})
    assert f"{weak.metrics['spd']:.4f}" in result_table(older).rows[0]


def test_gap_standard_errors_match_the_spread_over_test_sets():
    """``spd_se`` and ``eod_se`` against the spread of the gap itself: 4,000 test sets of 600
    rows drawn from one population and judged by one fixed rule; the standard deviation of the
    signed gaps over the draws is the truth the formula must give (within 5 %)."""
    rng = np.random.default_rng(0)
    gaps, errors = {"spd": [], "eod": []}, {"spd": [], "eod": []}
    for _ in range(4000):
        s = (rng.random(600) < 0.8).astype(int)           # 20 % unprivileged
        y = (rng.random(600) < np.where(s == 1, 0.6, 0.4)).astype(int)
        p_hat = 0.2 + 0.5 * y + 0.1 * s                    # P(ŷ = 1 | y, s)
        y_hat = (rng.random(600) < p_hat).astype(int)
        report = fairness_report(y, y_hat, sensitive=s)
        for gap in gaps:
            gaps[gap].append(report[f"{gap}_signed"])
            errors[gap].append(report[f"{gap}_se"])
    for gap in gaps:
        assert np.mean(errors[gap]) == pytest.approx(np.std(gaps[gap]), rel=0.05)


def test_gap_standard_error_is_nan_for_an_empty_group():
    report = fairness_report(np.array([1, 0, 1]), np.array([1, 0, 0]), sensitive=np.ones(3))
    assert np.isnan(report["spd_se"]) and np.isnan(report["eod_se"])
