"""Stage 2: the DP-CTGAN generator (clients/dp_ctgan/) and its registry.

Independent truth: per-sample gradients computed one sample at a time with plain autograd
(clipping), the noise's sample standard deviation on a batch with zero gradients, Opacus'
accountant recomputed from the reported mechanisms, and neighbouring datasets whose
statistics must not differ except through the DP mechanisms.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant
from small_generator import FAST

from clients import dp_ctgan
from clients.dp_ctgan import DPCTGAN, DPCTGANConfig
from clients.dp_ctgan.calibration import allocate, systematic_sample, tilt
from clients.dp_ctgan.networks import Discriminator, PrivateCritic
from clients.dp_ctgan.representation import TableTransformer, histogram_edges, scaled
from clients.dp_generators import make_generator
from common import datasets, dp_queries, privacy
from common.errors import ConfigError, DataError
from common.schema import Column, Schema, TabularData, from_frame


def mixed_data(n: int = 400, seed: int = 0) -> TabularData:
    """Continuous (bounded), integer, unbounded continuous and categorical columns."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "score": np.clip(rng.normal(50 + 5 * s, 8, n), 0, 100),
        "level": rng.integers(1, 6, n),
        "income": rng.lognormal(3, 0.5, n),
        "job": rng.choice(["a", "b", "c"], n),
        "group": s,
        "label": (rng.random(n) < 0.3 + 0.4 * s).astype(int),
    })
    schema = Schema(
        name="mixed",
        features=(Column("score", bounds=(0.0, 100.0)),
                  Column("level", bounds=(1.0, 5.0), integer=True), Column("income"),
                  Column("job", kind="categorical", categories=("a", "b", "c"))),
        sensitive="group", privileged="1", label="label", favourable="1",
    )
    return from_frame(frame, schema)


@pytest.fixture(scope="module")
def mixed():
    return mixed_data()


@pytest.fixture(scope="module")
def fitted(mixed):
    return make_generator("dp-ctgan", epsilon=1.0, delta=1.0 / len(mixed) ** 1.5, seed=0,
                          noise_seed=0,
                          **FAST).fit(mixed)


# --------------------------------------------------------------------------- the DP optimizer


def test_noise_on_a_zero_gradient_batch_has_the_stated_scale():
    disc = Discriminator(20, (128,), 1)
    with torch.no_grad():
        for p in disc.parameters():
            p.zero_()  # zero weights, zero input: logit 0, σ(0) = 0.5 = target → zero gradients
    critic = PrivateCritic(disc, lr=1e-3, noise_multiplier=2.0, max_grad_norm=0.5,
                           expected_batch_size=100, generator=torch.Generator().manual_seed(0))
    critic.privatised_gradient(torch.zeros(300, 20), torch.full((300,), 0.5))
    grads = torch.cat([p.grad.flatten() for p in critic.module.parameters()])
    expected = 2.0 * 0.5 / 100  # σ·C / expected batch size
    assert grads.numel() > 2500
    assert float(grads.std()) == pytest.approx(expected, rel=0.05)
    assert abs(float(grads.mean())) < 4 * expected / math.sqrt(grads.numel())


def _clipped_sum_one_at_a_time(module, x, target, clip):
    total = [torch.zeros_like(p) for p in module.parameters()]
    for xi, ti in zip(x, target):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(xi[None]), ti[None])
        grads = torch.autograd.grad(loss, list(module.parameters()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads)]
    return total


@pytest.mark.parametrize("pac", [1, 3])
def test_per_pack_gradients_are_clipped_then_summed(pac):
    torch.manual_seed(1)
    disc = Discriminator(6, (32, 16), pac)
    reference = copy.deepcopy(disc)
    x, target = torch.randn(60 * pac, 6) * 3, (torch.rand(60) < 0.5).float()
    critic = PrivateCritic(disc, lr=1e-3, noise_multiplier=0.0, max_grad_norm=0.3,
                           expected_batch_size=60)
    critic.privatised_gradient(x, target)
    expected = _clipped_sum_one_at_a_time(reference, x.reshape(60, pac * 6), target, 0.3)
    for p, e in zip(critic.module.parameters(), expected):
        torch.testing.assert_close(p.grad * 60, e, atol=2e-5, rtol=1e-4)


