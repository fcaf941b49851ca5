"""The DP label model of fair-then-private (clients/label_model.py) and the budget the generators
reserve for it: the mechanism's noise against the zCDP formula, the fit against the exact
logistic fit, the relabelling's marginals, and the composed (ε, δ) of AIM and DP-CTGAN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special
from small_generator import FAST

from clients import label_model
from clients.aim import AIM, AIMConfig
from clients.dp_ctgan import DPCTGAN, DPCTGANConfig
from clients.label_model import DPLabelModel, label_mechanisms
from clients.pipeline import PipelineConfig, Stage2Config, run_pipeline
from clients.stage1 import Stage1Config
from common import dp_queries, logistic, privacy
from common.datasets import make_synthetic
from common.encoding import Encoder
from common.errors import ConfigError
from common.schema import concat


def label_mechanism(**kwargs):
    return label_mechanisms(**kwargs)[0]


class Silent:
    """A noise source that adds nothing and records every scale it was asked for."""

    def __init__(self):
        self.scales = []

    def normal(self, loc=0.0, scale=1.0, size=None):
        self.scales.append(scale)
        return 0.0 if size is None else np.zeros(size)


@pytest.fixture(scope="module")
def rows():
    return make_synthetic(3000, seed=11)


@pytest.mark.parametrize("epsilon, delta, share, steps", [(1.0, 1e-6, 0.25, 200),
                                                          (4.0, 1e-5, 0.5, 50)])
def test_the_mechanisms_spend_their_share_of_the_zcdp_budget(epsilon, delta, share, steps):
    """T Gaussian steps at noise multiplier σ are T/(2σ²)-zCDP (Bun & Steinke 2016), one count
    at σ is 1/(2σ²); together they are the share of ρ(ε, δ), where ε = ρ + 2√(ρ log 1/δ)."""
    fit, check = label_mechanisms(epsilon=epsilon, delta=delta, share=share, steps=steps)
    rho = share * privacy.zcdp_rho(epsilon, delta)
    assert fit.steps / (2 * fit.noise_multiplier ** 2) == pytest.approx(
        (1 - label_model.CHECK_SHARE) * rho, rel=1e-12)
    assert 1 / (2 * check.noise_multiplier ** 2) == pytest.approx(
        label_model.CHECK_SHARE * rho, rel=1e-12)
    assert privacy.mechanism_zcdp(fit) + privacy.mechanism_zcdp(check) == pytest.approx(rho)
    full = privacy.zcdp_rho(epsilon, delta)
    assert full + 2 * math.sqrt(full * math.log(1 / delta)) == pytest.approx(epsilon)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_a_share_that_leaves_the_generator_nothing_is_refused(share):
    with pytest.raises(ConfigError, match="share must lie in \\(0, 1\\)"):
        label_mechanism(epsilon=1.0, delta=1e-6, share=share)


def test_each_step_adds_noise_of_the_multiplier_times_the_clip(rows):
    """One Gaussian draw per step, of scale σ·c, c = C/2, C = √(features + 2)."""
    m = label_mechanism(epsilon=1.0, delta=1e-6, steps=30)
    noise = Silent()
    model = DPLabelModel.fit(rows, rows, m, noise)
    clip = math.sqrt(len(rows.schema.features) + 2) / 2
    assert model.clip == clip
    assert noise.scales == [pytest.approx(m.noise_multiplier * clip)] * 30


def test_without_noise_the_fit_is_the_regularised_clipped_logistic_fit(rows):
    """With the noise removed, the descent converges to the exact minimiser of its objective:
    the mean over rows of the logistic loss continued linearly, with slope ∓b_i
    (b_i = c/‖x_i‖), past the margin where the residual |σ(m) − y| reaches b_i, plus
    (λ/2)‖w‖², λ = 1/N̂ (SciPy's L-BFGS on that objective, written out here)."""
    model = DPLabelModel.fit(rows, rows, label_mechanism(epsilon=1.0, delta=1e-6), Silent())
    X, y = model.encoder.design(rows), rows.y.astype(float)
    b = np.minimum(1.0, model.clip / np.linalg.norm(X, axis=1))
    lam, n = 1.0 / len(rows), len(rows)

    def objective(w):
        m = X @ w
        loss, slope = np.logaddexp(0, m) - y * m, logistic.sigmoid(m) - y
        # past m₀ (where |σ(m₀) − y| = b) the loss is its tangent at m₀
        m0 = np.where(y > 0.5, special.logit(1 - b), special.logit(b))
        m0 = np.where(np.isfinite(m0), m0, 0.0)  # b = 1: no cap
        at_m0 = np.logaddexp(0, m0) - y * m0
        past = np.abs(slope) > b
        loss = np.where(past, at_m0 + np.sign(slope) * b * (m - m0), loss)
        slope = np.where(past, np.sign(slope) * b, slope)
        return np.sum(loss) / n + 0.5 * lam * w @ w, X.T @ slope / n + lam * w

    exact = optimize.minimize(objective, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B",
                              options={"gtol": 1e-10, "maxiter": 5000}).x
    residual = np.abs(logistic.sigmoid(X @ exact) - y)
    assert np.mean(residual > b) > 0.02  # the cap binds on some rows at the optimum
    assert model.lam == lam
    np.testing.assert_allclose(model.probabilities(rows), logistic.sigmoid(X @ exact), atol=0.01)


def test_the_clipped_residual_is_the_per_row_gradient_clipped_to_norm_c():
    """``clipped_residual(m, y, ‖x‖, c)·x`` is the row's gradient ``(σ(m) − y)·x`` clipped to
    norm ``c``, as :func:`common.dp_queries.clip_rows` clips it."""
    rng = np.random.default_rng(3)
    X = rng.normal(0, 2, (500, 6))
    margin, y = X @ rng.normal(0, 1, 6), (rng.random(500) < 0.5).astype(float)
    clip = 1.5
    gradients = (logistic.sigmoid(margin) - y)[:, None] * X
    expected = dp_queries.clip_rows(gradients, clip)
    residual = label_model.clipped_residual(margin, y, np.linalg.norm(X, axis=1), clip)
    np.testing.assert_allclose(residual[:, None] * X, expected, rtol=1e-12, atol=1e-12)
    assert np.any(np.linalg.norm(gradients, axis=1) > clip)  # the clip binds on some rows
    assert np.any(np.linalg.norm(gradients, axis=1) < clip)  # and leaves others whole


def test_a_row_moves_the_noisy_sum_by_at_most_the_clip(rows):
    """The sensitivity the noise is sized to. One noiseless step from w = 0 is
    w₁ = −(Σ_i clip_c((σ(0) − y_i) x_i) / N̂) / L, with N̂ and L taken from the reference rows
    alone; adding one far-out row moves N̂·L·w₁ by that row's clipped gradient, whose norm is
    the clip c = √(features + 2)/2 however far out the row is."""
    far = rows.subset(np.arange(1))
    far.features.iloc[0, 0] = 1e6  # an outlier in a continuous column
    one_step = privacy.Mechanism("one step", 1.0, steps=1)
    reference = rows.subset(np.arange(1000))
    without = DPLabelModel.fit(rows, reference, one_step, Silent())
    with_far = DPLabelModel.fit(concat([rows, far]), reference, one_step, Silent())
    X_ref = without.encoder.design(reference)
    curvature = 0.25 * np.linalg.eigvalsh(X_ref.T @ X_ref / len(X_ref))[-1] + 1 / len(X_ref)
    moved = np.linalg.norm(with_far.w - without.w) * len(reference) * curvature
    assert np.linalg.norm(without.encoder.design(far)[0]) > 100 * without.clip
    assert without.clip == pytest.approx(math.sqrt(len(rows.schema.features) + 2) / 2)
    assert moved == pytest.approx(without.clip, rel=1e-9)


def test_relabelling_draws_each_label_with_its_probability(rows):
    """Systematic sampling: row i is positive with probability p_i (as independent draws are),
    and the number of positives is Σ p_i to within one."""
    encoder = Encoder.fit(rows)
    w = np.random.default_rng(0).normal(0, 0.7, encoder.design(rows).shape[1])
    model = DPLabelModel(encoder, w, lam=0.0, clip=1.0)
    subset = rows.subset(np.arange(40))
    p = model.probabilities(subset)
    draws = np.array([model.relabel(subset, np.random.default_rng(k)).y for k in range(4000)])
    np.testing.assert_allclose(draws.mean(axis=0), p, atol=0.03)  # 4000 draws: σ ≤ 0.008
    assert np.all(np.abs(draws.sum(axis=1) - p.sum()) < 1)
    relabelled = model.relabel(subset, np.random.default_rng(1))
    assert relabelled.features.equals(subset.features) and np.array_equal(relabelled.s, subset.s)


# --------------------------------------------------------------------------- the reservation

def test_dp_ctgan_composes_the_reserved_mechanism_into_its_epsilon(rows):
    m = label_mechanism(epsilon=1.0, delta=1e-6)
    gen = DPCTGAN(DPCTGANConfig.from_options(epsilon=1.0, delta=1e-6, seed=0, **FAST))
    gen.fit(rows, reserve=[m])
    report = gen.privacy_spent()
    assert 0.99 <= report["epsilon"] <= 1.0  # everything, the label model included
    split = report["budget_split"]
    m_share = label_model.SHARE * (1 - label_model.CHECK_SHARE)
    assert split[m.name]["zcdp_share"] == pytest.approx(m_share)
    # the statistics' shares divide what the reservation leaves: σ = 1/√(2 f ρ (1 − share))
    rho = privacy.zcdp_rho(1.0, 1e-6)
    f = split["cell counts"]["zcdp_share"]
    assert split["cell counts"]["noise_multiplier"] == pytest.approx(
        1 / math.sqrt(2 * f * rho * (1 - m_share)))
    alone = DPCTGAN(DPCTGANConfig.from_options(epsilon=1.0, delta=1e-6, seed=0, **FAST))
    alone.fit(rows)
    assert report["noise_multiplier"] > alone.privacy_spent()["noise_multiplier"]


def test_aim_spends_what_the_reservation_leaves(rows):
    m = label_mechanism(epsilon=1.0, delta=1e-6)
    gen = AIM(AIMConfig.from_options(epsilon=1.0, delta=1e-6, seed=0, rounds=8))
    gen.fit(rows, reserve=[m])
    report = gen.privacy_spent()
    rho = privacy.zcdp_rho(1.0, 1e-6)
    m_share = label_model.SHARE * (1 - label_model.CHECK_SHARE)
    assert report["rho"] == pytest.approx(rho * (1 - m_share))
    assert report["reserved"] == {m.name: pytest.approx(rho * m_share)}
    assert report["rho_spent"] <= report["rho"] * (1 + 1e-9)
    assert report["epsilon"] <= 1.0


def test_a_reservation_after_other_mechanisms_is_refused():
    ledger = privacy.PrivacyLedger(epsilon=1.0, delta=1e-6)
    ledger.record(privacy.Mechanism("counts", 3.0))
    with pytest.raises(ConfigError, match="reserves mechanisms before"):
        ledger.reserve(label_mechanism(epsilon=1.0, delta=1e-6))


# --------------------------------------------------------------------------- in the pipeline

def test_fair_then_private_relabels_from_the_stage1_rows_only(rows, monkeypatch):
    """The label model reads the stage-1 rows (through its mechanism) and the generator's rows;
    the release keeps the generator's features and takes the model's labels; one (ε, δ)."""
    seen = {}
    original = DPLabelModel.fit

    def spy(data, reference, mechanism, noise):
        seen.update(data=data, reference=reference, mechanism=mechanism)
        return original(data, reference, mechanism, noise)

    monkeypatch.setattr(DPLabelModel, "fit", staticmethod(spy))
    monkeypatch.setattr(DPLabelModel, "check", lambda *a: 1.0)  # relabel whatever the noise
    config = PipelineConfig(order="fair-then-private",
                            stage1=Stage1Config(iterations=10, rho=10.0),
                            stage2=Stage2Config(options=FAST, repair="relabel", noise_seed=3))
    result = run_pipeline(rows, config, seed=1)
    assert seen["data"] is result.intermediate["stage1"]
    assert len(seen["reference"]) > 0 and seen["mechanism"].steps == label_model.STEPS
    assert 0.99 <= result.privacy.epsilon <= 1.0
    assert result.privacy.details["repair"] == "relabel"
    assert seen["mechanism"].name in result.privacy.details["budget_split"]


def test_the_check_counts_the_rows_the_model_predicts_better(rows):
    """Without noise the check is the number of rows the label model predicts right minus the
    number the other model does (counted here by hand)."""
    model = DPLabelModel.fit(rows, rows, label_mechanism(epsilon=1.0, delta=1e-6), Silent())
    X = model.encoder.design(rows)
    other = model.constant(rows.subset(np.flatnonzero(rows.y == 0)))  # predicts 0 for everyone
    assert np.all((X @ other) < 0)
    right = int(np.sum(((X @ model.w) > 0) == rows.y.astype(bool)))
    check = label_mechanisms(epsilon=1.0, delta=1e-6)[1]
    assert model.check(rows, other, check, Silent()) == right - int(np.sum(rows.y == 0))
    assert model.check(rows, model.w, check, Silent()) == 0


def test_a_label_model_drowned_in_noise_hands_over_to_the_stage1_repair(rows, monkeypatch,
                                                                         caplog):
    """A check ≤ 0 discards the label model: the stage-1 repair mends the rows instead (the
    generator's labels stay as they are with the balanced utility), the client's log says why,
    and the reserved budget is counted all the same."""
    monkeypatch.setattr(DPLabelModel, "check", lambda *a: -12.0)
    relabelled = []
    monkeypatch.setattr(DPLabelModel, "relabel", lambda *a: relabelled.append(a))
    results = {}
    for utility in ("accuracy", "balanced"):
        config = PipelineConfig(order="fair-then-private",
                                stage1=Stage1Config(iterations=10, rho=10.0, utility=utility),
                                stage2=Stage2Config(options=FAST, repair="relabel", noise_seed=3))
        with caplog.at_level("WARNING"):
            results[utility] = run_pipeline(rows, config, seed=1)
    assert relabelled == []
    accuracy, balanced = results["accuracy"], results["balanced"]
    assert accuracy.privacy.details["label_model_margin"] == -12.0
    assert accuracy.privacy.details["repair"] == "relabel, then stage1"
    assert "repair" in accuracy.seconds  # stage 1 ran on the DP rows
    assert balanced.privacy.details["repair"] == "relabel, then off"
    assert "repair" not in balanced.seconds
    assert "predicts the stage-1 rows no better than a constant" in caplog.text
    assert 0.99 <= accuracy.privacy.epsilon <= 1.0
