"""``fairsynth simulate`` and ``fairsynth compare``: user errors, the comparison's bookkeeping
and figures (no runtime), and one end-to-end simulate run (slow)."""

from __future__ import annotations

import json

import pytest
from federation_helpers import ray_test

from common.comm import Exchange
from common.errors import ConfigError
from simulations import comparison, figures
from simulations.cli import main
from simulations.results import write_tables


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic", "--clients", "1000"], "cannot give"),
    (["--dataset", "synthetic", "--order", "shuffle"], "invalid choice: 'shuffle'"),
    (["--dataset", "synthetic", "--clients", "2", "--min-clients", "3"], "min-clients = 3"),
    (["--dataset", "synthetic", "--epsilon", "0"], "epsilon"),
    (["--dataset", "synthetic", "--mlp-hidden", "0"], "mlp-hidden"),
])
def test_simulate_rejects_bad_setups_before_starting(tmp_path, capsys, argv, message):
    try:
        code = main(["simulate", *argv, "--out", str(tmp_path)])
    except SystemExit as exc:  # a flag that argparse itself refuses
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_compare_plans_every_strategy_on_the_same_seeds():
    runs = comparison.plan([0, 1], [1.0, 0.1], None, epsilons=[1.0, 4.0],
                           orders=["fair-then-private", "private-then-fair"])
    labels = [(r["label"], r["model"], r["seed"]) for r in runs]
    for seed in (0, 1):
        for label in ("oneshot ftp ε=1 100%", "oneshot ftp ε=1 10%", "oneshot ptf ε=1 100%",
                      "oneshot ftp ε=4 100%", "oneshot ptf ε=4 100%", "dp-fedavg ε=1",
                      "dp-fedavg ε=4", "fedavg", "fairfed"):
            assert (label, "logistic", seed) in labels
        assert len([x for x in labels if x[1:] == ("logistic", seed)]) == 9
    assert {(r["epsilon"], r["order"]) for r in runs
            if r["label"] == "oneshot ptf ε=4 100%"} == {(4.0, "private-then-fair")}
    assert [x for x in labels if x[1] == "mlp"] == [
        ("oneshot ftp ε=1 100%", "mlp", 0), ("oneshot ftp ε=1 10%", "mlp", 0), ("fedavg", "mlp", 0)]
    assert not [r for r in comparison.plan([0, 1], [1.0, 0.1], []) if r["model"] == "mlp"]
    with pytest.raises(ConfigError, match="mlp-seeds"):
        comparison.plan([0, 1], [1.0, 0.1], [7])
    assert comparison.oneshot_label("real", 1.0, 1.0) == "oneshot real 100%"


def _record(label, strategy, model, seed, acc, spd, params, rows, n_exchanges, per_exchange,
            K=2, bal=0.6, epsilon=None):
    exchanges = [Exchange(i, "train", K, K, per_exchange, per_exchange, 0, 0, 0.1).as_dict()
                 for i in range(n_exchanges)]
    total = 2 * per_exchange * n_exchanges
    return {"label": label, "strategy": strategy, "model": model, "seed": seed, "K": K,
            "stage2_fraction": None, "accuracy": acc, "balanced_accuracy": bal, "spd": spd,
            "eod": spd / 2, "epsilon": epsilon, "epsilon_target": 1.0 if epsilon else None,
            "rounds": n_exchanges - 1, "bytes_up": total / 2, "bytes_down": total / 2,
            "bytes_total": total, "ratio_bytes": 1.0, "ratio_payload": 1.0,
            "rows_released": rows, "seconds": 1.0, "params": params, "columns": 12,
            "clients": K, "exchanges": exchanges}


