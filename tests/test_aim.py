"""AIM as a stage-2 DP generator: budget schedule, selection, discretisation, estimation, fit.

Prepare / execute / assert against independent truth: the paper's formulas computed by hand,
a table whose dependent pair is known, the schema's bounds, and ``mbi`` 2.0's estimator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clients.aim import AIM, AIMConfig, graphical
from clients.aim.budget import Schedule, zcdp_epsilon
from clients.aim.discretise import Discretiser
from clients.aim.mechanism import candidates, initial_marginals, select, workload
from clients.dp_generators import make_generator
from common import datasets, privacy
from common.errors import ConfigError, DataError
from common.schema import Column, Schema, TabularData

# ---------------------------------------------------------------------------- budget


def test_rho_of_epsilon_delta_is_bun_steinke_pinned():
    """ρ with ρ + 2√(ρ log 1/δ) = ε, solved by hand: √ρ = √(log 1/δ + ε) − √(log 1/δ)."""
    rho = privacy.zcdp_rho(1.0, 1e-6)
    log_inv = 6 * math.log(10)  # 13.815510557964274
    assert rho == pytest.approx((math.sqrt(log_inv + 1) - math.sqrt(log_inv)) ** 2, rel=1e-12)
    assert rho == pytest.approx(0.0174689, rel=1e-5)
    assert zcdp_epsilon(rho, 1e-6) == pytest.approx(1.0, rel=1e-12)


def test_schedule_without_annealing_matches_the_paper():
    """d = 3 attributes, T = 48: σ₀ = √(T/(1.8ρ)), ε₀ = √(0.8ρ/T), the 1-way marginals cost
    0.9·dρ/T = 0.05625ρ, every round ρ/T; a round starts as the last one when less than 2ρ/T
    is left, i.e. after 44 rounds (0.05625 + 44/48 = 0.972917 > 1 − 2/48), and spends the
    0.0270833ρ left."""
    rho = privacy.zcdp_rho(1.0, 1e-6)
    sch = Schedule(rho, rounds=48, initial=3)
    assert sch.initial_sigma == pytest.approx(math.sqrt(48 / (1.8 * rho)), rel=1e-12)
    assert sch.initial_epsilon == pytest.approx(math.sqrt(0.8 * rho / 48), rel=1e-12)
    assert sch.initial_rho == pytest.approx(0.05625 * rho, rel=1e-12)
    last, rounds = False, 0
    while not last:
        sigma, eps, last = sch.next_round()
        rounds += 1
        if not last:
            assert sch.history[-1]["rho"] == pytest.approx(rho / 48, rel=1e-12)
            assert sigma == pytest.approx(sch.initial_sigma, rel=1e-12)
    assert rounds == 45
    left = (1 - 0.05625 - 44 / 48) * rho
    assert left == pytest.approx(0.0270833 * rho, rel=1e-5)
    assert sigma == pytest.approx(math.sqrt(1 / (1.8 * left)), rel=1e-9)
    assert eps == pytest.approx(math.sqrt(0.8 * left), rel=1e-9)
    assert sch.initial_rho + sum(h["rho"] for h in sch.history) == pytest.approx(rho, rel=1e-12)
    assert sch.used == pytest.approx(rho, rel=1e-12)


def test_schedule_with_annealing_still_spends_rho_exactly():
    """d = 5, T = 40, annealing after rounds 1 and 3: the 1-way marginals cost 0.1125ρ, round 1
    ρ/T = 0.025ρ; σ halves and ε doubles, so rounds 2 and 3 cost 4ρ/T = 0.1ρ each (0.3375ρ
    spent); after the second halving a round would cost 16ρ/T = 0.4ρ, and 0.6625ρ < 0.8ρ is
    left, so round 4 is the last and spends exactly that."""
    rho = privacy.zcdp_rho(2.0, 1e-7)
    sch = Schedule(rho, rounds=40, initial=5)
    costs, last = [], False
    while not last:
        sigma, eps, last = sch.next_round()
        costs.append(sch.history[-1]["rho"])
        if len(costs) in (1, 3):
            sch.anneal()
    assert sch.initial_rho == pytest.approx(0.1125 * rho, rel=1e-12)
    assert costs[0] == pytest.approx(0.025 * rho, rel=1e-12)
    assert costs[1] == pytest.approx(0.1 * rho, rel=1e-12)
    assert costs[2] == pytest.approx(0.1 * rho, rel=1e-12)
    assert len(costs) == 4 and costs[3] == pytest.approx(0.6625 * rho, rel=1e-12)
    assert sigma == pytest.approx(math.sqrt(1 / (1.8 * 0.6625 * rho)), rel=1e-12)
    assert sch.history[1]["sigma"] == pytest.approx(sch.initial_sigma / 2, rel=1e-12)
    assert sch.history[1]["epsilon"] == pytest.approx(2 * sch.initial_epsilon, rel=1e-12)
    assert sch.initial_rho + sum(costs) == pytest.approx(rho, rel=1e-12)
    with pytest.raises(RuntimeError):
        sch.next_round()


# ---------------------------------------------------------------------------- selection


def test_workload_weights_are_overlaps():
    """compile_workload: w_r = Σ_W |r ∩ W| over the workload marginals W."""
    pool = candidates([("a", "b", "c"), ("a", "b", "d")])
    assert pool[("a",)] == 2 and pool[("c",)] == 1 and pool[("a", "b")] == 4
    assert pool[("a", "b", "c")] == 5 and pool[("a", "c")] == 3 and ("c", "d") not in pool
    assert len(pool) == 4 + 5 + 2  # 1-ways, pairs, triples of the downward closure


def test_fair_workload_holds_s_or_y():
    sizes = {"a": 3, "b": 4, "c": 2, "s": 2, "y": 2}
    marginals = workload(sizes, AIMConfig())
    assert all("s" in cl or "y" in cl for cl in marginals)
    assert len(marginals) == 7 + 9  # pairs: C(5,2) − C(3,2); triples: C(5,3) − C(3,3)
    assert len(workload(sizes, AIMConfig(workload="all-3way"))) == 10
    assert len(workload(sizes, AIMConfig(workload="all-3way", max_workload=4))) == 4


def test_initial_marginals_one_way_or_within_every_group_and_label():
    sizes = {"a": 3, "b": 4, "big": 100, "s": 2, "y": 2}
    assert initial_marginals(sizes, AIMConfig(init="one-way")) == [
        ("a",), ("b",), ("big",), ("s",), ("y",)]
    # (s, y, big) has 400 cells > max_cells: that feature falls back to its 1-way marginal
    assert initial_marginals(sizes, AIMConfig(init="group-label", max_cells=300)) == [
        ("s", "y"), ("a", "s", "y"), ("b", "s", "y"), ("big",)]


def test_gumbel_max_is_the_exponential_mechanism():
    """P(r) ∝ exp(ε q_r / (2Δ)): with ε/(2Δ) = 1 and q = (0, 1, 2), p = softmax(q)."""
    noise = privacy.NoiseSource(7)
    scores = {("a",): 0.0, ("b",): 1.0, ("c",): 2.0}
    picks = [select(scores, 1.0, 2.0, noise) for _ in range(20000)]
    freq = np.array([picks.count(k) for k in scores]) / len(picks)
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert np.abs(freq - p).max() < 0.015


def test_gumbel_max_over_the_eligible_candidates_only():
    """Reading the noisy scores in decreasing order until an eligible candidate is the argmax
    over the eligible set: the best-scored candidate never wins when it is not eligible, the
    others keep the exponential mechanism's odds, and few candidates are checked."""
    noise = privacy.NoiseSource(8)
    scores = {("a",): 0.0, ("b",): 1.0, ("c",): 2.0, ("big",): 6.0}
    checked = []

    def eligible(cl):
        checked.append(cl)
        return cl != ("big",)

    picks = [select(scores, 1.0, 2.0, noise, eligible) for _ in range(20000)]
    assert ("big",) not in picks
    freq = np.array([picks.count(k) for k in list(scores)[:3]]) / len(picks)
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert np.abs(freq - p).max() < 0.015
    # ("big",) leads nearly every draw, so about two checks a draw, not four
    assert len(checked) < 2.3 * len(picks)


