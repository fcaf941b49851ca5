"""Privacy accounting and DP statistics (common/privacy.py) against independent truth.

Truth: Opacus' own pinned RDP value, Opacus' accountant stepped one step at a time, the exact
(ε, δ) curve of the Gaussian mechanism (Balle & Wang 2018), the zCDP conversion formula, and
hand-computed sensitivities of each statistic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant
from scipy import optimize
from scipy.stats import norm

from common import dp_queries, privacy
from common.errors import ConfigError, DataError

DELTA = 1e-6


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Smallest ε of the Gaussian mechanism (sensitivity 1, noise σ) at δ (Balle & Wang 2018,
    Thm. 8): δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)."""
    def excess(eps):
        return (norm.cdf(0.5 / sigma - eps * sigma)
                - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta)
    return optimize.brentq(excess, 1e-9, 200.0)


def test_sampled_gaussian_matches_opacus_pinned_value():
    # Opacus' accountants_test.py pins ε = 7.32911117143 for σ = 1.5, q = 0.04, 90 epochs, δ = 1e-5.
    mech = privacy.Mechanism("dp-sgd", 1.5, 0.04, int(90 / 0.04))
    eps, _ = privacy.epsilon_of([mech], 1e-5, alphas=RDPAccountant.DEFAULT_ALPHAS)
    assert eps == pytest.approx(7.32911117143, abs=1e-8)


def test_ledger_composition_equals_opacus_accountant_stepped_one_step_at_a_time():
    ledger = privacy.PrivacyLedger(epsilon=5.0, delta=DELTA)
    mechanisms = [privacy.Mechanism("counts", 12.0), privacy.Mechanism("sums", 7.5),
                  privacy.Mechanism("dp-sgd", 1.3, 0.05, 60)]
    for m in mechanisms:
        ledger.record(m)
    accountant = RDPAccountant()
    for m in mechanisms:
        for _ in range(m.steps):
            accountant.step(noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate)
    expected = accountant.get_epsilon(DELTA, alphas=list(privacy.ALPHAS))
    assert ledger.epsilon() == pytest.approx(expected, rel=1e-12)
    assert ledger.report()["epsilon"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 20.0])
def test_gaussian_mechanism_epsilon_is_an_upper_bound_close_to_exact(sigma):
    eps, _ = privacy.epsilon_of([privacy.Mechanism("g", sigma)], DELTA)
    exact = exact_gaussian_epsilon(sigma, DELTA)
    assert exact <= eps <= 1.35 * exact


@given(eps=st.floats(0.05, 10.0), log_delta=st.floats(-12, -3))
def test_zcdp_rho_satisfies_the_conversion(eps, log_delta):
    delta = 10.0**log_delta
    rho = privacy.zcdp_rho(eps, delta)
    assert rho + 2 * math.sqrt(rho * math.log(1 / delta)) == pytest.approx(eps, rel=1e-9)


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0])
def test_calibrate_spends_exactly_the_rest_of_the_budget(target):
    ledger = privacy.PrivacyLedger(epsilon=target, delta=DELTA)
    ledger.record(privacy.Mechanism("counts", ledger.noise_for("counts", 0.2)))
    sigma = ledger.calibrate("dp-sgd", sample_rate=0.06, steps=50)
    ledger.record(privacy.Mechanism("dp-sgd", sigma, 0.06, 50))
    assert 0.995 * target <= ledger.epsilon() <= target
    # a little less noise would overspend
    trial = privacy.epsilon_of([*ledger.mechanisms[:-1],
                                privacy.Mechanism("dp-sgd", 0.98 * sigma, 0.06, 50)], DELTA)[0]
    assert trial > target


def test_gaussian_share_spends_its_share_of_the_zcdp_budget():
    ledger = privacy.PrivacyLedger(epsilon=1.0, delta=DELTA)
    sigma = ledger.noise_for("counts", 0.25)
    assert 1.0 / (2 * sigma**2) == pytest.approx(0.25 * ledger.rho)


def test_overspending_shares_are_refused():
    ledger = privacy.PrivacyLedger(epsilon=1.0, delta=DELTA)
    ledger.noise_for("a", 0.5)
    with pytest.raises(ConfigError, match="DP-SGD"):
        ledger.noise_for("b", 0.45)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2.0])
def test_budget_share_must_lie_in_open_unit_interval(bad):
    with pytest.raises(ConfigError, match="share"):
        privacy.BudgetSplit({"counts": bad})


@pytest.mark.parametrize("eps", [0.0, -1.0, float("inf"), float("nan")])
def test_check_budget_rejects_bad_epsilon(eps):
    with pytest.raises(ConfigError, match="epsilon"):
        privacy.check_budget(epsilon=eps, delta=1e-6, n=100)


@pytest.mark.parametrize("delta", [0.0, 0.01, 1.0, -1e-6])
def test_check_budget_rejects_delta_not_below_one_over_n(delta):
    with pytest.raises(ConfigError, match="delta"):
        privacy.check_budget(epsilon=1.0, delta=delta, n=100)


def test_check_budget_needs_rows():
    with pytest.raises(DataError):
        privacy.check_budget(epsilon=1.0, delta=1e-6, n=0)


