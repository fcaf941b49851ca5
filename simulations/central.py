"""Central fair references and the distance of a point to their frontier.

What a user could reach *without* federation or privacy, on the same rows: every reference is
fitted on the union of the clients' real training rows and evaluated on the pooled test rows,
with the server's model class (logistic regression on ``[z, s, 1]``, the same standardisation;
scikit-learn's ``C = 1/(λ·N)`` with the intercept column penalised like the other weights, as
in :func:`common.logistic.fit`). λ is chosen by cross-validation on those rows
(:func:`common.logistic.cross_validated_lambda`) unless given, so that the references are as
good as a central user would make them, whatever λ the pipeline runs with:

* ``constant`` — every row predicted the union's majority label: no gap under either measure,
  and the accuracy any fair point must beat to be worth more than no model at all;
* ``unconstrained`` — that model;
* ``exponentiated-gradient`` — fairlearn's reductions approach (Agarwal et al. 2018) under
  demographic parity (SP) or true-positive-rate parity (EO), at several bounds on the gap;
* ``threshold-optimizer`` — fairlearn's post-processing (Hardt et al. 2016) of the
  unconstrained model, for the accuracy and the balanced-accuracy objective.

Both fairlearn methods predict at random (a mixture of classifiers, or a randomised threshold);
their predictions are drawn with the run's seed. The metrics are
:func:`common.metrics.fairness_report` (tested against fairlearn's own).

:func:`frontier_gap` compares a point with the references: among those whose gap is no larger,
the best accuracy and balanced accuracy, and how far below them the point is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from common.encoding import Encoder
from common.errors import ConfigError
from common.logistic import cross_validated_lambda
from common.metrics import fairness_report
from common.schema import TabularData, concat

#: Bounds on the gap for ExponentiatedGradient (the frontier's points).
EG_BOUNDS = (0.005, 0.01, 0.02, 0.05, 0.1)
#: ThresholdOptimizer's objectives (scikit-learn scorer names) and their labels.
TO_OBJECTIVES = {"accuracy": "accuracy_score", "balanced": "balanced_accuracy_score"}
CONSTRAINTS = {"sp": "demographic_parity", "eo": "true_positive_rate_parity"}


def _logistic(lam: float, n: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0 / (lam * n), fit_intercept=False, max_iter=2000)


def _record(method: str, setting: str, test: TabularData, y_pred: np.ndarray) -> dict:
    report = fairness_report(test.y, y_pred, sensitive=test.s)
    return {"method": method, "setting": setting,
            **{k: float(report[k]) for k in ("accuracy", "balanced_accuracy", "positive_rate",
                                             "spd", "eod", "spd_se", "eod_se")}}


def central_references(parts: Sequence[TabularData], test: TabularData, *, measure: str,
                       seed: int, lam: float = 0.0,
                       bounds: Sequence[float] = EG_BOUNDS) -> list[dict]:
    """Every central reference on the union of ``parts``, evaluated on ``test`` (``lam = 0``:
    λ by cross-validation on the union)."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import (
        DemographicParity,
        ExponentiatedGradient,
        TruePositiveRateParity,
    )

    if measure not in CONSTRAINTS:
        raise ConfigError(f"measure must be one of {sorted(CONSTRAINTS)}, got {measure!r}.")
    train = concat(list(parts))
    encoder = Encoder.fit(train)
    X, X_test = encoder.design(train), encoder.design(test)
    lam = lam or cross_validated_lambda(X, train.y)
    majority = int(2 * train.y.sum() >= len(train))
    out = [_record("constant", "majority label", test, np.full(len(test), majority))]
    base = _logistic(lam, len(train)).fit(X, train.y)
    out.append(_record("unconstrained", f"λ = {lam:g}", test, base.predict(X_test)))
    moment = DemographicParity if measure == "sp" else TruePositiveRateParity
    for bound in bounds:
        eg = ExponentiatedGradient(_logistic(lam, len(train)),
                                   constraints=moment(difference_bound=bound))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            eg.fit(X, train.y, sensitive_features=train.s)
        out.append(_record("exponentiated-gradient", f"bound {bound:g}", test,
                           eg.predict(X_test, random_state=seed)))
    for label, objective in TO_OBJECTIVES.items():
        to = ThresholdOptimizer(estimator=base, constraints=CONSTRAINTS[measure],
                                objective=objective, prefit=True, predict_method="predict_proba")
        to.fit(X, train.y, sensitive_features=train.s)
        out.append(_record("threshold-optimizer", label, test,
                           to.predict(X_test, sensitive_features=test.s, random_state=seed)))
    return out


def frontier_gap(point: dict, references: Sequence[dict], *, gap: str) -> dict:
    """How far ``point`` is from the central frontier at its own gap.

    Among the references whose ``gap`` (``"spd"`` or ``"eod"``) is at most the point's, the
    best accuracy and balanced accuracy, and the point's shortfall in percentage points
    (positive: below the frontier). None where no reference is that fair (with the
    ``constant`` reference among them, which has no gap, every point has one). Also the
    constant classifier's accuracy (None without that reference).
    """
    constant = [r["accuracy"] for r in references if r.get("method") == "constant"]
    out = {"constant_accuracy": constant[0] if constant else None}
    fair = [r for r in references if r[gap] <= point[gap] + 1e-12]
    if not fair:
        return {**out, "frontier_accuracy": None, "frontier_balanced": None,
                "accuracy_shortfall": None, "balanced_shortfall": None}
    best_acc = max(r["accuracy"] for r in fair)
    best_bal = max(r["balanced_accuracy"] for r in fair)
    return {**out, "frontier_accuracy": best_acc, "frontier_balanced": best_bal,
            "accuracy_shortfall": 100.0 * (best_acc - point["accuracy"]),
            "balanced_shortfall": 100.0 * (best_bal - point["balanced_accuracy"])}


def verdict(point: dict, distance: dict, *, gap: str, utility: str = "accuracy") -> str:
    """One line: the point (with its noise floor when it carries ``<gap>_floor``: the |gap| a
    model with no gap shows on the same rows) and its distance to the central frontier. A
    point no better than the constant classifier in the run's ``utility`` is called so: with
    ``"accuracy"``, no more accurate than the majority label; with ``"balanced"``, whose
    operating point trades accuracy for the minority label on purpose, a balanced accuracy of
    at most ½."""
    floor = point.get(f"{gap}_floor")
    head = (f"{point['label']}: |{gap.upper()}| {point[gap]:.4f}"
            + ("" if floor is None else f" (noise floor {floor:.4f})")
            + f", accuracy {100 * point['accuracy']:.2f} %, balanced "
              f"{point['balanced_accuracy']:.3f}")
    if distance["accuracy_shortfall"] is None:
        return head + " — fairer than every central reference"
    acc, bal = distance["accuracy_shortfall"], distance["balanced_shortfall"]

    def words(x: float, what: str) -> str:
        if math.isclose(x, 0.0, abs_tol=0.05):
            return f"at the central frontier's {what}"
        return f"{abs(x):.2f} points {'below' if x > 0 else 'above'} the frontier's {what}"

    line = f"{head} — {words(acc, 'accuracy')}, {words(bal, 'balanced accuracy')}"
    constant = distance.get("constant_accuracy")
    if constant is None:
        return line
    if utility == "balanced":
        if point["balanced_accuracy"] <= 0.5 + 1e-12:
            line += "; no better than the constant classifier (balanced accuracy 0.500)"
    elif point["accuracy"] <= constant + 1e-12:
        line += (f"; no more accurate than the constant classifier ({100 * constant:.2f} %: "
                 "every row the majority label)")
    return line