def test_one_sample_moves_the_summed_gradient_by_at_most_the_clip():
    torch.manual_seed(2)
    disc = Discriminator(6, (32,), 1)
    x, target = torch.randn(50, 6), (torch.rand(50) < 0.5).float()
    outlier, label = torch.full((1, 6), 40.0), torch.zeros(1)

    def summed(xs, ts):
        critic = PrivateCritic(copy.deepcopy(disc), lr=1e-3, noise_multiplier=0.0,
                               max_grad_norm=0.7, expected_batch_size=1)
        critic.privatised_gradient(xs, ts)
        return torch.cat([p.grad.flatten() for p in critic.module.parameters()])

    diff = summed(torch.cat([x, outlier]), torch.cat([target, label])) - summed(x, target)
    assert float(diff.norm()) == pytest.approx(0.7, rel=1e-4)  # its raw norm is ≫ 0.7


def test_pac_above_one_charges_the_accountant_with_half_the_noise(mixed):
    gen = make_generator("dp-ctgan", epsilon=1.0, delta=1.0 / len(mixed) ** 1.5, seed=0,
                         noise_seed=0, **{**FAST, "pac": 2}).fit(mixed)
    spent = gen.privacy_spent()
    sgd = spent["budget_split"]["discriminator DP-SGD"]
    assert spent["noise_multiplier"] == pytest.approx(2 * sgd["noise_multiplier"])
    assert gen.critic.optimizer.noise_multiplier == pytest.approx(spent["noise_multiplier"])
    assert spent["sensitivity"] == pytest.approx(2 * spent["max_grad_norm"])


# --------------------------------------------------------------------------- privacy report


def test_report_recomputes_with_opacus_and_stays_within_budget(fitted, mixed):
    spent = fitted.privacy_spent()
    for key in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "epochs",
                "accountant", "budget_split"):
        assert key in spent
    assert spent["accountant"] == "rdp"
    assert spent["delta"] == pytest.approx(1.0 / len(mixed) ** 1.5)
    assert 0.99 <= spent["epsilon"] <= 1.0
    accountant = RDPAccountant()
    accountant.history = [(m["noise_multiplier"], m["sample_rate"], m["steps"])
                          for m in spent["budget_split"].values()]
    assert accountant.get_epsilon(spent["delta"], alphas=list(privacy.ALPHAS)) == \
        pytest.approx(spent["epsilon"], rel=1e-12)
    # every statistic read from the rows is in the split (this data has unbounded and
    # categorical columns, so bounds and category counts are spent too)
    assert set(spent["budget_split"]) == {"bounds", "cell counts", "marginals", "correlations",
                                          "category counts", "moments", "discriminator DP-SGD"}
    sgd = spent["budget_split"]["discriminator DP-SGD"]
    assert sgd["sample_rate"] == spent["sample_rate"] and sgd["steps"] == spent["steps"]


def test_statistics_see_the_rows_only_through_dp_mechanisms(monkeypatch):
    """With every mechanism replaced by a data-independent release, two datasets that differ in
    one row must give identical statistics, representation and DP-SGD schedule: nothing else
    reads the rows."""
    monkeypatch.setattr(dp_queries, "noisy_counts",
                        lambda codes, k, **kw: np.linspace(200.0, 400.0, k))
    monkeypatch.setattr(dp_queries, "noisy_histograms",
                        lambda cols, edges, **kw: [np.linspace(5.0, 60.0, len(e) - 1)
                                                   for e in edges])
    monkeypatch.setattr(dp_queries, "noisy_sums",
                        lambda rows, groups, k, **kw: np.full((k, rows.shape[1]), 7.0))
    monkeypatch.setattr(dp_queries, "noisy_second_moments",
                        lambda rows, **kw: 60.0 * np.eye(rows.shape[1]) + 10.0)
    monkeypatch.setattr(dp_queries, "dp_bounds", lambda values, **kw: (-3.0, 300.0))
    data = mixed_data()
    frame = data.features.copy()
    frame.loc[0, ["score", "level", "income", "job"]] = [99.0, 5, 1e4, "c"]
    other = TabularData(data.schema, frame, data.s.copy(), 1 - data.y)
    gens = [DPCTGAN(DPCTGANConfig(delta=1e-5, **FAST)).fit(d) for d in (data, other)]
    a, b = (g.stats for g in gens)
    for field in ("bounds", "cell_counts", "mode_probs", "category_tables", "cell_means",
                  "edges", "correlation", "ranges"):
        va, vb = getattr(a, field), getattr(b, field)
        if isinstance(va, dict):
            assert va.keys() == vb.keys()
            for k in va:
                np.testing.assert_array_equal(va[k], vb[k])
        elif isinstance(va, list):
            for x, y in zip(va, vb):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(va, vb)
    assert gens[0].privacy_spent() == gens[1].privacy_spent()


