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