def test_secure_gumbel_has_the_gumbel_mean():
    draws = privacy.NoiseSource(secure=True).gumbel(200000)
    assert abs(draws.mean() - 0.5772156649) < 0.02  # Euler–Mascheroni constant


def _dependent_table(n: int = 3000, seed: int = 0) -> TabularData:
    """Features a, b, c (4 categories each) with b = a and c independent; s, y independent."""
    rng = np.random.default_rng(seed)
    cats = ("p", "q", "r", "t")
    schema = Schema(name="toy", features=tuple(Column(x, kind="categorical", categories=cats)
                                               for x in "abc"),
                    sensitive="g", privileged="1", label="l", favourable="1")
    a = rng.integers(0, 4, n)
    features = pd.DataFrame({"a": np.take(cats, a), "b": np.take(cats, a),
                             "c": np.take(cats, rng.integers(0, 4, n))})
    return TabularData(schema, features, rng.integers(0, 2, n).astype(np.int8),
                       rng.integers(0, 2, n).astype(np.int8))


def test_first_selection_is_the_dependent_pair():
    """Only a and b are dependent: with a large budget the exponential mechanism's first pick
    holds both (every other marginal is explained by the 1-way marginals)."""
    data = _dependent_table()
    for noise_seed in range(3):
        gen = AIM(AIMConfig(epsilon=30.0, delta=1e-6, workload="all-3way", rounds=10,
                            iters=200, final_iters=50, noise_seed=noise_seed)).fit(data)
        first = set(gen.privacy_spent()["per_round"][0]["clique"])
        assert {"a", "b"} <= first