@pytest.mark.parametrize("order", ["private-only", "fair-then-private", "private-then-fair"])
def test_release_size_does_not_disclose_the_row_count(monkeypatch, order):
    """Add/remove-one neighbours: with every DP mechanism replaced by a data-independent
    release, a dataset and the same dataset minus one row release the same number of rows
    (sizes follow the generator's noisy count, not N)."""
    from clients.pipeline import PipelineConfig, Stage2Config, run_pipeline_fractions
    from clients.stage1 import Stage1Config

    monkeypatch.setattr(dp_queries, "noisy_counts",
                        lambda codes, k, **kw: np.linspace(200.0, 400.0, k))
    data = mixed_data()
    smaller = data.subset(np.arange(1, len(data)))
    config = PipelineConfig(order=order, stage1=Stage1Config(iterations=3),
                            stage2=Stage2Config(delta=1e-5, options=FAST))
    sizes = [[len(r.rows) for r in run_pipeline_fractions(d, config, [1.0, 0.1], seed=0)]
             for d in (data, smaller)]
    assert sizes[0] == sizes[1] == [1200, 120]  # Σ noisy counts = 4 · 300


# --------------------------------------------------------------------------- the generator


def test_samples_keep_schema_bounds_and_noisy_cell_shares(fitted, mixed):
    rows = fitted.sample(1000)
    assert rows.schema == mixed.schema and len(rows) == 1000
    assert rows.features["score"].between(0, 100).all()
    assert set(rows.features["level"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}  # rounded integers
    lo, hi = fitted.stats.bounds["income"]
    assert rows.features["income"].between(lo, hi).all()
    assert set(rows.features["job"].unique()) <= {"a", "b", "c"}
    counts = rows.cell_counts()
    np.testing.assert_array_equal([counts[c] for c in dp_ctgan.CELLS],
                                  allocate(fitted.stats.cell_counts, 1000))


def test_calibration_brings_cell_means_to_the_dp_targets():
    # Enough rows and budget that the DP targets are attainable by reweighting the pool.
    data = mixed_data(3000, seed=1)
    gen = make_generator("dp-ctgan", epsilon=8.0, delta=1e-5, seed=0, noise_seed=0,
                         **FAST).fit(data)
    rows = gen.sample(6000, seed=5)
    x = scaled(rows.features, gen.stats.ranges)
    cell = 2 * rows.s.astype(int) + rows.y
    for c in range(4):
        np.testing.assert_allclose(x[cell == c].mean(axis=0), gen.stats.cell_means[c], atol=0.05)
    real = scaled(data.features, gen.stats.ranges)
    real_cell = 2 * data.s.astype(int) + data.y
    uncalibrated = DPCTGAN(dataclasses.replace(gen.config, calibrate=False))
    uncalibrated.__dict__.update({k: v for k, v in gen.__dict__.items() if k != "config"})
    raw = uncalibrated.sample(6000, seed=5)
    x_raw, cell_raw = scaled(raw.features, gen.stats.ranges), 2 * raw.s.astype(int) + raw.y
    # calibrated rows are closer to the real cell means than the generator's own rows
    err = [np.abs(x[cell == c].mean(0) - real[real_cell == c].mean(0)).mean() for c in range(4)]
    err_raw = [np.abs(x_raw[cell_raw == c].mean(0) - real[real_cell == c].mean(0)).mean()
               for c in range(4)]
    assert np.mean(err) < 0.5 * np.mean(err_raw)


def test_sampling_is_seeded(fitted):
    a, b = fitted.sample(50, seed=3), fitted.sample(50, seed=3)
    pd.testing.assert_frame_equal(a.features, b.features)
    assert not fitted.sample(50, seed=4).features.equals(a.features)


def test_unknown_generator_lists_the_valid_names():
    with pytest.raises(ConfigError, match="dp-ctgan"):
        make_generator("gan-9000", epsilon=1.0, delta=1e-6)


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="epohcs"):
        make_generator("dp-ctgan", epsilon=1.0, delta=1e-6, epohcs=3)


