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

``spd_se`` and ``eod_se`` are the measurement's own noise: the binomial standard error of the
gap of this fixed model on as many rows per group as these,
``sqrt(p₀(1 − p₀)/n₀ + p₁(1 − p₁)/n₁)`` with ``p_a`` the group's rate and ``n_a`` its rows
(its rows with ``y = 1`` for EOD). Two test sets of this size drawn from the same population
give gaps that differ by about √2 of it, so a gap below about twice it is not told apart from
zero by these rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from common.errors import ReplyError

#: Keys of the group statistics (one float each; integers where they are counts).
COUNT_KEYS = (
    "n", "correct",
    "n-s0", "n-s1", "pos-s0", "pos-s1",          # statistical parity
    "n-y1-s0", "n-y1-s1", "tp-s0", "tp-s1",      # equal opportunity
    "sum-d", "sum-d2", "sum-sd",                 # covariance and correlation of s and d(x)
    "sum-d-y1", "sum-d2-y1", "sum-sd-y1",        # the same among y = 1 (equal opportunity)
)


def group_counts(y_true: np.ndarray, decision: np.ndarray, *, sensitive: np.ndarray
                 ) -> dict[str, float]:
    """Counts and sums from which :func:`report_from_counts` recovers every metric.

    Parameters
    ----------
    y_true : array of 0/1
    decision : array of float
        ``d(x)``; the prediction is ``ŷ = 1[d(x) > 0]``.
    sensitive : array of 0/1 (keyword-only: it must not be swapped with the labels)
    """
    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(sensitive).astype(np.int64)
    d = np.asarray(decision, dtype=np.float64)
    yhat = (d > 0).astype(np.int64)
    pos1 = y == 1
    return {
        "n": float(len(y)),
        "correct": float(np.sum(yhat == y)),
        "n-s0": float(np.sum(s == 0)),
        "n-s1": float(np.sum(s == 1)),
        "pos-s0": float(np.sum(yhat[s == 0])),
        "pos-s1": float(np.sum(yhat[s == 1])),
        "n-y1-s0": float(np.sum(pos1 & (s == 0))),
        "n-y1-s1": float(np.sum(pos1 & (s == 1))),
        "tp-s0": float(np.sum(yhat[pos1 & (s == 0)])),
        "tp-s1": float(np.sum(yhat[pos1 & (s == 1)])),
        "sum-d": float(np.sum(d)),
        "sum-d2": float(np.sum(d * d)),
        "sum-sd": float(np.sum(s * d)),
        "sum-d-y1": float(np.sum(d[pos1])),
        "sum-d2-y1": float(np.sum(d[pos1] * d[pos1])),
        "sum-sd-y1": float(np.sum(s[pos1] * d[pos1])),
    }


#: The sums of ``d(x)`` behind Cov and Corr; a private evaluation (:func:`counts_from_cells`)
#: does not send them.
SUM_KEYS = tuple(k for k in COUNT_KEYS if k.startswith("sum-"))


def counts_from_cells(cells: Sequence[float]) -> dict[str, float]:
    """The counts of :func:`group_counts` from the eight ``(s, y, ŷ)`` cells, in the order of
    :data:`common.privacy.EVALUATION_CELLS` (``4s + 2y + ŷ``); without the sums of ``d(x)``,
    so Cov and Corr are NaN."""
    c = np.asarray(cells, dtype=np.float64).reshape(2, 2, 2)  # [s, y, ŷ]
    out = {"n": c.sum(), "correct": c[:, 0, 0].sum() + c[:, 1, 1].sum()}
    for g in (0, 1):
        out |= {f"n-s{g}": c[g].sum(), f"pos-s{g}": c[g, :, 1].sum(),
                f"n-y1-s{g}": c[g, 1].sum(), f"tp-s{g}": c[g, 1, 1]}
    return {k: float(v) for k, v in out.items()}


def check_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Validate one client's statistics; raises :class:`ReplyError` naming the problem.

    The sums of ``d(x)`` (:data:`SUM_KEYS`) come all or none (a private evaluation sends none);
    without them they are NaN, and so are Cov and Corr."""
    required = [k for k in COUNT_KEYS if k not in SUM_KEYS]
    missing = [k for k in required if k not in counts]
    sums = [k for k in SUM_KEYS if k in counts]
    if sums and len(sums) < len(SUM_KEYS):
        missing += [k for k in SUM_KEYS if k not in counts]
    if missing:
        raise ReplyError(f"the statistics lack the key(s) {missing}.")
    out = {k: float(counts[k]) for k in required}
    out |= {k: float(counts[k]) if sums else math.nan for k in SUM_KEYS}
    bad = [k for k, v in out.items() if not math.isfinite(v) and (sums or k not in SUM_KEYS)]
    if bad:
        raise ReplyError(f"the statistics hold non-finite value(s) for {bad}.")
    integral = [k for k in COUNT_KEYS if not k.startswith("sum-")]
    if any(out[k] < 0 or not out[k].is_integer() for k in integral):
        raise ReplyError("the counts must be non-negative integers.")
    if out["n-s0"] + out["n-s1"] != out["n"] or out["correct"] > out["n"]:
        raise ReplyError("the counts are inconsistent: n-s0 + n-s1 ≠ n, or correct > n.")
    for part, whole in (("pos-s0", "n-s0"), ("pos-s1", "n-s1"), ("tp-s0", "n-y1-s0"),
                        ("tp-s1", "n-y1-s1"), ("n-y1-s0", "n-s0"), ("n-y1-s1", "n-s1")):
        if out[part] > out[whole]:
            raise ReplyError(f"the counts are inconsistent: {part} > {whole}.")
    return out


def pool(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise sum of several clients' statistics."""
    total = dict.fromkeys(COUNT_KEYS, 0.0)
    for c in counts:
        for k in COUNT_KEYS:
            total[k] += float(c[k])
    return total


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    hi = max(a, b)
    return 1.0 if hi == 0 else min(a, b) / hi