# ---------------------------------------------------------------------------- discretisation


def test_bins_come_from_the_schema_only(toy):
    """Two tables with one schema and different rows get the same edges: linspace over the
    declared bounds (or half-integers for a short integer range)."""
    other = datasets.make_synthetic(300, seed=11, bias=3.0)
    assert other.schema == toy.schema
    d1, d2 = Discretiser(toy.schema, 16), Discretiser(other.schema, 16)
    for name in toy.schema.feature_names:
        np.testing.assert_array_equal(d1.edges[name], d2.edges[name])
        np.testing.assert_array_equal(d1.edges[name], np.linspace(-8.0, 8.0, 17))
    ints = Column("k", bounds=(1.0, 10.0), integer=True)
    schema = Schema("i", (ints, Column("w", bounds=(17.0, 90.0), integer=True)), "g", "1",
                    "l", "1")
    edges = Discretiser(schema, 16).edges
    np.testing.assert_array_equal(edges["k"], np.arange(1, 12) - 0.5)
    np.testing.assert_array_equal(edges["w"], np.linspace(17.0, 90.0, 17))


def test_wide_columns_are_binned_on_a_log_scale():
    """A non-negative column whose bounds span three orders of magnitude (money, counts) gets
    equal widths in log(1 + x − lo): its lower bound alone in the first bin, every other bin
    the same ratio wide; narrower columns, and binning="linear", keep equal widths."""
    money = Column("gain", bounds=(0.0, 99999.0))
    count = Column("visits", bounds=(0.0, 99999.0), integer=True)
    narrow = Column("rate", bounds=(0.0, 999.0))
    schema = Schema("w", (money, count, narrow), "g", "1", "l", "1")
    edges = Discretiser(schema, 16).edges
    t = np.log1p(edges["gain"])
    np.testing.assert_allclose(np.diff(t), np.log1p(99999.0) / 16)
    assert edges["gain"][0] == 0.0 and edges["gain"][-1] == pytest.approx(99999.0)
    e = edges["visits"]  # half-integers: 0 alone, then the same log scale, rounded
    np.testing.assert_array_equal(e[:3], [-0.5, 0.5, 2.5])
    assert e[-1] == 99999.5 and np.all(np.diff(e) >= 1)
    np.testing.assert_array_equal(edges["rate"], np.linspace(0.0, 999.0, 17))
    np.testing.assert_array_equal(Discretiser(schema, 16, "linear").edges["gain"],
                                  np.linspace(0.0, 99999.0, 17))
    rows = TabularData(schema, pd.DataFrame({"gain": [0.0, 2174.0, 99999.0],
                                             "visits": [0, 1, 7], "rate": [0.0, 1.0, 2.0]}),
                       np.array([0, 1, 0], np.int8), np.array([1, 0, 1], np.int8))
    disc = Discretiser(schema, 16)
    back = disc.decode(disc.encode(rows), np.random.default_rng(0))
    assert back.features["visits"].iloc[0] == 0  # a zero stays a zero
    assert 0.5 < back.features["gain"].iloc[1] / 2174.0 < 2.0  # within one bin's ratio
    with pytest.raises(ConfigError, match="binning"):
        AIMConfig(binning="log")


