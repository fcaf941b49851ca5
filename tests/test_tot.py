"""TOT (Calmon et al.'s optimised pre-processing) and the ``safes`` synthesizer."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from federation_helpers import ray_test

from clients.dp_generators import GENERATORS, register_generator
from clients.policy import PrivacyPolicy
from clients.synthesizers import make_synthesizer
from clients.tot import FORBIDDEN, TOT, Infeasible, TOTConfig, distortion_matrix, solve_map
from common.datasets import make_synthetic
from common.errors import ConfigError, PolicyError
from common.run_config import RunConfig
from common.schema import Column, Schema, from_frame
from simulations.engine import simulate

# No features: the cells are the label alone. p(d) = ½ each, P(y=1|d=0) = 0.2, P(y=1|d=1) = 0.6.
TWO_GROUPS = np.array([[0.5 * 0.8, 0.5 * 0.2], [0.5 * 0.4, 0.5 * 0.6]])


def test_the_map_of_a_label_only_table_is_the_hand_computed_optimum():
    """η = 0.2 asks for 0.2 of the 0.4 gap. Group 0 may flip a share c of its negatives
    (raising its rate by 0.8c), group 1 a share c of its positives (lowering it by 0.6c).
    With c = 0.15: Δ0 ≤ 0.12, Δ1 ≤ 0.09, Δ0 + Δ1 = 0.2; the total variation ½|Δ0 − Δ1|·2·½
    is least at Δ1 = 0.09, Δ0 = 0.11: 0.01."""
    mapping, tv = solve_map(TWO_GROUPS, distortion_matrix([], []), 0.2, 0.15)
    assert tv == pytest.approx(0.01, abs=1e-9)
    assert mapping[0, 0, 1] == pytest.approx(0.11 / 0.8, abs=1e-9)  # group 0: y=0 → ŷ=1
    assert mapping[1, 1, 0] == pytest.approx(0.15, abs=1e-9)  # group 1: y=1 → ŷ=0, all allowed
    assert mapping[0, 1, 1] == pytest.approx(1.0) and mapping[1, 0, 0] == pytest.approx(1.0)


def test_an_unreachable_bound_raises_and_the_least_difference_is_exact():
    """With c = 0.1 the gap can shrink by 0.08 + 0.06 at most: 0.26 is the least."""
    with pytest.raises(Infeasible, match="raise safes_eta or safes_distortion"):
        solve_map(TWO_GROUPS, distortion_matrix([], []), 0.2, 0.1)
    _, least = solve_map(TWO_GROUPS, distortion_matrix([], []), None, 0.1)
    assert least == pytest.approx(0.26, abs=1e-9)


def test_distortion_counts_steps_and_forbids_long_moves():
    # one ordered column of 3 bins, one nominal column of 2 values, then the label
    delta = distortion_matrix([3, 2], [True, False])

    def cell(x0, x1, y):
        return (x0 * 2 + x1) * 2 + y

    assert delta[cell(0, 0, 0), cell(0, 0, 0)] == 0
    assert delta[cell(0, 0, 0), cell(1, 0, 0)] == 1  # one bin
    assert delta[cell(0, 0, 0), cell(0, 1, 0)] == 1  # one category
    assert delta[cell(0, 0, 0), cell(0, 0, 1)] == 1  # the label
    assert delta[cell(0, 0, 0), cell(1, 1, 1)] == 3  # three steps
    assert delta[cell(0, 0, 0), cell(2, 0, 0)] == FORBIDDEN  # two bins at once
    assert delta[cell(2, 1, 1), cell(1, 1, 0)] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_map_meets_every_constraint_and_reports_its_total_variation(seed):
    rng = np.random.default_rng(seed)
    sizes, ordered = [3, 2], [True, False]
    C = 2 * 3 * 2
    p = rng.dirichlet(np.ones(2 * C)).reshape(2, C)
    p[0, 1::2] *= 0.3  # group 0 has fewer positives: a gap to close
    p /= p.sum()
    delta = distortion_matrix(sizes, ordered)
    eta, c = 0.05, 0.3
    mapping, tv = solve_map(p, delta, eta, c)
    assert (mapping >= 0).all()
    np.testing.assert_allclose(mapping.sum(axis=2), 1.0, atol=1e-9)
    rate = [(p[d] @ mapping[d])[1::2].sum() / p[d].sum() for d in (0, 1)]
    assert abs(rate[0] - rate[1]) <= eta + 1e-7
    for d in (0, 1):
        assert ((mapping[d] * (delta >= 1)).sum(axis=1) <= c + 1e-7).all()
        assert ((mapping[d] * (delta >= 2)).sum(axis=1) <= c / 2 + 1e-7).all()
        assert (mapping[d][delta >= FORBIDDEN] <= 1e-9).all()
    moved = np.einsum("da,dab->b", p, mapping)
    assert tv == pytest.approx(0.5 * np.abs(moved - p.sum(axis=0)).sum(), abs=1e-7)


def test_a_bound_already_met_leaves_the_distribution_as_it_is():
    mapping, tv = solve_map(TWO_GROUPS, distortion_matrix([], []), 0.5, 0.1)
    assert tv == pytest.approx(0.0, abs=1e-12)


def _table(n: int, seed: int):
    """``a`` follows the label, ``b`` is noise, ``c`` has too many categories for the cells;
    group 0 has fewer positives."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    t = (rng.random(n) < np.where(g == 1, 0.6, 0.25)).astype(int)
    a = np.clip(t * 3 + rng.normal(0, 0.8, n) + 2, 0, 8)
    frame = pd.DataFrame({"a": a, "b": rng.uniform(0, 8, n),
                          "c": rng.choice([f"k{i}" for i in range(40)], n), "g": g, "t": t})
    schema = Schema("t", (Column("a", bounds=(0.0, 8.0)), Column("b", bounds=(0.0, 8.0)),
                          Column("c", kind="categorical",
                                 categories=tuple(f"k{i}" for i in range(40)))),
                    sensitive="g", privileged="1", label="t", favourable="1")
    return from_frame(frame, schema)