def test_compare_verdicts_crossover_and_figures(tmp_path, capsys):
    records = []
    for seed in (0, 1):
        records += [
            _record("oneshot ftp ε=1 100%", "oneshot", "logistic", seed, 0.880, 0.10, 12,
                    16_000, 2, 800_000, bal=0.62, epsilon=1.0),
            _record("oneshot ftp ε=1 10%", "oneshot", "logistic", seed, 0.860, 0.12, 12, 1_600,
                    2, 80_000, epsilon=1.0),
            _record("dp-fedavg ε=1", "dp-fedavg", "logistic", seed, 0.870 + 0.01 * seed, 0.20,
                    12, None, 21, 1_000, bal=0.55 + 0.01 * seed, epsilon=0.999),
            _record("fedavg", "fedavg", "logistic", seed, 0.885, 0.40, 12, None, 22, 1_000),
            _record("fairfed", "fairfed", "logistic", seed, 0.884, 0.30, 12, None, 22, 1_500),
            _record("fedavg", "fedavg", "logistic", seed, 0.70, 0.05, 12, None, 22, 1_000, K=10),
            _record("dp-fedavg ε=1", "dp-fedavg", "logistic", seed, 0.60, 0.01, 12, None, 21,
                    1_000, K=10, bal=0.5, epsilon=0.999),
            _record("oneshot ptf ε=1 100%", "oneshot", "logistic", seed, 0.61, 0.03, 12, 300, 2,
                    1_000, K=10, bal=0.6, epsilon=1.0),
        ]
    records.append(_record("fedavg", "fedavg", "mlp", 0, 0.89, 0.41, 107_201, None, 22,
                           1_800_000))
    out = comparison.payload(records, rounds=20, args={})
    verdicts = {v["label"]: v for v in out["verdicts"]}
    # 88.0 vs 88.5: −0.5 points, fairer than both → holds; 86.0: −2.5 points → does not.
    assert verdicts["oneshot ftp ε=1 100%"]["holds"] is True
    assert verdicts["oneshot ftp ε=1 100%"]["accuracy_points_vs_fedavg"] == pytest.approx(-0.5)
    assert verdicts["oneshot ftp ε=1 10%"]["lower_spd_than_both"] is True
    assert verdicts["oneshot ftp ε=1 10%"]["holds"] is False
    # At equal ε: 88.0 against DP-FedAvg's mean 87.5, balanced 0.62 against 0.555.
    equal = {e["label"]: e for e in out["equal_privacy"]}
    top = equal["oneshot ftp ε=1 100%"]
    assert top["dp_fedavg"] == "dp-fedavg ε=1" and top["K"] == 2
    assert top["accuracy_points"] == pytest.approx(0.5)
    assert top["balanced_accuracy_diff"] == pytest.approx(0.065)
    assert top["spd_diff"] == pytest.approx(-0.10)
    assert top["statement"] == "one-shot wins on balanced accuracy, |SPD|, accuracy"
    assert equal["oneshot ftp ε=1 10%"]["statement"] == (
        "one-shot wins on balanced accuracy, |SPD|; DP-FedAvg on accuracy")
    assert equal["oneshot ptf ε=1 100%"]["statement"] == (
        "DP-FedAvg: (nearly) a constant model, balanced accuracy below 0.52; one-shot wins on "
        "balanced accuracy, accuracy; DP-FedAvg on |SPD|")
    assert {s["K"] for s in out["summary"]} == {2, 10}
    assert "oneshot ftp ε=1 100%" not in {e["label"] for e in out["equal_privacy"] if e["K"] == 10}
    # d* = Ñ₂·q / (2R − 1) with Ñ₂ = 8,000 rows per client, q = 12, R = 20.
    cross = {c["label"]: c["d_star"] for c in out["crossover"]}
    assert cross["oneshot ftp ε=1 100%"] == pytest.approx(8000 * 12 / 39)
    assert cross["oneshot ftp ε=1 10%"] == pytest.approx(800 * 12 / 39)
    paths = [figures.plot_accuracy_vs_spd(out["summary"], records, tmp_path / "a.png"),
             figures.plot_bytes_vs_rounds(records, tmp_path / "b.png"),
             figures.plot_bytes_vs_model_size(records, out["crossover"], tmp_path / "c.png",
                                              rounds=20),
             figures.plot_utility_vs_clients(out["summary"], tmp_path / "d.png")]
    assert all(p.stat().st_size > 10_000 for p in paths)
    page = write_tables(tmp_path / "tables.md", comparison.tables(out),
                        argv=["compare", "--seeds", "0", "1"]).read_text()
    assert page == capsys.readouterr().out
    assert page.startswith("Produced by `fairsynth compare --seeds 0 1` on ")
    assert ("| 2 | oneshot ftp ε=1 100% | 0.1000 | 0.4000 | 0.3000 | -0.50 | holds |"
            in page)
    assert ("| 2 | oneshot ftp ε=1 10% | 0.1200 | 0.4000 | 0.3000 | -2.50 | does not hold |"
            in page)
    assert "| 2 | oneshot ftp ε=1 100% | dp-fedavg ε=1 | +0.50 | +0.065 | -0.1000 |" in page
    assert "| 2 | oneshot ftp ε=1 100% | 8000 | 12 | 20 | 2,462 |" in page


