"""The comparison of one-shot against FedAvg and FairFed (``fairsynth compare``): which runs,
what each run records, and what the records say — the verdicts (is one-shot fairer than both
baselines at an accuracy within :data:`ACCURACY_MARGIN` points of FedAvg?) and the
communication crossover ``d* = Ñ₂·q / (2R − 1)`` (METHOD.md)."""

from __future__ import annotations

import logging
import math

import numpy as np

from common import comm
from common.errors import ConfigError
from simulations.results import Table, mean_over_seeds

logger = logging.getLogger(__name__)

METRICS = ["accuracy", "spd", "eod", "rounds", "bytes_up", "bytes_down", "bytes_total",
           "ratio_bytes", "ratio_payload", "ratio_all", "rows_released", "seconds"]
#: Accuracy points by which one-shot may trail FedAvg in the verdict.
ACCURACY_MARGIN = 1.5


def plan(seeds: list[int], fractions: list[float], mlp_seeds: list[int] | None) -> list[dict]:
    """The runs: (label, strategy, model, stage-2 fraction, seed). ``mlp_seeds`` (default: the
    first seed) also run FedAvg and one-shot with the MLP."""
    mlp_seeds = seeds[:1] if mlp_seeds is None else mlp_seeds
    unknown = sorted(set(mlp_seeds) - set(seeds))
    if unknown:
        raise ConfigError(f"--mlp-seeds {unknown} are not among --seeds {seeds}.")
    runs = []
    for seed in seeds:
        models = ["logistic", "mlp"] if seed in mlp_seeds else ["logistic"]
        for model in models:
            for fraction in fractions:
                runs.append({"label": f"oneshot-{100 * fraction:g}%", "strategy": "oneshot",
                             "model": model, "fraction": fraction, "seed": seed})
            runs.append({"label": "fedavg", "strategy": "fedavg", "model": model,
                         "fraction": None, "seed": seed})
            if model == "logistic":
                runs.append({"label": "fairfed", "strategy": "fairfed", "model": model,
                             "fraction": None, "seed": seed})
    return runs


def record(run: dict, result, wall: float) -> dict:
    """One row of compare.json."""
    t, f = result.traffic, result.formula_check()
    rows = [c["rows"] for c in result.clients if "rows" in c]
    return {
        **{k: run[k] for k in ("label", "strategy", "model", "seed")},
        "stage2_fraction": run["fraction"],
        "accuracy": result.metrics["accuracy"], "spd": result.metrics["spd"],
        "eod": result.metrics["eod"], "rounds": result.rounds,
        "bytes_up": t["bytes_up"], "bytes_down": t["bytes_down"],
        "bytes_total": t["bytes_up"] + t["bytes_down"],
        "payload_up": t["payload_up"], "payload_down": t["payload_down"],
        "formula_bytes": f["formula_bytes"], "ratio_bytes": f["ratio_bytes"],
        "ratio_payload": f["ratio_payload"], "ratio_all": f["ratio_all"],
        "params": result.params,
        "columns": result.columns, "clients": result.exchanges[0].messages_down,
        "rows_released": int(sum(rows)) if rows else None,
        "seconds": wall,
        "exchanges": [e.as_dict() for e in result.exchanges],
        "rejected": list(result.rejected),
        "privacy": [c.get("privacy") for c in result.clients if "privacy" in c],
    }


def payload(records: list[dict], *, rounds: int, args: dict) -> dict:
    """compare.json: the records, their means over seeds, the verdicts and the crossovers."""
    summary = mean_over_seeds(records, ["label", "model"], METRICS)
    return {"records": records, "summary": summary, "verdicts": verdicts(summary),
            "crossover": crossover(records, rounds=rounds), "args": args}


def _row(summary: list[dict], label: str, model: str = "logistic") -> dict | None:
    return next((s for s in summary if s["label"] == label and s["model"] == model), None)


