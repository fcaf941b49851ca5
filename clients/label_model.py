r"""The DP label model: fair-then-private's relabelling of the generator's rows.

The stage-1 rows are fair in one respect only: the logistic model trained on them is fair on
the client's real rows. That property lives in the conditional law of ``y`` given ``[z, s]``
that the rows encode, not in their low-order statistics, and a DP generator fitted on them
re-learns the real rows' group gap (measured: Adult, |SPD| 0.02 → 0.15–0.18). The server trains
an ordinary logistic model, so the release keeps stage 1's fairness when its labels follow the
logistic model of the stage-1 rows: the generator draws ``[z, s]``, and each row's label is
drawn from ``Bernoulli(σ(xᵀ w̃))``, with ``w̃`` a DP estimate of that model. The server's fit
on such rows is a consistent estimate of ``w̃`` (the model is well specified).

``w̃`` is fitted by full-batch noisy gradient descent (the Gaussian mechanism on the clipped
per-row gradient sum, ``T`` times, adaptively composed):

.. math::

    g_t = \frac{1}{\hat N}\Bigl(\sum_i \operatorname{clip}_c\bigl((σ(x_i^\top w_t) - y_i)\,
    x_i\bigr) + \mathcal N(0, σ^2 c^2 I)\Bigr) + λ w_t,

which is ``T/(2σ²)``-zCDP for add/remove neighbours (Bun & Steinke 2016: each step is the
Gaussian mechanism with sensitivity ``c``). Its budget is a share of the run's: the generator
is fitted with this mechanism *reserved* in its own accounting (``fit(data, reserve=...)``), so
the release's (ε, δ) is the exact composition of both. Everything else the fit uses is
post-processing of the generator's DP rows (the *reference* rows): the encoding (their column
means and deviations), the step size (from their largest curvature) and the row count ``N̂``
(their number, the generator's DP estimate), with ``λ = 1/N̂``.

The clip is ``c = C/2`` with ``C = √(features + 2)``, the norm of a row whose every
standardised entry is one deviation from the mean (a property of the encoding, not of any
dataset). A row's residual ``|σ(xᵀw) − y|`` is below ½ exactly when the model classifies it
right, so the gradients of the rows it classifies right (``‖x‖ ≤ C``) pass whole, and only the
misclassified rows' pulls are capped: the descent minimises the logistic loss continued by its
tangent past the margin where a row's residual reaches ``c/‖x‖`` (a Huber-like loss). Clipping
at ``C`` instead would leave nearly every gradient whole and double the noise; measured on both
bundled datasets, a held-out one and under both measures, the halved noise outweighs the cap's
bias (docs/fairness.md, "The gradient clip at C/2").

On a small table the noise can swamp the model. A tenth of its budget pays for one noisy count
(:meth:`DPLabelModel.check`): the stage-1 rows it predicts right, minus those a constant
predicts right. Not positive, the pipeline mends the release with the stage-1 repair instead
(:mod:`clients.pipeline`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from common import logistic
from common.encoding import Encoder
from common.errors import ConfigError
from common.privacy import Mechanism, NoiseSource, zcdp_rho
from common.schema import TabularData

#: Noisy gradient steps: enough for heavy-ball descent to converge on standardised features.
STEPS = 200
#: The per-row gradient clip as a fraction of the row norm ``C = √(features + 2)``: a residual
#: below ½ is a row classified right, whose gradient then passes whole.
GRADIENT_CLIP = 0.5
#: Heavy-ball momentum of the descent.
MOMENTUM = 0.9
#: The share of the label model's budget spent on its check (:meth:`DPLabelModel.check`).
CHECK_SHARE = 0.1
#: The label model's default share of the run's zCDP budget (run config ``label-share``): the
#: release's fairness is carried by its labels alone, and the server's fit is consistent for
#: any law of the generator's features, so neither half of the budget is worth more a priori.
SHARE = 0.5


def label_mechanisms(*, epsilon: float, delta: float, share: float = SHARE,
                     steps: int = STEPS) -> tuple[Mechanism, Mechanism]:
    """The label model's two Gaussian mechanisms, whose zCDP total is ``share`` of the budget
    ``ρ(ε, δ)``: the fit (``steps`` full-batch steps, ``(1 − CHECK_SHARE)·share·ρ``) and the
    check (one count, ``CHECK_SHARE·share·ρ``)."""
    if not 0 < share < 1:
        raise ConfigError(f"the label model's budget share must lie in (0, 1), got {share}: "
                          "the generator needs the rest.")
    rho = share * zcdp_rho(epsilon, delta)
    fit = Mechanism("label model (noisy gradient descent)",
                    math.sqrt(steps / (2.0 * (1 - CHECK_SHARE) * rho)), sample_rate=1.0,
                    steps=steps)
    check = Mechanism("label model check (noisy count)", math.sqrt(1 / (2.0 * CHECK_SHARE * rho)))
    return fit, check


def clipped_residual(margin: np.ndarray, y: np.ndarray, norms: np.ndarray,
                     clip: float) -> np.ndarray:
    """Per-row residuals ``σ(m) − y`` scaled so that each row's gradient ``residual·x`` has
    norm at most ``clip`` (``norms``: the rows' ``‖x‖``)."""
    residual = logistic.sigmoid(margin) - y
    return residual * np.minimum(1.0, clip / np.maximum(np.abs(residual) * norms, 1e-300))


@dataclasses.dataclass(frozen=True)
class DPLabelModel:
    """A logistic model ``w`` over ``encoder``'s ``[z, s, 1]``, fitted under DP."""

    encoder: Encoder
    w: np.ndarray
    lam: float
    clip: float

    @classmethod
    def fit(cls, data: TabularData, reference: TabularData, mechanism: Mechanism,
            noise: NoiseSource) -> DPLabelModel:
        """Fit on ``data`` (private: read only through ``mechanism``'s noisy gradients), with
        ``reference`` (DP rows) for everything else."""
        if len(reference) == 0:
            raise ConfigError("the label model needs reference rows from the DP generator; "
                              "it drew none.")
        encoder = Encoder.fit(reference)
        X_ref = encoder.design(reference)
        lam = 1.0 / len(reference)
        curvature = 0.25 * float(np.linalg.eigvalsh(X_ref.T @ X_ref / len(X_ref))[-1]) + lam
        step = 1.0 / curvature  # heavy ball: w ← w − g/L + β(w − w_prev)
        clip = GRADIENT_CLIP * math.sqrt(len(data.schema.features) + 2)

        X, y = encoder.design(data), data.y.astype(np.float64)
        norms = np.linalg.norm(X, axis=1)
        n_hat = float(len(reference))
        w, velocity, average = np.zeros(X.shape[1]), np.zeros(X.shape[1]), np.zeros(X.shape[1])
        steps, sigma = mechanism.steps, mechanism.noise_multiplier * clip
        for t in range(steps):
            residual = clipped_residual(X @ w, y, norms, clip)  # row i's gradient: residual·x_i
            g = (X.T @ residual + noise.normal(0.0, sigma, size=w.shape)) / n_hat + lam * w
            velocity = MOMENTUM * velocity + g
            w = w - step * velocity
            if t >= steps // 2:  # average the second half of the iterates
                average += w
        return cls(encoder, average / (steps - steps // 2), lam, clip)

    def constant(self, reference: TabularData) -> np.ndarray:
        """Weights over the same encoding that predict ``reference``'s majority label for every
        row (only the intercept is set): the model the check compares against."""
        w = np.zeros_like(self.w)
        w[-1] = 1.0 if 2 * int(np.sum(reference.y)) >= len(reference) else -1.0
        return w

    def check(self, data: TabularData, other: np.ndarray, mechanism: Mechanism,
              noise: NoiseSource) -> float:
        """How many more of ``data``'s labels this model predicts than the model ``other``
        (weights over the same encoding) does, released with ``mechanism``'s noise: each row
        adds −1, 0 or 1 to the count (sensitivity 1). Against :meth:`constant`, a value ≤ 0 says
        the noise has left the label model no better than a constant on the very rows it was
        fitted on."""
        X = self.encoder.design(data)
        y = data.y.astype(bool)
        ours = ((X @ self.w) > 0) == y
        theirs = ((X @ other) > 0) == y
        margin = float(np.sum(ours.astype(np.int64) - theirs.astype(np.int64)))
        return margin + float(noise.normal(0.0, mechanism.noise_multiplier))

    def probabilities(self, rows: TabularData) -> np.ndarray:
        """``P(y = 1 | z, s)`` under the model."""
        return logistic.sigmoid(self.encoder.design(rows) @ self.w)

    def relabel(self, rows: TabularData, rng: np.random.Generator) -> TabularData:
        """``rows`` with every label drawn from the model (post-processing), by systematic
        sampling in the order of the probabilities: row ``i`` is positive with probability
        ``p_i`` exactly, as with independent draws, but every run of rows in that order holds
        its expected number of positives to within one, which removes most of the label
        noise a server's fit on the rows would otherwise see."""
        p = self.probabilities(rows)
        order = np.argsort(p, kind="stable")
        ticks = np.floor(np.cumsum(p[order]) + rng.random())
        y = np.empty(len(rows), dtype=rows.y.dtype)
        y[order] = np.diff(ticks, prepend=0.0).astype(rows.y.dtype)  # ⌊C_0 + U⌋ = 0
        return dataclasses.replace(rows, y=y)
