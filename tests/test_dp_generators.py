"""The DP generator ``auto``: AIM or DP-CTGAN, chosen by a DP count of the table's rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients import dp_generators
from clients.dp_generators import GENERATORS, BySize, make_generator
from common.datasets import make_synthetic
from common.errors import ConfigError


class Recorder:
    """A stand-in generator that records how it was fitted (no DP of its own)."""

    def __init__(self, name, *, epsilon, delta, seed, **options):
        self.name, self.epsilon, self.delta, self.options = name, epsilon, delta, options
        self.reserve, self.data = None, None

    def fit(self, data, *, reserve=()):
        self.data, self.reserve = data, tuple(reserve)
        return self

    def sample(self, n, *, seed=None):
        return self.data.subset(np.arange(n) % len(self.data))

    def noisy_rows(self):
        return len(self.data)

    def privacy_spent(self):
        return {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.name}


@pytest.fixture
def recorders(monkeypatch):
    """``aim`` and ``dp-ctgan`` replaced by recorders, and a threshold of 100 rows."""
    for name in ("aim", "dp-ctgan"):
        monkeypatch.setitem(GENERATORS, name,
                            lambda name=name, **kw: Recorder(name, **kw))
    monkeypatch.setattr(dp_generators, "SMALL_TABLE", 100)


def rho_of(epsilon: float, delta: float) -> float:
    """The zCDP ρ with ρ + 2√(ρ·ln(1/δ)) = ε (Bun & Steinke 2016, Prop. 1.3), solved as a
    quadratic in √ρ."""
    log = math.log(1 / delta)
    return (math.sqrt(log + epsilon) - math.sqrt(log)) ** 2


@pytest.mark.parametrize("rows, chosen", [(40, "aim"), (400, "dp-ctgan")])
def test_auto_fits_aim_to_a_small_table_and_dp_ctgan_to_a_large_one(recorders, rows, chosen):
    # ε = 50: the count's noise (σ ≈ 2.6 rows) cannot carry 40 or 400 across 100.
    gen = make_generator("auto", epsilon=50.0, delta=1e-6, seed=3).fit(make_synthetic(rows))
    assert gen.chosen == chosen and gen.inner.name == chosen
    assert gen.inner.epsilon == 50.0 and gen.inner.delta == 1e-6  # the whole budget
    spent = gen.privacy_spent()
    assert spent["generator"] == chosen and spent["accountant"] == chosen
    assert gen.noisy_rows() == rows and len(gen.sample(7)) == 7


def test_the_count_is_reserved_in_the_chosen_generators_accounting(recorders):
    """The chosen generator accounts for the count as one Gaussian release of sensitivity 1
    with a COUNT_SHARE of the zCDP budget, after the mechanisms the caller reserved."""
    other = BySize(epsilon=1.0, delta=1e-6).count  # any mechanism the caller reserves
    gen = BySize(epsilon=1.0, delta=1e-6).fit(make_synthetic(300), reserve=[other])
    first, count = gen.inner.reserve
    assert first is other
    assert count.sample_rate == 1.0 and count.steps == 1
    # a Gaussian of sensitivity 1 and noise σ is ρ = 1/(2σ²)-zCDP
    assert 1 / (2 * count.noise_multiplier ** 2) == pytest.approx(
        dp_generators.COUNT_SHARE * rho_of(1.0, 1e-6), rel=1e-9)


def test_the_choice_follows_the_noisy_count_not_the_true_one(recorders):
    """Near the threshold, with a count drowned in noise, the same table gets either
    generator: the choice (which the release shows) is not a function of the true N."""
    data = make_synthetic(101)
    chosen = {BySize(epsilon=0.05, delta=1e-6, noise_seed=k).fit(data).chosen
              for k in range(20)}
    assert chosen == {"aim", "dp-ctgan"}
    again = [BySize(epsilon=0.05, delta=1e-6, noise_seed=4).fit(data).chosen for _ in range(2)]
    assert again[0] == again[1]  # a seeded count is reproducible


def test_auto_passes_the_noise_settings_to_the_chosen_generator(recorders):
    gen = BySize(epsilon=50.0, delta=1e-6, noise_seed=9).fit(make_synthetic(400))
    assert gen.inner.options == {"noise_seed": 9}


def test_auto_refuses_generator_options_and_names_the_fix():
    with pytest.raises(ConfigError, match=r"takes no generator options \(got \['epochs'\]\); "
                                          r"name the generator \(--generator dp-ctgan"):
        make_generator("auto", epsilon=1.0, delta=1e-6, epochs=3)


def test_auto_must_be_fitted_first():
    with pytest.raises(ConfigError, match="call fit before"):
        BySize(epsilon=1.0, delta=1e-6).privacy_spent()
