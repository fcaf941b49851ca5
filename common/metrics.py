r"""Accuracy and group-fairness metrics (METHOD.md, § Metrics).

With ``ŷ`` the prediction, ``s`` the sensitive attribute (1 = privileged), ``y`` the label:

.. math::

    \mathrm{SPD} = P(\hat y=1 \mid s=0) - P(\hat y=1 \mid s=1), \qquad
    \mathrm{EOD} = P(\hat y=1 \mid y=1, s=0) - P(\hat y=1 \mid y=1, s=1),

    \mathrm{DPR} = \frac{\min_a P(\hat y=1 \mid s=a)}{\max_a P(\hat y=1 \mid s=a)}, \qquad
    \mathrm{EOR} = \frac{\min_a P(\hat y=1 \mid y=1, s=a)}{\max_a P(\hat y=1 \mid y=1, s=a)},

    \mathrm{Cov} = \frac{1}{N}\sum_i (s_i - \bar s)\, d_w(x_i), \qquad
    \mathrm{Corr} = \mathrm{Pearson}(s, d_w(x)),

    \mathrm{Cov}_{EO} = \frac{1}{N_+}\sum_{i: y_i = 1} (s_i - \bar s_+)\, d_w(x_i), \qquad
    \mathrm{Corr}_{EO} = \mathrm{Pearson}(s, d_w(x) \mid y = 1).

``cov``/``corr`` are the statistical-parity quantities; ``cov_eo``/``corr_eo`` the
equal-opportunity ones (computed on the rows with ``y = 1``), the covariance the EO penalty of
stage 1 drives to zero.

Also reported: ``positive_rate`` ``P(ŷ=1)`` and ``balanced_accuracy`` (mean of the true-positive
and true-negative rates). They expose a degenerate "fair" model: on data with a large majority
label (Law School: 89 % pass) predicting the majority for everyone has high accuracy and zero
SPD/EOD, and only these two numbers show it.

``spd`` and ``eod`` in a report are absolute values (as the paper reports them); the signed
values are kept as ``spd_signed`` and ``eod_signed``. A quantity whose group is empty is NaN.
"""

from __future__ import annotations

import numpy as np


def _rate(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def _ratio(a: float, b: float) -> float:
    hi = max(a, b)
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 1.0 if hi == 0 else float(min(a, b) / hi)


def fairness_report(
    y_true: np.ndarray, y_pred: np.ndarray, *, sensitive: np.ndarray, decision: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, |SPD|, |EOD|, DPR, EOR and, given the decision values, Cov and Corr.

    Parameters
    ----------
    y_true, y_pred : array of 0/1
    sensitive : array of 0/1 (keyword-only: it must not be swapped with the labels)
    decision : array of float, optional
        ``d_w(x)`` of a linear model; enables ``cov`` and ``corr``.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    s = np.asarray(sensitive).astype(np.int64)
    sp0, sp1 = _rate(y_pred, s == 0), _rate(y_pred, s == 1)
    tp0, tp1 = _rate(y_pred, (s == 0) & (y_true == 1)), _rate(y_pred, (s == 1) & (y_true == 1))
    tpr, tnr = _rate(y_pred, y_true == 1), _rate(1 - y_pred, y_true == 0)
    report = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.nanmean([tpr, tnr])) if not (np.isnan(tpr) and np.isnan(tnr)) else float("nan"),
        "positive_rate": float(np.mean(y_pred)),
        "spd_signed": sp0 - sp1,
        "eod_signed": tp0 - tp1,
        "spd": abs(sp0 - sp1),
        "eod": abs(tp0 - tp1),
        "dpr": _ratio(sp0, sp1),
        "eor": _ratio(tp0, tp1),
    }
    if decision is not None:
        d = np.asarray(decision, dtype=np.float64)
        report["cov"], report["corr"] = _cov_corr(s, d)
        report["cov_eo"], report["corr_eo"] = _cov_corr(s[y_true == 1], d[y_true == 1])
    return report


def _cov_corr(s: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Population covariance and Pearson correlation of ``s`` and ``d`` (NaN when empty)."""
    if len(s) == 0:
        return float("nan"), float("nan")
    sc = s - s.mean()
    cov = float(np.mean(sc * d))
    denom = np.std(s) * np.std(d)
    return cov, float(np.mean(sc * (d - d.mean())) / denom) if denom > 0 else float("nan")