def test_noisy_counts_add_noise_of_the_stated_scale():
    rng = np.random.default_rng(0)
    noisy = dp_queries.noisy_counts(np.zeros(0, dtype=int), 40000, noise_multiplier=3.0, rng=rng)
    assert noisy.std() == pytest.approx(3.0, rel=0.02)
    assert abs(noisy.mean()) < 0.05


def test_one_row_moves_one_count_by_one():
    codes = np.array([0, 2, 2, 1, 3])
    a = dp_queries.noisy_counts(codes, 5, noise_multiplier=2.0, rng=np.random.default_rng(7))
    b = dp_queries.noisy_counts(np.append(codes, 4), 5, noise_multiplier=2.0,
                             rng=np.random.default_rng(7))
    np.testing.assert_allclose(b - a, [0, 0, 0, 0, 1])


def test_one_row_moves_histograms_by_root_m():
    cols = [np.array([0.1, 0.5, 0.9]), np.array([3.0, 1.0, 2.0])]
    edges = [np.linspace(0, 1, 5), np.linspace(0, 4, 9)]
    a = dp_queries.noisy_histograms(cols, edges, noise_multiplier=1.0, rng=np.random.default_rng(1))
    b = dp_queries.noisy_histograms([np.append(cols[0], 0.3), np.append(cols[1], 3.9)], edges,
                                 noise_multiplier=1.0, rng=np.random.default_rng(1))
    diff = np.concatenate([y - x for x, y in zip(a, b)])
    assert np.linalg.norm(diff) == pytest.approx(math.sqrt(2))


def test_one_row_moves_cell_sums_by_at_most_the_clip():
    rng = np.random.default_rng(3)
    rows, groups = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    new = np.array([[10.0, -3.0, 2.0, 0.5]])
    a = dp_queries.noisy_sums(rows, groups, 4, clip_norm=2.0, noise_multiplier=1.0,
                           rng=np.random.default_rng(9))
    b = dp_queries.noisy_sums(np.vstack([rows, new]), np.append(groups, 2), 4, clip_norm=2.0,
                           noise_multiplier=1.0, rng=np.random.default_rng(9))
    assert np.linalg.norm(b - a) == pytest.approx(2.0)
    np.testing.assert_allclose((b - a)[2], 2.0 * new[0] / np.linalg.norm(new))


def test_one_row_moves_second_moments_by_at_most_clip_squared():
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(30, 3))
    new = np.array([[5.0, 5.0, -5.0]])
    a = dp_queries.noisy_second_moments(rows, clip_norm=2.0, noise_multiplier=1.0,
                                     rng=np.random.default_rng(2))
    b = dp_queries.noisy_second_moments(np.vstack([rows, new]), clip_norm=2.0, noise_multiplier=1.0,
                                     rng=np.random.default_rng(2))
    upper = np.triu_indices(3)
    assert np.linalg.norm((b - a)[upper]) <= 4.0 + 1e-9
    np.testing.assert_allclose(b - a, (b - a).T)


@settings(max_examples=60, deadline=None)
@given(h=st.lists(st.floats(-50, 200), min_size=1, max_size=12), total=st.floats(1, 500))
def test_project_counts_is_the_simplex_projection(h, total):
    h = np.array(h)
    p = dp_queries.project_counts(h, total)
    assert np.all(p >= 0)
    assert p.sum() == pytest.approx(total, rel=1e-9)
    if np.maximum(h, 0).sum() > total:
        # Euclidean projection onto {p ≥ 0, Σp = total}: KKT — p = max(h − τ, 0) for one τ.
        res = optimize.minimize(lambda q: 0.5 * np.sum((q - h) ** 2),
                                np.full(len(h), total / len(h)),
                                jac=lambda q: q - h, bounds=[(0, None)] * len(h),
                                constraints=[{"type": "eq", "fun": lambda q: q.sum() - total}],
                                method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
        np.testing.assert_allclose(p, res.x, atol=1e-4 * max(1.0, total))


def test_project_counts_threshold_empties_small_bins_and_keeps_total():
    h = np.array([300.0, 5.0, -4.0, 200.0, 8.0])
    up = dp_queries.project_counts(h, 600.0, threshold=10.0)  # kept mass 500 < 600: scaled up
    np.testing.assert_allclose(up, [360.0, 0.0, 0.0, 240.0, 0.0])
    down = dp_queries.project_counts(h, 450.0, threshold=10.0)  # 500 > 450: shifted down by 25
    np.testing.assert_allclose(down, [275.0, 0.0, 0.0, 175.0, 0.0])


def test_dp_bounds_cover_the_bulk_of_the_data():
    values = np.random.default_rng(0).normal(50.0, 10.0, size=20000)
    lo, hi = dp_queries.dp_bounds(values, noise_multiplier=5.0, rng=np.random.default_rng(1))
    assert lo <= np.quantile(values, 0.01) and hi >= np.quantile(values, 0.99)
    assert lo > -200 and hi < 1000


def test_dp_bounds_fail_clearly_on_too_few_rows():
    with pytest.raises(DataError, match="bounds"):
        dp_queries.dp_bounds(np.array([1.0, 2.0]), noise_multiplier=50.0,
                          rng=np.random.default_rng(0))