def verdicts(summary: list[dict]) -> list[dict]:
    """One-shot (logistic) against both baselines: fairer, at accuracy within the margin?"""
    fedavg, fairfed = _row(summary, "fedavg"), _row(summary, "fairfed")
    out = []
    for s in summary:
        if not s["label"].startswith("oneshot") or s["model"] != "logistic" or fedavg is None:
            continue
        fairer = s["spd"] < fedavg["spd"] and (fairfed is None or s["spd"] < fairfed["spd"])
        diff = 100 * (s["accuracy"] - fedavg["accuracy"])
        out.append({"label": s["label"], "spd": s["spd"], "fedavg_spd": fedavg["spd"],
                    "fairfed_spd": fairfed["spd"] if fairfed else None,
                    "accuracy_points_vs_fedavg": diff,
                    "lower_spd_than_both": bool(fairer),
                    "accuracy_within_margin": bool(diff >= -ACCURACY_MARGIN),
                    "holds": bool(fairer and diff >= -ACCURACY_MARGIN)})
    return out


def crossover(records: list[dict], *, rounds: int) -> list[dict]:
    """``d*`` for each one-shot release size, from the measured rows per client."""
    out = []
    for label in sorted({r["label"] for r in records if r["strategy"] == "oneshot"}):
        rs = [r for r in records if r["label"] == label and r["rows_released"]]
        if not rs:
            continue
        per_client = float(np.mean([r["rows_released"] / r["clients"] for r in rs]))
        q = rs[0]["columns"]
        out.append({"label": label, "rows_per_client": per_client, "columns": q,
                    "rounds": rounds,
                    "d_star": comm.crossover_params(rows_per_client=per_client, columns=q,
                                                    rounds=rounds)})
    return out


def tables(out: dict) -> list[Table]:
    """The comparison as tables: every run (mean ± sd over seeds), the one-shot verdicts
    against FedAvg and FairFed, and the crossover model size d*."""
    runs = [[s["label"], s["model"], f"{100 * s['accuracy']:.2f} ± {100 * s['accuracy_std']:.2f}",
             f"{s['spd']:.4f} ± {s['spd_std']:.4f}", f"{s['eod']:.4f} ± {s['eod_std']:.4f}",
             f"{s['rounds']:.0f}", f"{s['bytes_up']:,.0f}", f"{s['bytes_down']:,.0f}",
             f"{s['ratio_bytes']:.3f}", f"{s['seconds']:.1f}"]
            for s in sorted(out["summary"], key=lambda s: (s["model"], s["label"]))]
    tables = [Table("runs (mean ± sd over seeds)",
                    ["run", "model", "acc %", "|SPD|", "|EOD|", "rounds", "bytes up",
                     "bytes down", "measured / formula", "s"], runs)]
    if out["verdicts"]:
        tables.append(Table(
            f"one-shot against the baselines (holds: |SPD| below FedAvg's and FairFed's, and "
            f"accuracy at most {ACCURACY_MARGIN} points below FedAvg's)",
            ["run", "|SPD|", "FedAvg |SPD|", "FairFed |SPD|", "acc points vs FedAvg", "verdict"],
            [[v["label"], f"{v['spd']:.4f}", f"{v['fedavg_spd']:.4f}",
              "-" if v["fairfed_spd"] is None else f"{v['fairfed_spd']:.4f}",
              f"{v['accuracy_points_vs_fedavg']:+.2f}",
              "holds" if v["holds"] else "does not hold"] for v in out["verdicts"]]))
    if out["crossover"]:
        tables.append(Table(
            "crossover: one-shot moves fewer bytes than FedAvg above d* = Ñ₂·q/(2R−1) weights",
            ["run", "Ñ₂ per client", "q", "R", "d*"],
            [[c["label"], f"{c['rows_per_client']:.0f}", str(c["columns"]), str(c["rounds"]),
              f"{c['d_star']:,.0f}"] for c in out["crossover"]]))
    return tables


def warn_missing_formula(out: dict) -> None:
    if any(math.isnan(s["ratio_bytes"]) for s in out["summary"]):
        logger.warning("a run had no formula bytes to compare")