def test_encode_clips_to_bounds_and_decode_stays_inside():
    schema = Schema("b", (Column("x", bounds=(0.0, 4.0)),), "g", "1", "l", "1")
    data = TabularData(schema, pd.DataFrame({"x": [-5.0, 0.0, 1.9, 4.0, 9.0]}),
                       np.array([0, 1, 0, 1, 0], np.int8), np.array([1, 1, 0, 0, 1], np.int8))
    disc = Discretiser(schema, 4)
    codes = disc.encode(data)
    np.testing.assert_array_equal(codes["x"], [0, 0, 1, 3, 3])
    rows = disc.decode(codes, np.random.default_rng(0))
    assert rows.features["x"].between(0.0, 4.0).all()
    assert ((rows.features["x"] >= 1.0) & (rows.features["x"] <= 2.0)).iloc[2]


def test_a_column_without_bounds_is_refused():
    schema = Schema("nb", (Column("x"),), "g", "1", "l", "1")
    with pytest.raises(DataError, match="no public bounds"):
        Discretiser(schema, 16)


# ---------------------------------------------------------------------------- estimation


def test_junction_tree_marginals_match_brute_force():
    """Calibrated marginals equal the sums of the full joint p ∝ exp(Σ θ_C)."""
    rng = np.random.default_rng(4)
    sizes = {"a": 3, "b": 2, "c": 4, "d": 2}
    cliques = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]  # a cycle: triangulated
    model = graphical.GraphicalModel(sizes, cliques, total=50.0)
    pots = {cl: rng.normal(size=[sizes[a] for a in cl]) for cl in model.cliques}
    model.calibrate(pots)
    grid = np.zeros([3, 2, 4, 2])
    for cl, t in pots.items():
        grid = grid + t.reshape([sizes[a] if a in cl else 1 for a in sizes])
    joint = np.exp(grid)
    joint *= 50.0 / joint.sum()
    np.testing.assert_allclose(model.project(("a", "c")), joint.sum(axis=(1, 3)), rtol=1e-10)
    np.testing.assert_allclose(model.project(("b", "d")), joint.sum(axis=(0, 2)), rtol=1e-10)
    np.testing.assert_allclose(model.project(("a", "b", "d")), joint.sum(axis=2), rtol=1e-10)


def test_estimate_recovers_exact_marginals_of_a_chain():
    """Noise-free marginals of a chain a–b–c–d: the model family holds the truth, so mirror
    descent must reach it, the unmeasured ``(a, d)`` and ``(b, c, d)`` included (counts of a
    1,000-row table, to within 0.1)."""
    rng = np.random.default_rng(3)
    sizes = {"a": 3, "b": 4, "c": 2, "d": 5}
    chain = [("a", "b"), ("b", "c"), ("c", "d")]
    grid = np.zeros([3, 4, 2, 5])
    for cl in chain:
        grid = grid + rng.normal(size=[sizes[a] for a in cl]).reshape(
            [sizes[a] if a in cl else 1 for a in sizes])
    joint = np.exp(grid) * 1000.0 / np.exp(grid).sum()

    def truth(keep):
        return joint.sum(axis=tuple(i for i, a in enumerate(sizes) if a not in keep))

    measured = [("a",), ("b",), ("c",), ("d",), *chain]
    model = graphical.estimate(sizes, [(cl, truth(cl), 1.0) for cl in measured], total=1000.0,
                               iters=1000)
    for cl in [*measured, ("a", "d"), ("b", "c", "d")]:
        np.testing.assert_allclose(model.project(cl), truth(cl), atol=0.1)