@pytest.mark.parametrize("options, match", [
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon": float("inf")}, "epsilon"), ({"delta": 0.0}, "delta"), ({"delta": 1.0}, "delta"),
    ({"epochs": 0}, "epochs"), ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": 1.5}, "sample_rate"), ({"pac": 0}, "pac"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"), ({"modes": 0}, "modes"),
    ({"lr_generator": -1e-3}, "lr_generator"), ({"lr_discriminator": 0.0}, "lr_discriminator"),
    ({"prior": "gaussian"}, "prior"), ({"fine_bins": 4}, "fine_bins"),
    ({"budget": {"moments": 1.5}}, "share"),
])
def test_bad_hyperparameters_raise_clear_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        DPCTGANConfig.from_options(**options)


def test_delta_not_below_one_over_n_is_refused_at_fit(mixed):
    with pytest.raises(ConfigError, match="delta"):
        make_generator("dp-ctgan", epsilon=1.0, delta=1.0 / len(mixed), **FAST).fit(mixed)


def test_sample_before_fit_and_bad_sizes_are_refused(fitted):
    with pytest.raises(ConfigError, match="fit"):
        DPCTGAN(DPCTGANConfig()).sample(10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="≥ 1"):
            fitted.sample(bad)


# --------------------------------------------------------------------------- pieces


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30))
def test_transformer_round_trips_continuous_values(values):
    col = Column("x", bounds=(0.0, 100.0))
    schema = Schema("t", (col,), "s", "1", "y", "1")
    tf = TableTransformer(schema, {"x": np.linspace(0.0, 100.0, 8)})
    frame = pd.DataFrame({"x": values})
    back = tf.inverse(tf.transform(frame).astype(np.float64))
    np.testing.assert_allclose(back["x"], values, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(1, 10), min_size=1, max_size=30))
def test_transformer_keeps_integers_on_their_own_modes(values):
    col = Column("d", bounds=(1.0, 10.0), integer=True)
    schema = Schema("t", (col,), "s", "1", "y", "1")
    tf = TableTransformer(schema, {"d": histogram_edges(col, col.bounds, 64)})
    matrix = tf.transform(pd.DataFrame({"d": values}))
    assert np.all(matrix[:, 0] == 0)  # offset 0: every value sits on its mode's centre
    np.testing.assert_array_equal(tf.inverse(matrix)["d"], values)


def test_tilt_matches_feasible_targets():
    rng = np.random.default_rng(0)
    n = 2000
    cells = rng.integers(0, 4, n)
    A = rng.normal(size=(n, 3))
    local = rng.integers(0, 4, (n, 1))  # one per-cell one-hot (4 values)
    codes = np.column_stack([rng.integers(0, 3, n), 3 + rng.integers(0, 2, n)])  # two pooled
    onehot = lambda idx, k: np.eye(k)[idx].sum(axis=1)  # noqa: E731
    L, B = onehot(local, 4), onehot(codes, 5)
    T = np.stack([A[cells == c][:40].mean(axis=0) for c in range(4)])  # inside each cell's hull
    H = np.stack([L[cells == c][40:90].mean(axis=0) for c in range(4)])
    share = np.array([0.1, 0.2, 0.3, 0.4])
    t = sum(share[c] * B[cells == c][:60].mean(axis=0) for c in range(4))
    w = tilt(A, T, cells, share, local_codes=local, local_targets=H, codes=codes, t=t,
             ridge=1e-8)
    for c in range(4):
        rows = cells == c
        assert w[rows].sum() == pytest.approx(1.0)
        np.testing.assert_allclose(w[rows] @ A[rows], T[c], atol=2e-3)
        np.testing.assert_allclose(w[rows] @ L[rows], H[c], atol=2e-3)
    np.testing.assert_allclose(sum(share[c] * (w[cells == c] @ B[cells == c]) for c in range(4)),
                               t, atol=2e-3)


