"""The server's model on the union of released rows (METHOD.md, § Server, eq. 16).

Flower-free, so that experiments, the ServerApp and tests share one implementation: the union
is re-encoded with a scaler fitted on the union itself (the server sees no real rows), then an
L2-regularised logistic regression is trained and evaluated on any party's rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import numpy as np

from common import logistic
from common.encoding import Encoder
from common.errors import DataError
from common.metrics import fairness_report
from common.schema import TabularData, concat

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LinearModel:
    """A trained logistic model with the encoder of its training rows."""

    encoder: Encoder
    w: np.ndarray

    def decision(self, data: TabularData) -> np.ndarray:
        return self.encoder.design(data) @ self.w

    def evaluate(self, data: TabularData) -> dict[str, float]:
        """Accuracy and fairness metrics of this model on ``data``."""
        d = self.decision(data)
        return fairness_report(data.y, (d > 0).astype(np.int8), sensitive=data.s, decision=d)


def fit_global_model(parts: Sequence[TabularData], *, lam: float = 0.0,
                     solver: logistic.Solver = "newton") -> LinearModel:
    """Train ``argmin (1/M) Σ ℓ(w; x, y) + (λ/2)‖w‖²`` on the union of ``parts``; ``lam = 0``
    chooses λ by cross-validation on that union (:func:`common.logistic.cross_validated_lambda`:
    the server reads only the rows it received), and then, with two parts or more, keeps the
    model only if the parts agree on it (:func:`parts_disagree`); otherwise it returns the
    intercept-only model of the union's label rate."""
    parts = [p for p in parts if len(p) > 0]
    if not parts:
        raise DataError("the server received no rows to train on.")
    union = concat(parts)
    encoder = Encoder.fit(union)
    X = encoder.design(union)
    chosen = lam or logistic.cross_validated_lambda(X, union.y)
    w = logistic.fit(X, union.y, lam=chosen, solver=solver)
    if not lam and len(parts) > 1:
        losses = parts_disagree([encoder.design(p) for p in parts], [p.y for p in parts],
                                lam=chosen, solver=solver)
        if losses is not None:
            logger.warning(
                "the server's model: intercept only. Trained on all clients but one, the "
                "model predicts the held-out client's rows worse than their label rate does "
                "(mean held-out log-loss %.3f against %.3f): the clients' rows share no "
                "signal, as when a DP release at a small epsilon is noise.", *losses)
            w = intercept_only(X, union.y)
    return LinearModel(encoder=encoder, w=w)


def parts_disagree(designs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, lam: float,
                   solver: logistic.Solver = "newton") -> tuple[float, float] | None:
    """Leave one part out: fit at ``lam`` on the other parts, score the held-out part's rows by
    their mean log-loss, against the intercept-only model of the other parts' label rate.
    Returns both mean losses (weighted by the parts' sizes) when the model's is not lower,
    else None. Independent DP releases share their real signal but not their noise, so a model
    of noise loses to the label rate on every other client's rows."""
    model = null = 0.0
    total = sum(len(y) for y in labels)
    for k in range(len(designs)):
        X = np.vstack([d for j, d in enumerate(designs) if j != k])
        y = np.concatenate([v for j, v in enumerate(labels) if j != k])
        held, sign = designs[k], 2.0 * np.asarray(labels[k], dtype=np.float64) - 1.0
        w = logistic.fit(X, y, lam=lam, solver=solver)
        weight = len(sign) / total
        model += weight * float(np.mean(logistic.log1pexp(-sign * (held @ w))))
        null += weight * float(np.mean(logistic.log1pexp(-sign * (held @ intercept_only(X, y)))))
    return (model, null) if model >= null else None


def intercept_only(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights over a design whose last column is the intercept that give every row the
    label rate of ``y`` (clipped to half a row from 0 and 1)."""
    m = len(y)
    rate = float(np.clip(np.mean(y), 0.5 / m, 1 - 0.5 / m))
    w = np.zeros(X.shape[1])
    w[-1] = math.log(rate / (1 - rate))
    return w
