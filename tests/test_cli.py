"""The ``fairsynth`` command line: sweeps write their files; user errors exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simulations.cli import main


def test_stage1_sweep_writes_results_and_figure(tmp_path):
    out = tmp_path / "sweep"
    code = main(["stage1-sweep", "--dataset", "synthetic", "--clients", "2", "--measure", "sp",
                 "eo", "--rho", "0", "100", "--seeds", "0", "1", "--iterations", "30", "--out",
                 str(out)])
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    records = payload["records"]
    assert len(records) == 2 * 2 * 2  # measures × ρ × seeds
    for key in ["measure", "rho", "seed", "accuracy", "spd", "eod", "cov", "corr", "dpr", "eor",
                "seconds"]:
        assert all(key in r for r in records)
    assert (out / "stage1_sp.png").stat().st_size > 10_000
    assert (out / "stage1_eo.png").stat().st_size > 10_000
    base = [r for r in payload["summary"] if r["rho"] == 0 and r["measure"] == "sp"][0]
    fair = [r for r in payload["summary"] if r["rho"] == 100 and r["measure"] == "sp"][0]
    assert fair["spd"] < base["spd"]


@pytest.mark.parametrize("argv, message", [
    (["stage1-sweep", "--dataset", "synthetic", "--rho", "-1", "--seeds", "0"],
     "rho = -1.0 is invalid"),
    (["stage1-sweep", "--dataset", "synthetic", "--clients", "1000", "--seeds", "0"],
     "cannot give"),
    (["stage1-sweep", "--csv", "nowhere.csv", "--sensitive", "a", "--privileged", "1",
      "--label", "b", "--favourable", "1"], "does not exist"),
    (["stage1-sweep", "--csv", "x.csv"], "--csv needs"),
])
def test_user_errors_exit_2_with_a_message(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, "-m", "simulations.cli", *argv, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_missing_dataset_points_to_fetch(tmp_path, capsys):
    code = main(["stage1-sweep", "--data-dir", str(tmp_path), "--seeds", "0", "--out",
                 str(tmp_path / "o")])
    assert code == 2
    assert "fairsynth data fetch law_school" in capsys.readouterr().err


def test_data_fetch_command_verifies_and_reports(tmp_path, data_dir, capsys):
    code = main(["data", "fetch", "law_school", "--data-dir", str(tmp_path),
                 "--base-url", data_dir.as_uri()])
    assert code == 0
    assert "law_school_clean.csv  ok" in capsys.readouterr().out
    assert (tmp_path / "law_school_clean.csv").stat().st_size == \
        (data_dir / "law_school_clean.csv").stat().st_size


GENERATOR = json.dumps({"epochs": 1.0, "sample_rate": 0.25, "generator_dims": [16],
                        "discriminator_dims": [16], "noise_dim": 8, "progress": False})


def tables_page(out) -> str:
    page = (out / "tables.md").read_text()
    assert page.startswith("Produced by `fairsynth ")
    return page


def test_stage1_sweep_tables_are_the_summary(tmp_path):
    """tables.md names its command and commit, and its cells are results.json's summary."""
    out = tmp_path / "sweep"
    argv = ["stage1-sweep", "--dataset", "synthetic", "--clients", "2", "--rho", "0", "50",
            "--target", "0.05", "--seeds", "0", "--iterations", "20", "--out", str(out)]
    assert main(argv) == 0
    page = tables_page(out)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert page.startswith(f"Produced by `fairsynth {' '.join(argv)}` on commit `{head}`")
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert sorted((r["target"], r["rho"]) for r in summary) == [(0, 0), (0, 50), (0.05, 0)]
    for r in summary:
        label = f"τ = {r['target']:g}" if r["target"] else f"ρ = {r['rho']:g}"
        assert (f"| {label}{' (real)' if not r['target'] and r['rho'] == 0 else ''} | "
                f"{100 * r['accuracy']:.2f} | {r['spd']:.4f} | {r['eod']:.4f} |") in page
    (target,) = [r for r in summary if r["target"]]
    assert target["local_gap"] <= 0.05  # met on every client's own rows


def test_stage2_sweep_writes_results_tables_and_figures(tmp_path):
    out = tmp_path / "s2"
    assert main(["stage2-sweep", "--dataset", "synthetic", "--clients", "2", "--rho", "0", "50",
                 "--target", "0.1", "--seeds", "0", "--iterations", "10",
                 "--order", "fair-then-private",
                 "--fraction", "1.0", "0.1", "--generator-options", GENERATOR,
                 "--out", str(out)]) == 0
    payload = json.loads((out / "results.json").read_text())
    curves = {r["curve"] for r in payload["summary"]}
    assert {"real", "syn_1"} <= curves and len(curves) >= 4  # + one syn_2 per fraction
    assert all(r["epsilon_spent"] <= 1.0 + 1e-9 for r in payload["records"]
               if r.get("epsilon_spent") is not None)
    page = tables_page(out)
    assert "fair-then-private, measure sp" in page and "| ρ = 50 | 1 |" in page
    assert "| τ = 0.1 | 1 |" in page
    assert {p.name for p in out.glob("*.png")} >= {"stage2_fair-then-private_sp_eps1.png",
                                                   "stage2_fair-then-private_sp_eps1_target.png"}


def test_audit_writes_aucs_and_tables(tmp_path):
    out = tmp_path / "audit"
    assert main(["audit", "--dataset", "synthetic", "--clients", "2", "--seeds", "0",
                 "--order", "private-then-fair", "--iterations", "10", "--queries", "50",
                 "--generator", "dp-ctgan", "--generator-options", GENERATOR,
                 "--out", str(out)]) == 0
    summary = json.loads((out / "audit.json").read_text())["summary"]
    assert {r["source"] for r in summary} == {"real", "fair-only", "private-then-fair"}
    assert all(0.0 <= r["dcr_auc"] <= 1.0 for r in summary)
    page = tables_page(out)
    assert all(f"| {r['source']} |" in page for r in summary)