@given(counts=st.lists(st.floats(0, 1e4), min_size=4, max_size=4).filter(lambda c: sum(c) > 1),
       n=st.integers(4, 5000))
def test_allocate_splits_n_in_proportion(counts, n):
    counts = np.array(counts)
    alloc = allocate(counts, n)
    assert alloc.sum() == n and np.all(alloc >= 0)
    quota = n * counts / counts.sum()
    forced = (counts >= 1) & (quota < 1)  # cells lifted to one row take it from the others
    assert np.abs(alloc - quota).max() <= 1 + forced.sum()
    assert np.all(alloc[counts == 0] == 0)
    assert np.all(alloc[counts >= 1] >= 1)


def test_systematic_sampling_draws_in_proportion_to_the_weights():
    rng = np.random.default_rng(0)
    weights = np.array([0.5, 0.3, 0.2, 0.25, 0.75])
    cells = np.array([0, 0, 0, 1, 1])
    draws = np.concatenate([systematic_sample(weights, cells, np.array([10, 4, 0, 0]), rng)
                            for _ in range(400)])
    freq = np.bincount(draws, minlength=5) / 400
    np.testing.assert_allclose(freq, [5.0, 3.0, 2.0, 1.0, 3.0], atol=0.05)


@pytest.mark.parametrize("seed", range(4))
def test_tiny_data_gives_valid_rows_or_a_clear_error(seed):
    tiny = datasets.make_synthetic(8, seed=seed)
    gen = make_generator("dp-ctgan", epsilon=0.5, delta=1e-3, seed=seed, noise_seed=seed,
                         **FAST)
    try:
        gen.fit(tiny)
    except DataError as exc:
        assert "too few rows" in str(exc)
        return
    rows = gen.sample(20)
    assert len(rows) == 20 and rows.schema == tiny.schema


@pytest.mark.slow
def test_law_school_client_end_to_end(law_school):
    """One Law School client at ε = 1: the budget holds, the released rows follow the real
    marginals and cells, and the server model trained on them keeps the real model's accuracy
    and most of its group gap (the generator neither erases nor invents the s–y structure)."""
    from common.global_model import fit_global_model
    from common.partition import federated_split
    from common.quality import quality_report

    split = federated_split(law_school, clients=2, seed=0)[0]
    real = split.train
    gen = make_generator("dp-ctgan", epsilon=1.0, delta=1.0 / len(real) ** 1.5, seed=0,
                         noise_seed=0,
                         progress=False).fit(real)
    rows = gen.sample(len(real))
    assert gen.privacy_spent()["epsilon"] <= 1.0
    report = quality_report(real, rows, split.test)
    assert report["ks_mean"] < 0.08 and report["cell_tvd"] < 0.03
    on_real = fit_global_model([real]).evaluate(split.test)
    on_syn = fit_global_model([rows]).evaluate(split.test)
    assert on_syn["accuracy"] >= on_real["accuracy"] - 0.01
    assert 0.5 * on_real["spd"] <= on_syn["spd"] <= 1.5 * on_real["spd"]


@pytest.mark.parametrize("seed", range(3))
def test_a_client_of_a_few_dozen_rows_trains(seed):
    # About one expected row per DP-SGD batch: the generator still gets a batch of two or
    # more (its batch norm needs them), as in a 500-way split of Adult.
    small = datasets.make_synthetic(20, seed=seed)
    gen = make_generator("dp-ctgan", epsilon=1.0, delta=1e-3, seed=seed, noise_seed=seed,
                         epochs=2)
    gen.fit(small)
    rows = gen.sample(10)
    assert len(rows) == 10 and rows.schema == small.schema