def _gap_se(p0: float, n0: float, p1: float, n1: float) -> float:
    """Binomial standard error of ``p0 − p1`` from independent groups of ``n0`` and ``n1``."""
    if min(n0, n1) <= 0 or math.isnan(p0) or math.isnan(p1):
        return float("nan")
    return math.sqrt(p0 * (1.0 - p0) / n0 + p1 * (1.0 - p1) / n1)


def report_from_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Accuracy, balanced accuracy, P(ŷ=1), |SPD|, |EOD| and their standard errors, DPR, EOR,
    Cov and Corr (SP and EO) from (pooled) statistics, and ``constant_accuracy``: the accuracy
    of predicting these rows' majority label for every row (the best constant classifier on
    them, which has no gap).

    A rate whose group is empty is NaN.
    """
    n = counts["n"]
    sp0, sp1 = _rate(counts["pos-s0"], counts["n-s0"]), _rate(counts["pos-s1"], counts["n-s1"])
    tp0 = _rate(counts["tp-s0"], counts["n-y1-s0"])
    tp1 = _rate(counts["tp-s1"], counts["n-y1-s1"])
    positives = counts["n-y1-s0"] + counts["n-y1-s1"]
    true_pos = counts["tp-s0"] + counts["tp-s1"]
    tpr, tnr = _rate(true_pos, positives), _rate(counts["correct"] - true_pos, n - positives)
    cov, corr = _cov_corr(n, counts["n-s1"], counts["sum-d"], counts["sum-d2"], counts["sum-sd"])
    cov_eo, corr_eo = _cov_corr(counts["n-y1-s0"] + counts["n-y1-s1"], counts["n-y1-s1"],
                                counts["sum-d-y1"], counts["sum-d2-y1"], counts["sum-sd-y1"])
    return {
        "accuracy": _rate(counts["correct"], n),
        "constant_accuracy": _rate(max(positives, n - positives), n),
        "balanced_accuracy": (float(np.nanmean([tpr, tnr]))
                              if not (math.isnan(tpr) and math.isnan(tnr)) else float("nan")),
        "positive_rate": _rate(counts["pos-s0"] + counts["pos-s1"], n),
        "spd_signed": sp0 - sp1,
        "eod_signed": tp0 - tp1,
        "spd": abs(sp0 - sp1),
        "eod": abs(tp0 - tp1),
        "spd_se": _gap_se(sp0, counts["n-s0"], sp1, counts["n-s1"]),
        "eod_se": _gap_se(tp0, counts["n-y1-s0"], tp1, counts["n-y1-s1"]),
        "dpr": _ratio(sp0, sp1),
        "eor": _ratio(tp0, tp1),
        "cov": cov,
        "corr": corr,
        "cov_eo": cov_eo,
        "corr_eo": corr_eo,
        "n": n,
    }


def _cov_corr(n: float, n_s1: float, sum_d: float, sum_d2: float, sum_sd: float
              ) -> tuple[float, float]:
    """Population covariance and correlation of a binary ``s`` and ``d`` from sums."""
    mean_s, mean_d = _rate(n_s1, n), _rate(sum_d, n)
    cov = _rate(sum_sd, n) - mean_s * mean_d
    var_s = mean_s * (1.0 - mean_s)  # s is binary: E[s²] = E[s]
    var_d = _rate(sum_d2, n) - mean_d * mean_d
    denom = math.sqrt(var_s * var_d) if var_s > 0 and var_d > 0 else 0.0
    return cov, cov / denom if denom > 0 else float("nan")


def gap(counts: Mapping[str, float], measure: str) -> float:
    """The signed fairness gap (SPD for ``"sp"``, EOD for ``"eo"``) of the statistics."""
    report = report_from_counts(counts)
    return report["spd_signed"] if measure == "sp" else report["eod_signed"]


def fairness_report(
    y_true: np.ndarray, y_pred: np.ndarray, *, sensitive: np.ndarray,
    decision: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy, |SPD|, |EOD|, DPR, EOR and, given the decision values, Cov and Corr.

    Computed from the sufficient statistics (:func:`group_counts`), so that a report on one
    table and a report pooled over clients are the same function of the same numbers.

    Parameters
    ----------
    y_true, y_pred : array of 0/1
    sensitive : array of 0/1 (keyword-only: it must not be swapped with the labels)
    decision : array of float, optional
        ``d_w(x)`` of a linear model with ``y_pred = 1[d > 0]``; enables ``cov`` and ``corr``.
    """
    y_pred = np.asarray(y_pred).astype(np.int64)
    d = y_pred - 0.5 if decision is None else np.asarray(decision, dtype=np.float64)
    if decision is not None and not np.array_equal(d > 0, y_pred == 1):
        raise ValueError("y_pred must be 1[decision > 0].")
    report = report_from_counts(group_counts(y_true, d, sensitive=sensitive))
    del report["n"]
    if decision is None:
        for key in ("cov", "corr", "cov_eo", "corr_eo"):
            del report[key]
    return report
