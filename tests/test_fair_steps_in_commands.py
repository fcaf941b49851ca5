"""Fair4Free and FADM in the measuring commands: ``stage2-sweep --synthesizer``, ``frontier
--releases fair4free fadm`` and ``audit --synthesizer`` run them in stage 1's place, and only
there (a spy on the fair steps), and label their points by name."""

from __future__ import annotations

import json

import pytest

import clients.synthesizers  # noqa: F401 (registers the fair steps before the spy)
from clients import pipeline
from clients.stage1 import FairDistiller
from simulations.cli import main

GENERATOR = json.dumps({"epochs": 1.0, "sample_rate": 0.25, "generator_dims": [16],
                        "discriminator_dims": [16], "noise_dim": 8, "progress": False})
TINY = ["--fair4free-epochs", "1", "--fadm-iterations", "20", "--fadm-steps", "10",
        "--generator-options", GENERATOR]


@pytest.fixture
def fair_calls(monkeypatch) -> list[str]:
    """Which fair steps ran (their names, once per call; stage 1 is "bilevel")."""
    calls: list[str] = []
    fit = FairDistiller.fit
    monkeypatch.setattr(FairDistiller, "fit",
                        lambda self, data: calls.append("bilevel") or fit(self, data))
    for name, step in list(pipeline.FAIR_STEPS.items()):
        def spy(*args, _name=name, _step=step, **kwargs):
            calls.append(_name)
            return _step(*args, **kwargs)
        monkeypatch.setitem(pipeline.FAIR_STEPS, name, spy)
    return calls


def test_stage2_sweep_runs_fair4free_in_stage_1s_place(tmp_path, fair_calls):
    out = tmp_path / "sweep"
    assert main(["stage2-sweep", "--dataset", "synthetic", "--clients", "2", "--seeds", "0",
                 "--synthesizer", "fair4free", "--order", "fair-then-private", "fair-only",
                 "--fraction", "1.0", "--repair", "stage1", *TINY, "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    ours = [r for r in records if r["order"] != "real"]
    assert {r["synthesizer"] for r in ours} == {"fair4free"}
    assert {(r["order"], r["curve"]) for r in ours} == {
        ("fair-then-private", "syn_1"), ("fair-then-private", "syn_2(100%)"),
        ("fair-only", "syn_2(100%)")}
    # per client: fair-only once, fair-then-private twice (its stage-1 repair reruns the fair
    # step on the DP rows); never stage 1
    assert fair_calls == ["fair4free"] * 6
    # the same seed fits the same Fair4Free: fair-only releases fair-then-private's stage-1 rows
    syn_1 = next(r for r in ours if r["curve"] == "syn_1")
    fair_only = next(r for r in ours if r["order"] == "fair-only")
    assert fair_only["accuracy"] == pytest.approx(syn_1["accuracy"])
    page = (out / "tables.md").read_text()
    assert "fair-then-private with fair4free as the fair step" in page
    assert "| fair4free | 1 |" in page and "ρ = " not in page


def test_stage2_sweep_refuses_safes_as_the_fair_step(tmp_path, capsys):
    assert main(["stage2-sweep", "--dataset", "synthetic", "--seeds", "0",
                 "--synthesizer", "safes", "--out", str(tmp_path)]) != 0
    assert "--order safes" in capsys.readouterr().err


def test_frontier_places_fadm_with_and_without_stage_2(tmp_path, fair_calls):
    out = tmp_path / "frontier"
    assert main(["frontier", "--dataset", "synthetic", "--clients", "2", "--seeds", "0",
                 "--target", "0.1", "--iterations", "10", "--releases", "fadm",
                 "--repair", "stage1", *TINY,
                 "--out", str(out)]) == 0
    payload = json.loads((out / "frontier.json").read_text())
    curves = {s["curve"]: s for s in payload["summary"]}
    assert set(curves) == {"real", "syn_1", "fadm", "fadm rows"}
    assert curves["fadm"]["label"] == "fadm (ε = 1)" and curves["fadm"]["epsilon"] == 1.0
    assert curves["fadm rows"]["label"] == "fadm rows" and curves["fadm rows"]["epsilon"] is None
    # FADM twice per client (fair-then-private and its stage-1 repair), stage 1 once (syn_1)
    assert sorted(fair_calls) == ["bilevel"] * 2 + ["fadm"] * 4
    assert any(v.startswith("fadm (ε = 1): |SPD|") for v in payload["verdicts"])


def test_audit_attacks_fair4free_rows(tmp_path, fair_calls):
    out = tmp_path / "audit"
    assert main(["audit", "--dataset", "synthetic", "--clients", "2", "--seeds", "0",
                 "--synthesizer", "fair4free", "--order", "fair-then-private", "--epsilon", "1",
                 "--queries", "50", "--repair", "stage1", *TINY, "--out", str(out)]) == 0
    summary = json.loads((out / "audit.json").read_text())["summary"]
    assert {r["source"] for r in summary} == {"real", "fair-only", "fair-then-private"}
    assert fair_calls == ["fair4free"] * 3  # fair-only; fair-then-private and its repair
    real = next(r for r in summary if r["source"] == "real")
    assert real["dcr_auc"] > 0.9  # the training rows themselves: every member at distance 0
    assert "synthesizer fair4free" in (out / "tables.md").read_text()
