"""The server's model on the union of released rows (METHOD.md, § Server, eq. 16).

Flower-free, so that experiments, the ServerApp and tests share one implementation: the union
is re-encoded with a scaler fitted on the union itself (the server sees no real rows), then an
L2-regularised logistic regression is trained and evaluated on any party's rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from common import logistic
from common.encoding import Encoder
from common.errors import DataError
from common.metrics import fairness_report
from common.schema import TabularData, concat


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
    the server reads only the rows it received)."""
    parts = [p for p in parts if len(p) > 0]
    if not parts:
        raise DataError("the server received no rows to train on.")
    union = concat(parts)
    encoder = Encoder.fit(union)
    X = encoder.design(union)
    lam = lam or logistic.cross_validated_lambda(X, union.y)
    w = logistic.fit(X, union.y, lam=lam, solver=solver)
    return LinearModel(encoder=encoder, w=w)
