r"""Stage 1: fair synthetic data by bilevel optimisation (METHOD.md, § Stage 1).

A client learns ``Ñ`` synthetic rows ``(z̃_j, s̃_j, ỹ_j)``; only ``z̃`` moves. A logistic model
trained on them,

.. math::

    w^*(\tilde z) = \arg\min_w\; g(w, \tilde z)
        = \frac{1}{\tilde N}\sum_j \ell(w; \tilde x_j, \tilde y_j)
          + \frac{\lambda_{in}}{2}\lVert w\rVert^2,

must do well on the client's real rows and have a small Zafar decision-boundary covariance:

.. math::

    \min_{\tilde z}\; F(\tilde z) = \underbrace{\frac{1}{N}\sum_i \ell(w^*; x_i, y_i)
        + \rho\,\varphi(c^\top w^*)}_{f(w^*)}
        + \frac{\lambda_{out}}{2\tilde N}\lVert\tilde z\rVert_F^2,

with ``c`` the covariance vector of the chosen measure (SP or EO) and ``φ(c) = c²`` or, with
a tolerance ``τ``, ``φ(c) = max(0, |c| − τ)²``. By default the regulariser is centred on the
initial rows, ``‖z̃ − z̃⁰‖²`` (see :class:`Stage1Config`), and each learned column keeps the
client's mean and standard deviation. The hypergradient is exact (implicit function
theorem): ``v = H⁻¹∇f(w*)`` and

.. math::

    \frac{\partial F}{\partial \tilde x_j} = -\frac{1}{\tilde N}\bigl(a_j v + (\tilde x_j^\top v)\,
        \sigma'_j\, w^*\bigr) + \frac{\lambda_{out}}{\tilde N}\tilde z_j,
    \quad a_j = -\bar y_j\sigma(-\bar y_j m_j),\ \sigma'_j = \sigma(m_j)\sigma(-m_j).

The inner problem is solved by warm-started Newton (or L-BFGS), the outer by Adam.
Categorical features keep the values of the real rows that initialised them (a one-hot block
moved by gradient steps has no category to map back to); continuous features are learned and
returned in the dataset's original units.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clients import fairness_terms
from clients.bilevel_problem import BilevelProblem
from clients.outer_steps import Adam, BestStep, Box
from common import logistic
from common.encoding import Encoder, design_matrix
from common.errors import ConfigError, DataError
from common.schema import TabularData

logger = logging.getLogger(__name__)

Measure = Literal["sp", "eo"]
MEASURES = ("sp", "eo")
#: What the outer loss rewards: accuracy (every real row counts once) or balanced accuracy.
UTILITIES = ("accuracy", "balanced")


def utility_weights(y: np.ndarray, utility: str) -> np.ndarray | None:
    r"""Weights of the real rows in the outer loss: None for accuracy; for balanced accuracy
    ``N / (2 N_y)`` per row of label ``y``, so that both labels weigh half of the loss (the
    logistic surrogate of ``1 − (TPR + TNR)/2``) and the weights average 1. A label absent from
    the rows gives the other one all the weight."""
    if utility == "accuracy":
        return None
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y, minlength=2).astype(np.float64)
    present = counts > 0
    per_label = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1.0)), 0.0)
    return per_label[y]


@dataclasses.dataclass(frozen=True)
class Stage1Config:
    """Hyperparameters of stage 1.

    The defaults are the paper's penalty form (``ρ·Cov²``, no target) with the departures of
    docs/method.md (anchored rows, kept moments, λ_in cross-validated). A run's own defaults
    (:class:`common.run_config.RunConfig`) differ: they ask for ``target = 0.02`` on the smooth
    gap, as :func:`clients.pipeline.pipeline_config` builds it.

    Attributes
    ----------
    measure : {"sp", "eo"}
        Statistical parity or equal opportunity.
    relaxation : {"covariance", "gap"}
        What stands in for the measured gap in the outer loss
        (:mod:`clients.fairness_terms`): the paper's decision-boundary covariance, or the smooth
        difference of the groups' mean predicted probabilities, whose zero is the gap's.
    rho : float
        Penalty weight ``ρ ≥ 0`` of ``ρ·φ(g)`` (0: no fairness term). Not used with a target.
    tolerance : float, optional
        ``τ`` of the hinge ``φ(g) = max(0, |g| − τ)²`` on the relaxation; ``None`` uses
        ``φ(g) = g²``.
    target : float, optional
        The fairness target in the user's terms: the measured gap (SPD or EOD) of the inner
        model on the client's real rows must be at most ``target``. Stage 1 then runs the
        constrained form (:class:`clients.bilevel_problem.BilevelProblem`): its multiplier
        rises while the gap exceeds the target, and the rows returned are those of the outer
        step with the best loss among the steps that met it (see ``keep``; the nearest miss
        otherwise, and the real rows unchanged if they already meet it).
    multiplier_lr : float
        Step size ``η`` of the target's multiplier (gap units → multiplier units).
    keep : {"loss", "first"}
        Which outer step a target run returns when the real rows do not already meet the target
        (if they do, they are returned unchanged): the lowest loss on the real rows among the
        steps that met it (default), or the first of them (the least change; it tends to
        overshoot the target, since the multiplier is at its largest when the gap first drops
        below it).
    utility : {"accuracy", "balanced"}
        What the outer loss rewards on the real rows: the plain mean of the logistic loss, or
        the label-balanced mean (:func:`utility_weights`) with the synthetic rows allocated
        half to each label (:func:`allocate_cells`), so that an ordinary model trained on the
        synthetic rows lands at a balanced operating point.
    lam_in, lam_out : float
        Inner L2 strength (> 0; 0 chooses it by cross-validation of the logistic model on the
        rows stage 1 reads, :func:`common.logistic.cross_validated_lambda`) and outer
        regulariser strength (≥ 0).
    anchor : {"init", "zero"}
        Centre of the outer regulariser ``(λ_out / 2Ñ)‖z̃ − centre‖²``: ``"zero"`` is METHOD.md's
        ``‖z̃‖²``; ``"init"`` (default) keeps the synthetic rows near the real rows they started
        from, so that stage 1 moves them only as far as the fairness term asks. On Law School the
        anchored form reaches |SPD| ≈ 0 at −0.2 accuracy points, where ``"zero"`` loses ~1.2
        points (docs/results.md, stage 1).
    lr : float
        Adam step size.
    iterations : int
        Outer iterations ``T``.
    fraction : float
        ``Ñ / N`` in (0, 1].
    solver : {"newton", "lbfgs"}
        Inner solver.
    keep_moments : bool
        Learn ``u`` with ``z̃ = standardise(u)`` column-wise, so that every learned column of the
        synthetic rows keeps the client's mean and standard deviation. The server standardises
        the union with its own scaler; with the moments kept, that scaler sees the rows in the
        coordinates stage 1 optimised for (without it, stage 1 may rescale columns to dodge
        ``λ_in`` and the server's re-standardisation undoes the effect).
    seed : int
        Seeds the choice of initial rows when ``Ñ < N``.
    """

    measure: Measure = "sp"
    relaxation: fairness_terms.Relaxation = "covariance"
    rho: float = 10.0
    tolerance: float | None = None
    target: float | None = None
    multiplier_lr: float = 1.0
    keep: Literal["loss", "first"] = "loss"
    lam_in: float = 0.0
    lam_out: float = 0.1
    lr: float = 0.05
    iterations: int = 300
    fraction: float = 1.0
    solver: logistic.Solver = "newton"
    keep_moments: bool = True
    anchor: Literal["zero", "init"] = "init"
    utility: Literal["accuracy", "balanced"] = "accuracy"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.measure in MEASURES,
             f"measure must be one of {list(MEASURES)}, got {self.measure!r}"),
            (np.isfinite(self.rho) and self.rho >= 0,
             f"rho must be a finite number ≥ 0, got {self.rho}"),
            (self.relaxation in fairness_terms.RELAXATIONS,
             f"relaxation must be one of {list(fairness_terms.RELAXATIONS)}, got "
             f"{self.relaxation!r}"),
            (self.tolerance is None or self.tolerance >= 0,
             f"tolerance must be ≥ 0, got {self.tolerance}"),
            (self.target is None or 0 < self.target < 1,
             f"target (the largest gap |SPD| or |EOD| allowed) must lie in (0, 1), got "
             f"{self.target}"),
            (self.target is None or self.tolerance is None,
             "target and tolerance are two constrained forms; give one of them"),
            (self.keep in ("first", "loss"),
             f"keep must be 'first' or 'loss', got {self.keep!r}"),
            (np.isfinite(self.multiplier_lr) and self.multiplier_lr > 0,
             f"multiplier_lr must be a finite number > 0, got {self.multiplier_lr}"),
            (self.lam_in >= 0,
             f"lam_in must be > 0 (it makes the inner problem strongly convex), or 0 to choose "
             f"it by cross-validation, got {self.lam_in}"),
            (self.lam_out >= 0, f"lam_out must be ≥ 0, got {self.lam_out}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (int(self.iterations) == self.iterations and self.iterations >= 0,
             f"iterations must be an integer ≥ 0, got {self.iterations}"),
            (0 < self.fraction <= 1, f"fraction (Ñ/N) must lie in (0, 1], got {self.fraction}"),
            (self.solver in logistic.SOLVERS,
             f"solver must be one of {list(logistic.SOLVERS)}, got {self.solver!r}"),
            (self.utility in UTILITIES,
             f"utility must be one of {list(UTILITIES)}, got {self.utility!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"stage 1: {message}.")

    def synthetic_rows(self, n: int) -> int:
        """``Ñ`` for a client with ``n`` real rows: ``round(fraction · n)``, at least 1."""
        return max(1, int(round(self.fraction * n)))


@dataclasses.dataclass(frozen=True)
class Stage1Result:
    """Synthetic rows (original units), the final inner model and the optimisation trace."""

    data: TabularData
    w: np.ndarray
    objective: np.ndarray  # F without the z̃ regulariser, per outer step
    covariance: np.ndarray  # cᵀw* per outer step
    seconds: float
    lam_in: float = math.nan  # the inner L2 strength used (chosen when the config said 0)
    gap: float = math.nan  # measured gap (SPD or EOD) of ``w`` on the client's real rows
    gaps: np.ndarray | None = None  # the measured gap per outer step


def fairness_vector(X: np.ndarray, s: np.ndarray, y: np.ndarray, measure: Measure) -> np.ndarray:
    r"""``c`` with ``Cov_m(w) = cᵀw`` on the rows ``X`` (METHOD.md).

    SP: ``c = (1/N) Σ_i (s_i − s̄) x_i``; EO: the same over the rows with ``y = 1``
    (:class:`clients.fairness_terms.GroupRows` holds the row weights).
    """
    return fairness_terms.GroupRows(s, y, measure).covariance @ X


def allocate_cells(s: np.ndarray, y: np.ndarray, n_syn: int, *, balanced: bool = False
                   ) -> dict[tuple[int, int], int]:
    """Rows per ``(s, y)`` cell for ``Ñ = n_syn``: proportional to the cells' counts, largest
    remainder, ≥ 1 per non-empty cell. With ``balanced``, each present label gets an equal
    share of ``Ñ`` (the groups within it still in their proportions): the allocation of the
    balanced-accuracy utility, under which an ordinary model trained on the rows weighs both
    labels equally, as the utility's loss does."""
    counts = {(a, b): int(np.sum((s == a) & (y == b))) for a in (0, 1) for b in (0, 1)}
    nonempty = [k for k, c in counts.items() if c > 0]
    if n_syn < len(nonempty):
        raise ConfigError(
            f"Ñ = {n_syn} is smaller than the {len(nonempty)} non-empty (s, y) cells; raise the "
            "fraction so that every cell gets a row."
        )
    weight = dict.fromkeys(counts, 1.0)
    if balanced:  # a cell's weight: its share of its label, each label half (of the present)
        per_label = {b: sum(counts[(a, b)] for a in (0, 1)) for b in (0, 1)}
        labels = sum(1 for v in per_label.values() if v > 0)
        weight = {k: 1.0 / (labels * per_label[k[1]]) if counts[k] else 0.0 for k in counts}
    mass = {k: counts[k] * weight[k] for k in nonempty}
    total = sum(mass.values())
    quota = {k: n_syn * mass[k] / total for k in nonempty}
    alloc = {k: max(1, int(np.floor(q))) for k, q in quota.items()}
    remainder = sorted(nonempty, key=lambda k: quota[k] - np.floor(quota[k]), reverse=True)
    i = 0
    while sum(alloc.values()) < n_syn:
        alloc[remainder[i % len(remainder)]] += 1
        i += 1
    while sum(alloc.values()) > n_syn:  # the "≥ 1" floors overshot: take from the largest
        k = max((k for k in nonempty if alloc[k] > 1), key=lambda k: alloc[k] - quota[k])
        alloc[k] -= 1
    return {k: alloc.get(k, 0) for k in counts}


def draw_cells(s: np.ndarray, y: np.ndarray, alloc: dict[tuple[int, int], int],
               rng: np.random.Generator) -> np.ndarray:
    """Row indices for an allocation: ``k`` rows of each cell without replacement, or, where
    ``k`` exceeds the cell, every row of it and the rest drawn with replacement."""
    out = []
    for (a, b), k in alloc.items():
        rows = np.flatnonzero((s == a) & (y == b))
        if k <= len(rows):
            out.append(rng.choice(rows, k, replace=False))
        elif k > 0:
            out += [rows, rng.choice(rows, k - len(rows), replace=True)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class FairDistiller:
    """Run stage 1 on one client's rows: ``FairDistiller(config).fit(real)``."""

    def __init__(self, config: Stage1Config | None = None, *, progress: bool | None = None):
        self.config = config or Stage1Config()
        self.progress = progress

    def fit(self, real: TabularData) -> Stage1Result:
        cfg = self.config
        start = time.perf_counter()
        _check_groups(real, cfg.measure)
        init = self._initial_rows(real)
        # The learned columns keep the moments of the rows they start from: the client's, or,
        # for a label-balanced start, the balanced sample's (its own scaler).
        enc = Encoder.fit(real.subset(init) if cfg.utility == "balanced" else real)
        z_real = enc.encode_z(real)
        # Learned columns (continuous, not constant among the initial rows) first. "Constant"
        # is decided exactly (max = min): a computed std of equal values rounds to 0 or to
        # ~1e-17 depending on the summation order, so it cannot decide it.
        learn = enc.continuous_mask & (np.ptp(z_real[init], axis=0) > 0)
        order = np.concatenate([np.flatnonzero(learn), np.flatnonzero(~learn)])
        L = int(learn.sum())
        X_real = design_matrix(z_real[:, order], real.s)
        relaxation = fairness_terms.make_relaxation(cfg.relaxation, X_real, real.s, real.y,
                                                    cfg.measure)
        c = relaxation.groups.covariance @ X_real  # the paper's covariance, traced either way
        lam_in = cfg.lam_in or logistic.cross_validated_lambda(X_real, real.y, seed=cfg.seed)
        z0 = z_real[init][:, order]
        anchor = None
        if cfg.anchor == "init":
            anchor = standardise(z0[:, :L])[0] if cfg.keep_moments else z0[:, :L].copy()
        problem = BilevelProblem(
            X_real, real.y, z0[:, L:], real.s[init], real.y[init], relaxation, rho=cfg.rho,
            lam_in=lam_in, lam_out=cfg.lam_out, tolerance=cfg.tolerance, solver=cfg.solver,
            anchor=anchor, weights=utility_weights(real.y, cfg.utility), target=cfg.target,
            multiplier_lr=cfg.multiplier_lr,
        )
        # Adam runs on r; the learned block is u = standardise(r) when moments are kept, then
        # projected onto the columns' declared bounds: the model stage 1 fits, and the gap it
        # meets, are those of rows that can be released as they are.
        r = np.asfortranarray(z0[:, :L])
        box = Box(*(b[order[:L]] for b in enc.z_bounds()))
        u, scale = problem.standardise_into(r) if cfg.keep_moments else (r, None)
        box.project(u)
        w = w_prev = problem.inner(u)
        cov_start = float(c @ w)
        objective, covariance, gaps = (np.empty(cfg.iterations) for _ in range(3))
        best = BestStep(cfg.target, cfg.keep)
        adam = Adam(r, lr=cfg.lr)
        debug = logger.isEnabledFor(logging.DEBUG)
        steps = tqdm(range(cfg.iterations), desc="stage 1", disable=_no_bar(self.progress),
                     leave=False)
        done = cfg.iterations
        for t in steps:
            if cfg.keep_moments:
                grad, f = problem.hypergradient_standardised(u, w, scale)
            else:
                grad, f = problem.hypergradient(u, w)
            box.hold(grad)
            objective[t], covariance[t], gaps[t] = f, float(c @ w), problem.last["gap"]
            best.offer(problem.last, u, w)
            if best.locked:  # the real rows already meet the target: they are the answer
                done = t + 1
                logger.info("stage 1: the real rows already meet |gap| ≤ %g (%.4f); they are "
                            "returned unchanged.", cfg.target, abs(best.gap))
                break
            problem.update_multiplier()
            adam.step(grad)
            u, scale = problem.standardise_into(r) if cfg.keep_moments else (r, None)
            box.project(u)
            # Warm start on the secant through the last two solutions: r moves smoothly under
            # Adam, so w*(r) does too, and the inner Newton needs a step fewer than from w.
            w, w_prev = problem.inner(u, w0=2.0 * w - w_prev), w
            if debug:
                logger.debug("stage 1 step %d: f=%.6f cov=%.3e gap=%.4f mu=%.3g |grad|=%.3e", t,
                             f, covariance[t], gaps[t], problem.multiplier,
                             float(np.abs(grad).max()))
        objective, covariance, gaps = objective[:done], covariance[:done], gaps[:done]
        problem.outer_value_grad(w)
        best.offer(problem.last, u, w)
        if cfg.target is not None:
            u, w = best.u, best.w
            if best.excess > 0:
                logger.warning(
                    "stage 1 did not reach the target |gap| ≤ %g on this client's rows in %d "
                    "steps; it returns the nearest miss, |gap| = %.4f (more iterations, or a "
                    "larger multiplier_lr, push harder).", cfg.target, cfg.iterations,
                    abs(best.gap))
        gap = best.gap if cfg.target is not None else problem.last["gap"]
        z = np.empty_like(z0)
        z[:, order] = np.column_stack([u, z0[:, L:]])
        synthetic = _decode(enc, real, init, z)
        seconds = time.perf_counter() - start
        logger.info("stage 1 (%s, %s): %d rows, cov %.4f -> %.4f, local |gap| %.4f in %.2fs",
                    cfg.measure, f"target={cfg.target:g}" if cfg.target else f"rho={cfg.rho:g}",
                    len(init), cov_start, float(c @ w), abs(gap), seconds)
        inverse = np.argsort(order)
        w_out = np.concatenate([w[:-2][inverse], w[-2:]])  # back to the encoder's column order
        return Stage1Result(synthetic, w_out, objective, covariance, seconds, lam_in, gap, gaps)

    def _initial_rows(self, real: TabularData) -> np.ndarray:
        """Rows of ``real`` that initialise ``z̃``: all of them, or a stratified sample; with the
        balanced utility, a label-balanced sample (:func:`allocate_cells`)."""
        cfg = self.config
        n_syn = cfg.synthetic_rows(len(real))
        balanced = cfg.utility == "balanced"
        if n_syn == len(real) and not balanced:
            return np.arange(len(real))
        alloc = allocate_cells(real.s, real.y, n_syn, balanced=balanced)
        return draw_cells(real.s, real.y, alloc, np.random.default_rng(cfg.seed))


def standardise(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise ``(r − mean) / std``; returns the result and the std."""
    centred = r - r.mean(axis=0)
    std = np.sqrt((centred * centred).mean(axis=0))
    return centred / std, std



def _no_bar(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm hide the bar when stderr is not a terminal."""
    return None if progress is None else not progress


def _check_groups(real: TabularData, measure: Measure) -> None:
    if len(real) == 0:
        raise DataError("stage 1 got no rows; every client needs at least one training row.")
    counts = real.cell_counts()
    missing = [k for k, v in counts.items() if v == 0]
    if len(np.unique(real.s)) < 2:
        logger.warning(
            "this client holds only group s=%d: the covariance penalty is identically 0 here, "
            "so stage 1 only fits accuracy on this client.", int(real.s[0]))
    elif measure == "eo" and len(np.unique(real.s[real.y == 1])) < 2:
        logger.warning("this client's positive rows hold one group only: the EO penalty is 0 here.")
    elif missing:
        logger.warning("this client has no rows in (s, y) cell(s) %s; they stay empty in Ñ.",
                       missing)


def _decode(enc: Encoder, real: TabularData, init: np.ndarray, z: np.ndarray) -> TabularData:
    """Synthetic rows in original units: continuous decoded (and kept within the columns'
    declared bounds: the learned values are free to drift past them, and a value outside its
    public range is not a row of this table), categorical copied from init rows."""
    features = real.features.iloc[init].reset_index(drop=True).copy()
    cont = [c.name for c in enc.schema.continuous]
    if cont:
        values = enc.decode_continuous(z)
        for j, col in enumerate(enc.schema.continuous):
            if col.bounds is not None:
                values[:, j] = np.clip(values[:, j], *col.bounds)
        features[cont] = pd.DataFrame(values, columns=cont)
    return TabularData(schema=real.schema, features=features, s=real.s[init].copy(),
                       y=real.y[init].copy())