def test_model_size_matches_mbi_on_random_graphs():
    """The junction tree behind the size limit, on 200 random graphs of up to 40 attributes,
    gives mbi 2.0's hypothetical model size exactly (the greedy order read from the
    elimination graph's adjacency is the order mbi builds from its cliques)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    mbi = pytest.importorskip("mbi")
    rng = np.random.default_rng(5)
    for _ in range(200):
        names = [f"x{i}" for i in range(int(rng.integers(2, 41)))]
        sizes = {n: int(rng.choice([2, 3, 5, 16])) for n in names}
        cliques = [tuple(sorted(rng.choice(names, int(rng.integers(1, min(3, len(names)) + 1)),
                                            replace=False), key=names.index))
                   for _ in range(int(rng.integers(1, 2 * len(names) + 1)))]
        assert graphical.model_size(sizes, cliques) == pytest.approx(
            mbi.junction_tree.hypothetical_model_size(mbi.Domain.fromdict(sizes), cliques),
            rel=1e-12)


@pytest.mark.slow
def test_estimate_matches_mbi_mirror_descent():
    """The numpy estimator reaches the marginals of mbi 2.0's MirrorDescent on one problem."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    mbi = pytest.importorskip("mbi")
    rng = np.random.default_rng(1)
    sizes = {"a": 3, "b": 4, "c": 2, "d": 5, "e": 2}
    cliques = [("a",), ("b",), ("c",), ("d",), ("e",), ("a", "b"), ("b", "c"), ("c", "d"),
               ("a", "d"), ("d", "e")]
    ours, theirs = [], []
    for cl in cliques:
        y, s = rng.uniform(0, 100, math.prod(sizes[a] for a in cl)), rng.uniform(1, 3)
        ours.append((cl, y, s))
        theirs.append(mbi.LinearMeasurement(y, cl, stddev=s))
    domain = mbi.Domain.fromdict(sizes)
    ref = mbi.estimation.MirrorDescent().estimate(domain, theirs, known_total=300.0, iters=3000)
    model = graphical.estimate(sizes, ours, total=300.0, iters=3000)
    for cl in [*cliques, ("a", "c"), ("b", "d", "e")]:
        np.testing.assert_allclose(model.project(cl).ravel(),
                                   np.asarray(ref.project(cl).datavector()).ravel(), atol=1e-4)
    assert graphical.model_size(sizes, cliques) == pytest.approx(
        mbi.junction_tree.hypothetical_model_size(domain, cliques), rel=1e-12)


# ---------------------------------------------------------------------------- end to end


def test_fit_and_sample_give_valid_rows():
    data = _dependent_table(800)
    gen = make_generator("aim", epsilon=1.0, delta=1e-5, seed=0, noise_seed=3, iters=100,
                         final_iters=100)
    rows = gen.fit(data).sample(500)
    assert len(rows) == 500 and rows.schema == data.schema
    for col in data.schema.categorical:
        assert rows.features[col.name].isin(col.categories).all()
    assert set(np.unique(rows.s)) <= {0, 1} and set(np.unique(rows.y)) <= {0, 1}
    spent = gen.privacy_spent()
    assert spent["epsilon"] == pytest.approx(1.0, rel=1e-9) and spent["epsilon"] <= 1.0
    assert spent["rho_spent"] == pytest.approx(spent["rho"], rel=1e-12)
    assert spent["accountant"] == "zcdp" and spent["rounds"] == len(spent["per_round"])
    assert abs(gen.noisy_rows() - 800) < 400  # noisy, but of the right size
    assert gen.noisy_rows() == round(gen.model.total)