def test_the_transform_chooses_the_informative_column_and_meets_eta_on_its_rows():
    data = _table(20_000, seed=0)
    tot = TOT(TOTConfig(eta=0.1, distortion=0.3, cells=64, bins=4)).fit(data)
    assert tot.columns == ["a"]  # b is independent of the label; c would need 80 cells
    out = tot.transform(data, np.random.default_rng(1))
    rate = [out.y[data.s == d].mean() for d in (0, 1)]
    assert abs(rate[0] - rate[1]) <= 0.1 + 3 / np.sqrt(len(data) / 2)
    assert abs(data.y[data.s == 0].mean() - data.y[data.s == 1].mean()) > 0.3
    # the other columns and the sensitive attribute are untouched; moved values stay in bounds
    pd.testing.assert_frame_equal(out.features[["b", "c"]], data.features[["b", "c"]])
    np.testing.assert_array_equal(out.s, data.s)
    assert out.features["a"].between(0, 8).all()
    assert tot.report["spd_after"] == pytest.approx(-0.1, abs=1e-6)


def test_an_unreachable_eta_is_met_as_closely_as_the_distortion_allows(caplog):
    data = _table(5000, seed=1)
    with caplog.at_level(logging.WARNING):
        tot = TOT(TOTConfig(eta=0.0, distortion=0.05, cells=16)).fit(data)
    assert "the least it can" in caplog.text
    assert tot.report["eta_met"] > 0.0
    assert abs(tot.report["spd_after"]) == pytest.approx(tot.report["eta_met"], abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"eta": -0.1}, "eta"), ({"distortion": 1.5}, "distortion"), ({"bins": 1}, "bins"),
    ({"cells": 2}, "cells"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TOTConfig(**kwargs)


def test_named_columns_are_checked_against_the_schema():
    schema = _table(10, 0).schema
    with pytest.raises(ConfigError, match=r"columns \['z'\] are not feature columns"):
        TOTConfig(columns=("z",)).check_schema(schema)
    with pytest.raises(ConfigError, match="make 320 cells"):
        TOTConfig(columns=("a", "c"), cells=256).check_schema(schema)


# --------------------------------------------------------------------------- the synthesizer


@pytest.fixture
def recording_generator():
    """A DP generator stub that releases fixed rows and records what it was fitted on."""
    seen = {}

    class Recording:
        def __init__(self, *, epsilon, delta, seed, **_):
            self.epsilon, self.delta = epsilon, delta

        def fit(self, data, *, reserve=()):
            seen["fit"] = data
            return self

        def noisy_rows(self):
            return 400

        def sample(self, n, *, seed=None):
            seen["sample"] = make_synthetic(n, seed=123)
            return seen["sample"]

        def privacy_spent(self):
            return {"epsilon": self.epsilon, "delta": self.delta, "accountant": "zcdp"}

    register_generator("recording-probe")(Recording)
    yield "recording-probe", seen
    GENERATORS.pop("recording-probe")


def test_safes_fits_the_transform_on_the_dp_rows_only(recording_generator, monkeypatch):
    name, seen = recording_generator
    fitted = {}
    real_fit = TOT.fit

    def spy(self, rows):
        fitted["rows"] = rows
        return real_fit(self, rows)

    monkeypatch.setattr(TOT, "fit", spy)
    train = make_synthetic(600, seed=5)
    config = RunConfig(synthesizer="safes", generator=name, safes_distortion=0.3)
    [release] = make_synthesizer(config).release(train, seed=0, fractions=[0.5])
    assert seen["fit"] is train  # the generator alone reads the real rows
    assert fitted["rows"] is seen["sample"]  # TOT reads what the generator sampled
    assert len(release.rows) == 200  # half of N̂ = 400, not of N = 600
    assert release.privacy.epsilon == 1.0 and "real training rows" in release.privacy.covers
    assert release.privacy.details["tot"]["columns"]


def test_the_generator_setting_resolves_by_synthesizer():
    """auto: AIM where the fairness step reads only the DP rows (SAFES, private-then-fair),
    DP-CTGAN otherwise; options meant for the other generator name the choice."""
    from clients.pipeline import pipeline_config

    assert RunConfig().dp_generator == "dp-ctgan"
    assert RunConfig(synthesizer="safes").dp_generator == "aim"
    assert RunConfig(synthesizer="safes", generator="dp-ctgan").dp_generator == "dp-ctgan"
    assert RunConfig(order="private-then-fair").dp_generator == "aim"
    assert RunConfig(order="private-then-fair", generator="dp-ctgan").dp_generator == "dp-ctgan"
    assert RunConfig(order="private-only").dp_generator == "dp-ctgan"
    ctgan_options = '{"epochs": 1.0}'
    auto = pipeline_config(RunConfig(order="private-then-fair", generator_options=ctgan_options))
    with pytest.raises(ConfigError, match=r"unknown option.*\(--generator auto chose aim; "
                                          "name with --generator"):
        auto.stage2.check_options()
    named = pipeline_config(RunConfig(order="private-then-fair", generator="aim",
                                      generator_options=ctgan_options))
    with pytest.raises(ConfigError, match="unknown option") as named_error:
        named.stage2.check_options()
    assert "auto chose" not in str(named_error.value)
    pipeline_config(RunConfig(order="private-then-fair", generator="dp-ctgan",
                              generator_options=ctgan_options)).stage2.check_options()
    assert RunConfig(synthesizer="safes").release == "safes"
    assert RunConfig(order="private-only").release == "private-only"


def test_a_policy_allows_safes_by_default_and_can_refuse_it():
    PrivacyPolicy().check_release(RunConfig(synthesizer="safes"))
    with pytest.raises(PolicyError, match="release 'safes' is outside"):
        PrivacyPolicy(orders=("private-only",)).check_release(RunConfig(synthesizer="safes"))
    with pytest.raises(PolicyError, match="epsilon = 2 exceeds"):
        PrivacyPolicy().check_release(RunConfig(synthesizer="safes", epsilon=2.0))


@ray_test
def test_a_safes_federation_runs_under_the_clients_default_policy():
    """Flower's simulation engine, two clients, the default policy (private releases only):
    each client runs AIM then TOT and says what its (ε, δ) covers."""
    config = RunConfig(dataset="synthetic", synthesizer="safes", seed=2,
                       generator_options='{"iters": 100, "final_iters": 100}')
    result = simulate(config, clients=2)
    assert len(result.clients) == 2
    for client in result.clients:
        privacy = client["privacy"]
        assert privacy["order"] == "safes" and privacy["epsilon"] <= 1.0
        assert "real training rows" in privacy["covers"]
    assert 0.5 < result.metrics["accuracy"] <= 1.0


def test_a_row_moved_into_a_bin_no_fitted_row_holds_gets_a_value_inside_that_bin():
    """The map's move decodes to a value: from the fitted rows' values in the new bin, or
    uniform inside the bin when it holds none."""
    rng = np.random.default_rng(0)
    n = 4000
    g = rng.integers(0, 2, n)
    t = (rng.random(n) < np.where(g == 1, 0.7, 0.2)).astype(int)
    a = np.where(t == 1, 6.0, 1.0)  # only two of the four bins are ever seen
    frame = pd.DataFrame({"a": a, "g": g, "t": t})
    schema = Schema("t", (Column("a", bounds=(0.0, 8.0)),), sensitive="g", privileged="1",
                    label="t", favourable="1")
    data = from_frame(frame, schema)
    tot = TOT(TOTConfig(eta=0.05, distortion=0.5, cells=16, bins=4)).fit(data)
    assert tot.columns == ["a"]
    move = np.broadcast_to(np.eye(8), (2, 8, 8)).copy()
    move[:, [0, 1]] = np.eye(8)[[2, 3]]  # bin 0 → bin 1 (never seen), the label kept
    tot.mapping = move
    out = tot.transform(data, np.random.default_rng(1))
    moved = data.features["a"] == 1
    assert out.features["a"][moved].between(2, 4).all()  # uniform inside bin 1: [2, 4)
    assert (out.features["a"][~moved] == 6).all() and (out.y == data.y).all()
