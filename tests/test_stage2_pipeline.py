"""Pipeline orders with stage 2 (clients/pipeline.py): what each run's (ε, δ) covers, what each
stage reads, release sizes and cell proportions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from small_generator import FAST

from clients import pipeline
from clients.pipeline import (
    ORDERS,
    PipelineConfig,
    Stage2Config,
    run_pipeline,
    run_pipeline_fractions,
)
from clients.stage1 import FairDistiller, Stage1Config
from common import datasets
from common.errors import ConfigError


def config(order: str, **stage2) -> PipelineConfig:
    return PipelineConfig(order=order, stage1=Stage1Config(iterations=15, rho=10.0),
                          stage2=Stage2Config(options=FAST, **stage2))


@pytest.fixture(scope="module")
def toy():
    return datasets.make_synthetic(500, seed=3)


@pytest.mark.parametrize("order, covers, private", [
    ("real", pipeline.COVERS_NOTHING, False),
    ("fair-only", pipeline.COVERS_NOTHING, False),
    ("private-only", pipeline.COVERS_REAL, True),
    ("fair-then-private", pipeline.COVERS_STAGE1, True),
    ("private-then-fair", pipeline.COVERS_REAL_POST, True),
])
def test_each_order_reports_what_its_guarantee_covers(toy, order, covers, private):
    result = run_pipeline(toy, config(order), seed=1)
    report = result.privacy
    assert report.order == order and report.covers == covers
    if private:
        assert 0.99 <= report.epsilon <= 1.0
        assert report.delta == Stage2Config().delta  # the run's δ, not a function of N
        assert "discriminator DP-SGD" in report.details["budget_split"]
        assert "input_rows" not in report.details  # the report does not disclose N
        summary = report.summary()  # what the client sends the server
        assert summary["epsilon"] == report.epsilon and summary["covers"] == covers
        assert "budget_split" not in summary and summary["steps"] == report.details["steps"]
    else:
        assert report.epsilon is None and report.delta is None
    assert set(report.as_dict()) >= {"order", "epsilon", "delta", "covers", "details"}


def test_clients_of_different_sizes_report_the_same_delta(toy):
    """δ = 1/(N√N) sent with a release gives N back (δ^(-2/3) = N); the default δ is the run's
    own, whatever the client's size."""
    small = toy.subset(np.arange(len(toy) // 2))
    reports = [run_pipeline(data, config("private-only"), seed=1).privacy for data in (toy, small)]
    assert reports[0].delta == reports[1].delta == Stage2Config().delta
    assert reports[0].summary()["delta"] == reports[1].summary()["delta"]


def test_stage_one_of_private_then_fair_reads_only_the_dp_rows(toy, monkeypatch):
    seen = []
    original = FairDistiller.fit

    def spy(self, data):
        seen.append(data)
        return original(self, data)

    monkeypatch.setattr(FairDistiller, "fit", spy)
    result = run_pipeline(toy, config("private-then-fair"), seed=2)
    assert len(seen) == 1 and seen[0] is result.intermediate["stage2"]
    assert not seen[0].features.equals(toy.features)


def test_the_generator_of_fair_then_private_reads_only_the_stage_one_rows(toy, monkeypatch):
    from clients import dp_ctgan

    seen = []
    original = dp_ctgan.DPCTGAN.fit

    def spy(self, data, **kwargs):
        seen.append(data)
        return original(self, data, **kwargs)

    monkeypatch.setattr(dp_ctgan.DPCTGAN, "fit", spy)
    result = run_pipeline(toy, config("fair-then-private"), seed=2)
    assert len(seen) == 1 and seen[0] is result.intermediate["stage1"]


def test_the_stage1_repair_of_fair_then_private_reads_only_the_dp_rows(toy, monkeypatch):
    """With the stage-1 repair, stage 1 runs twice: on the real rows, then on the generator's
    rows alone; the release is the second run's output and the (ε, δ) is the generator's."""
    seen = []
    original = FairDistiller.fit

    def spy(self, data):
        seen.append((data, self.config.fraction))
        return original(self, data)

    monkeypatch.setattr(FairDistiller, "fit", spy)
    cfg = config("fair-then-private", repair="stage1", fraction=0.5, noise_seed=6)
    result = run_pipeline(toy, cfg, seed=2)
    assert len(seen) == 2 and seen[0][0] is toy
    dp_rows, fraction = seen[1]
    assert dp_rows is result.intermediate["stage2"] and fraction == 0.5
    assert not dp_rows.features.equals(result.intermediate["stage1"].features)
    assert len(result.rows) == round(0.5 * len(dp_rows))
    plain = run_pipeline(toy, config("fair-then-private", noise_seed=6), seed=2)
    assert result.privacy.epsilon == plain.privacy.epsilon
    assert result.privacy.covers == pipeline.COVERS_STAGE1
    assert result.privacy.details["repair"] == "stage1"
    assert plain.privacy.details["repair"] == "off"
    assert set(result.seconds) == {"stage1", "stage2", "repair"}


@pytest.mark.parametrize("order, repair", [
    ("private-only", "off"), ("fair-then-private", "off"), ("fair-then-private", "stage1"),
    ("fair-then-private", "relabel"), ("private-then-fair", "off")])
def test_release_sizes_follow_the_fraction_and_cells_keep_their_shares(toy, order, repair):
    # A pinned noise seed: the tolerances below are about the sizing logic, not a draw.
    results = run_pipeline_fractions(toy, config(order, noise_seed=4, repair=repair),
                                     [1.0, 0.1], seed=4)
    # Sizes follow the DP row count N̂ (noise σ ≈ 2·17 on this 500-row set), not N itself.
    full, tenth = (len(r.rows) for r in results)
    assert abs(full - len(toy)) <= 0.2 * len(toy)
    assert tenth == round(0.1 * full) or abs(tenth - 0.1 * full) <= 1
    real = np.array([toy.cell_counts()[c] for c in sorted(toy.cell_counts())]) / len(toy)
    full = results[0].rows.cell_counts()
    shares = np.array([full[c] for c in sorted(full)]) / len(results[0].rows)
    if repair == "relabel":  # the labels are the DP label model's: only s keeps its share
        real, shares = real.reshape(2, 2).sum(axis=1), shares.reshape(2, 2).sum(axis=1)
    # noisy counts (σ ≈ 17 on a cell of this 500-row set): shares within 0.12
    np.testing.assert_allclose(shares, real, atol=0.12)


def test_one_fraction_through_both_entry_points_gives_the_same_rows(toy):
    cfg = dataclasses.replace(config("private-only"),
                              stage2=Stage2Config(fraction=0.3, options=FAST, noise_seed=3))
    single = run_pipeline(toy, cfg, seed=5)
    multi = run_pipeline_fractions(toy, cfg, [0.3], seed=5)[0]
    assert single.rows.features.equals(multi.rows.features)
    assert single.privacy == multi.privacy


@pytest.mark.parametrize("stage2, match", [
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": -2.0}, "epsilon"), ({"fraction": 0.0}, "fraction"),
    ({"fraction": -0.5}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"delta": 1.0}, "delta"),
])
def test_bad_stage_two_settings_raise_clear_errors(stage2, match):
    with pytest.raises(ConfigError, match=match):
        Stage2Config(**stage2)


def test_delta_not_below_one_over_n_is_refused(toy):
    cfg = config("private-only", delta=1.0 / len(toy))
    with pytest.raises(ConfigError, match="delta"):
        run_pipeline(toy, cfg)


def test_bad_fraction_in_a_fraction_list_is_refused(toy):
    with pytest.raises(ConfigError, match="fraction"):
        run_pipeline_fractions(toy, config("private-only"), [1.0, 0.0])


def test_every_order_is_registered_for_single_and_multi_runs():
    assert set(ORDERS) == {"real", "fair-only", "private-only", "fair-then-private",
                           "private-then-fair"}


@pytest.mark.parametrize("auto", [True, False])
def test_private_then_fair_warns_when_auto_gives_aim_a_small_table(toy, caplog, auto):
    """--generator auto chooses AIM for private-then-fair; on a table the generator's own DP
    row estimate puts below SMALL_TABLE the client is told that DP-CTGAN made the fairer rows
    there. A user who named AIM is not."""
    quick_aim = {"rounds": 8, "iters": 20, "final_iters": 20}
    cfg = PipelineConfig(order="private-then-fair", stage1=Stage1Config(iterations=5, rho=10.0),
                         stage2=Stage2Config(generator="aim", auto_generator=auto,
                                             options=quick_aim, noise_seed=0))
    with caplog.at_level("WARNING", logger="clients.pipeline"):
        run_pipeline(toy, cfg, seed=1)
    warned = [r for r in caplog.records if "small table for AIM" in r.getMessage()]
    assert len(toy) < pipeline.SMALL_TABLE and bool(warned) == auto
    if auto:
        assert "--generator dp-ctgan" in warned[0].getMessage()
        caplog.clear()
        with caplog.at_level("WARNING", logger="clients.pipeline"), pipeline.reuse_generators():
            for target in (0.1, 0.05):  # a sweep over τ shares the fit, and says it once
                run_pipeline(toy, dataclasses.replace(cfg, stage1=Stage1Config(
                    iterations=5, target=target)), seed=1)
        assert sum("small table for AIM" in r.getMessage() for r in caplog.records) == 1