def test_group_label_init_keeps_a_feature_that_only_the_pair_explains():
    """a = s XOR y: independent of s and of y alone, so no 1-way or 2-way marginal shows it.
    The fit measures (s, y) and (feature, s, y) first, the rows keep the relation (ε = 30),
    and the budget adds up: one measurement fewer at the start, ρ spent exactly."""
    rng = np.random.default_rng(0)
    n, cats = 4000, ("p", "q")
    s, y = rng.integers(0, 2, n), rng.integers(0, 2, n)
    flip = rng.random(n) < 0.05
    schema = Schema(name="xor", features=(Column("a", kind="categorical", categories=cats),
                                          Column("c", kind="categorical", categories=cats)),
                    sensitive="g", privileged="1", label="l", favourable="1")
    features = pd.DataFrame({"a": np.take(cats, (s ^ y) ^ flip),
                             "c": np.take(cats, rng.integers(0, 2, n))})
    data = TabularData(schema, features, s.astype(np.int8), y.astype(np.int8))
    gen = AIM(AIMConfig(epsilon=30.0, delta=1e-6, init="group-label", rounds=8, iters=200,
                        final_iters=200, noise_seed=0)).fit(data)
    assert gen.measured[:3] == [("s", "y"), ("a", "s", "y"), ("c", "s", "y")]
    spent = gen.privacy_spent()
    assert spent["initial"] == {"marginals": "group-label", "count": 3,
                                "sigma": spent["sigma_initial"],
                                "rho": pytest.approx(3 / (2 * spent["sigma_initial"] ** 2))}
    assert spent["rho_spent"] == pytest.approx(spent["rho"], rel=1e-12)
    rows = gen.sample(n, seed=1)
    agree = (rows.features["a"].to_numpy() == "q") == (rows.s ^ rows.y).astype(bool)
    assert agree.mean() > 0.9  # the real rows: 0.95; independence would give 0.5


def test_noise_follows_noise_seed_not_seed():
    """The DP noise comes from NoiseSource(noise_seed): the same noise seed repeats the fit
    whatever the public seed; another noise seed changes the measurements."""
    data = _dependent_table(600)

    def fit(**kw):
        opts = dict(epsilon=1.0, delta=1e-5, rounds=6, iters=30, final_iters=30) | kw
        return AIM(AIMConfig(**opts)).fit(data)

    one, two = fit(seed=0, noise_seed=5), fit(seed=9, noise_seed=5)
    assert one.privacy_spent()["per_round"] == two.privacy_spent()["per_round"]
    assert one.model.total == two.model.total
    assert fit(seed=0, noise_seed=6).model.total != one.model.total


@pytest.mark.slow
def test_large_epsilon_keeps_the_s_y_marginal(law_school):
    """With ε = 50 the synthetic (s, y) shares match the real ones, and every row is valid
    (T = 24 rounds and a 1 MB model keep it to seconds)."""
    data = law_school.subset(np.arange(3000))
    gen = make_generator("aim", epsilon=50.0, delta=1e-6, seed=0, noise_seed=1, rounds=24,
                         iters=300, max_model_size=1.0)
    rows = gen.fit(data).sample(len(data))
    real = np.bincount(2 * data.s + data.y, minlength=4) / len(data)
    syn = np.bincount(2 * rows.s + rows.y, minlength=4) / len(rows)
    assert np.abs(real - syn).max() < 0.01
    for col in data.schema.continuous:
        lo, hi = col.bounds
        assert rows.features[col.name].between(lo, hi).all()


# ---------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("options, words", [
    ({"epochs": 3}, "unknown option"),
    ({"workload": "all"}, "workload must be one of"),
    ({"init": "two-way"}, "init must be one of"),
    ({"bins": 1}, "bins must be"),
    ({"iters": 0}, "iters must be"),
    ({"max_model_size": -1}, "max_model_size"),
    ({"rounds": 0}, "rounds must be"),
    ({"max_cells": 2}, "max_cells"),
    ({"noise_seed": 1, "secure_mode": True}, "cannot be seeded"),
])
def test_bad_options_raise_config_error(options, words):
    with pytest.raises(ConfigError, match=words):
        make_generator("aim", epsilon=1.0, delta=1e-6, **options)


def test_too_few_rounds_and_unfitted_use_are_refused():
    data = _dependent_table(200)
    with pytest.raises(ConfigError, match="rounds must be at least"):
        AIM(AIMConfig(delta=1e-4, rounds=3)).fit(data)
    with pytest.raises(ConfigError, match="call fit"):
        AIM(AIMConfig()).sample(10)


def test_secure_mode_fits_from_os_noise():
    """secure_mode draws the Gaussian and the Gumbel noise from os.urandom: a fit runs and,
    unseeded, two fits differ."""
    data = _dependent_table(400)
    fits = [AIM(AIMConfig(delta=1e-4, rounds=6, iters=20, final_iters=20,
                          secure_mode=True)).fit(data) for _ in range(2)]
    assert fits[0].model.total != fits[1].model.total
    assert all(f.privacy_spent()["rho_spent"] == pytest.approx(f.privacy_spent()["rho"])
               for f in fits)