def test_compare_records_a_failed_run_and_goes_on(tmp_path, monkeypatch, capsys):
    from common.errors import ReplyError
    from server.result import FederationResult
    from simulations import compare

    calls = []

    def fake_simulate(config, *, clients, **_):
        calls.append((config.strategy, config.epsilon, clients))
        if config.strategy == "dp-fedavg":
            raise ReplyError("only 1 of 2 clients sent valid rows")
        return FederationResult(
            strategy=config.strategy, model="logistic", params=6, columns=7,
            metrics={"accuracy": 0.8, "balanced_accuracy": 0.7, "spd": 0.1, "eod": 0.05},
            rounds=1, exchanges=(Exchange(0, "query", clients, clients, 100, 1000, 80, 900, 0.1),),
            formula_numbers={"rows": 100}, covered=(("query", "up"),),
            runtime={"ray_address": None, "embedded": True})

    monkeypatch.setattr(compare, "simulate", fake_simulate)
    code = main(["compare", "--dataset", "synthetic", "--seeds", "0", "--fraction", "1.0",
                 "--epsilon", "1", "--order", "private-then-fair", "--mlp-seeds",
                 "--out", str(tmp_path)])
    assert code == 1
    assert [c[0] for c in calls] == ["oneshot", "dp-fedavg", "fedavg", "fairfed"]
    out = json.loads((tmp_path / "compare.json").read_text())
    assert [r["label"] for r in out["records"]] == ["oneshot ptf ε=1 100%", "fedavg", "fairfed"]
    assert out["failed"] == [{"K": 2, "label": "dp-fedavg ε=1", "model": "logistic", "seed": 0,
                              "error": "only 1 of 2 clients sent valid rows"}]
    assert "1 run(s) failed" in capsys.readouterr().out
    # several K: each run at its own K (and min-clients), and the figure against K
    calls.clear()
    assert main(["compare", "--dataset", "synthetic", "--clients", "2", "3", "--seeds", "0",
                 "--fraction", "1.0", "--epsilon", "1", "--order", "private-then-fair",
                 "--mlp-seeds", "--out", str(tmp_path / "k")]) == 1
    assert sorted({c[2] for c in calls}) == [2, 3]
    out = json.loads((tmp_path / "k" / "compare.json").read_text())
    assert sorted({(r["K"], r["label"]) for r in out["records"]})[:2] == [
        (2, "fairfed"), (2, "fedavg")]
    assert (tmp_path / "k" / "utility_vs_clients.png").stat().st_size > 10_000


@ray_test
def test_simulate_end_to_end_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--dataset", "synthetic", "--order", "real", "--clients", "3",
                 "--allow-orders", "real", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["strategy"] == "oneshot" and result["rounds"] == 1
    assert [(e["phase"], e["messages_down"]) for e in result["exchanges"]] == [
        ("query", 3), ("evaluate", 3)]
    assert 0.6 < result["metrics"]["accuracy"] < 0.9
    assert 1.0 < result["formula_check"]["ratio_bytes"] < 1.1
    # The policy the nodes applied is written and printed: real rows allowed, exact statistics
    # not, so the evaluation was private.
    assert result["client_policy"]["orders"] == ["real"]
    assert not result["client_policy"]["nonprivate"]
    assert all(0 < c["evaluation_epsilon"] <= 0.5 for c in result["clients"])
    row = f"| oneshot | logistic | {result['params']} | {100 * result['metrics']['accuracy']:.2f} |"
    assert row in capsys.readouterr().out


def test_a_script_result_names_the_checkout_and_its_arguments(tmp_path, capsys):
    """write_script_results records git's own short HEAD (with the uncommitted-changes mark
    exactly when git reports changes) and every argument as text."""
    import argparse
    import json
    import subprocess
    from pathlib import Path

    from simulations.results import write_script_results

    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    args = argparse.Namespace(seeds=[0, 1], out=tmp_path / "r.json", eta=0.1)
    write_script_results(args.out, {"records": [{"a": 1}]}, args)
    saved = json.loads(args.out.read_text())
    assert saved["commit"] == head + (" + uncommitted changes" if dirty else "")
    assert saved["records"] == [{"a": 1}]
    assert saved["args"] == {"seeds": "[0, 1]", "out": str(args.out), "eta": "0.1"}
    assert capsys.readouterr().out == f"wrote {args.out}\n"
