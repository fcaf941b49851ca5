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
from common.run_config import PRIVATE_RELEASES
from simulations.results import Table, mean_over_seeds

logger = logging.getLogger(__name__)

METRICS = ["accuracy", "balanced_accuracy", "spd", "eod", "epsilon", "rounds", "bytes_up",
           "bytes_down", "bytes_total", "ratio_bytes", "ratio_payload", "ratio_all",
           "rows_released", "seconds"]
#: Accuracy points by which one-shot may trail FedAvg in the verdict.
ACCURACY_MARGIN = 1.5
#: A model whose balanced accuracy is within this of 0.5 is (nearly) constant.
CONSTANT_MARGIN = 0.02


#: Short names of the orders in run labels.
ORDER_SHORT = {"fair-then-private": "ftp", "private-then-fair": "ptf", "private-only": "po",
               "fair-only": "fo", "real": "real", "safes": "safes"}


def oneshot_label(order: str, epsilon: float, fraction: float) -> str:
    """``oneshot ftp ε=1 100%``: order (or synthesizer), budget (private releases only) and
    release size."""
    budget = f" ε={epsilon:g}" if order in PRIVATE_RELEASES else ""
    return f"oneshot {ORDER_SHORT[order]}{budget} {100 * fraction:g}%"


def plan(seeds: list[int], fractions: list[float], mlp_seeds: list[int] | None, *,
         epsilons: list[float] = (1.0,), orders: list[str] = ("fair-then-private",)
         ) -> list[dict]:
    """The runs, per seed: one-shot in each order at each ε (every release size for the first
    order and ε, the first size for the others), DP-FedAvg at each ε, FedAvg and FairFed.
    ``mlp_seeds`` (default: the first seed) also run FedAvg and one-shot (first order and ε)
    with the MLP."""
    mlp_seeds = seeds[:1] if mlp_seeds is None else mlp_seeds
    unknown = sorted(set(mlp_seeds) - set(seeds))
    if unknown:
        raise ConfigError(f"--mlp-seeds {unknown} are not among --seeds {seeds}.")
    if not (seeds and fractions and epsilons and orders):
        raise ConfigError("compare needs at least one seed, fraction, epsilon and order.")
    runs = []
    for seed in seeds:
        models = ["logistic", "mlp"] if seed in mlp_seeds else ["logistic"]
        for model in models:
            for i, epsilon in enumerate(epsilons):
                for j, order in enumerate(orders):
                    if model == "mlp" and (i or j):
                        continue
                    for fraction in fractions if not (i or j) else fractions[:1]:
                        runs.append({"label": oneshot_label(order, epsilon, fraction),
                                     "strategy": "oneshot", "model": model, "seed": seed,
                                     "fraction": fraction, "epsilon": epsilon, "order": order})
            if model == "logistic":
                for epsilon in epsilons:
                    runs.append({"label": f"dp-fedavg ε={epsilon:g}", "strategy": "dp-fedavg",
                                 "model": model, "fraction": None, "seed": seed,
                                 "epsilon": epsilon, "order": None})
            runs.append({"label": "fedavg", "strategy": "fedavg", "model": model,
                         "fraction": None, "seed": seed, "epsilon": None, "order": None})
            if model == "logistic":
                runs.append({"label": "fairfed", "strategy": "fairfed", "model": model,
                             "fraction": None, "seed": seed, "epsilon": None, "order": None})
    return runs


def spent_epsilon(result) -> float | None:
    """The ε a run spent on any one client's rows: DP-FedAvg's largest reported ε, one-shot's
    largest per-client release ε; None for a run without a guarantee."""
    if result.privacy:
        return float(result.privacy["epsilon"])
    values = [c["privacy"].get("epsilon") for c in result.clients if "privacy" in c]
    values = [float(v) for v in values if v is not None]
    return max(values) if values else None


def record(run: dict, result, wall: float) -> dict:
    """One row of compare.json."""
    t, f = result.traffic, result.formula_check()
    rows = [c["rows"] for c in result.clients if "rows" in c]
    return {
        **{k: run[k] for k in ("label", "strategy", "model", "seed", "order")},
        "stage2_fraction": run["fraction"],
        "epsilon_target": run["epsilon"], "epsilon": spent_epsilon(result),
        "K": run["K"],
        "accuracy": result.metrics["accuracy"],
        "balanced_accuracy": result.metrics["balanced_accuracy"], "spd": result.metrics["spd"],
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
    """compare.json: the records, their means over seeds, the verdicts (against the non-private
    baselines and at equal ε) and the crossovers; all per number of clients ``K``."""
    summary = mean_over_seeds(records, ["K", "label", "model", "strategy", "epsilon_target"],
                              METRICS)
    return {"records": records, "summary": summary, "verdicts": verdicts(summary),
            "equal_privacy": equal_privacy(summary),
            "crossover": crossover(records, rounds=rounds), "args": args}


def _row(summary: list[dict], strategy: str, K: int, epsilon: float | None = None
         ) -> dict | None:
    """The logistic row of ``strategy`` at ``K`` (and target ``epsilon``), if it ran."""
    return next((s for s in summary if s["strategy"] == strategy and s["K"] == K
                 and s["model"] == "logistic" and s["epsilon_target"] == epsilon), None)


def verdicts(summary: list[dict]) -> list[dict]:
    """One-shot (logistic) against the non-private baselines of the same ``K``: fairer, at
    accuracy within the margin, and not a (nearly) constant model?"""
    out = []
    for s in summary:
        fedavg, fairfed = _row(summary, "fedavg", s["K"]), _row(summary, "fairfed", s["K"])
        if s["strategy"] != "oneshot" or s["model"] != "logistic" or fedavg is None:
            continue
        fairer = s["spd"] < fedavg["spd"] and (fairfed is None or s["spd"] < fairfed["spd"])
        diff = 100 * (s["accuracy"] - fedavg["accuracy"])
        constant = s["balanced_accuracy"] < 0.5 + CONSTANT_MARGIN
        out.append({"K": s["K"], "label": s["label"], "spd": s["spd"],
                    "fedavg_spd": fedavg["spd"],
                    "fairfed_spd": fairfed["spd"] if fairfed else None,
                    "accuracy_points_vs_fedavg": diff,
                    "lower_spd_than_both": bool(fairer),
                    "accuracy_within_margin": bool(diff >= -ACCURACY_MARGIN),
                    "constant_model": bool(constant),
                    "holds": bool(fairer and diff >= -ACCURACY_MARGIN and not constant)})
    return out


def equal_privacy(summary: list[dict]) -> list[dict]:
    """Each one-shot release (logistic) against DP-FedAvg at the same ε and ``K``: the
    differences in accuracy, balanced accuracy and |SPD|, and a plain statement."""
    out = []
    for s in summary:
        if s["strategy"] != "oneshot" or s["model"] != "logistic":
            continue
        dp = _row(summary, "dp-fedavg", s["K"], s["epsilon_target"])
        if dp is None:
            continue
        d_acc = 100 * (s["accuracy"] - dp["accuracy"])
        d_bal = s["balanced_accuracy"] - dp["balanced_accuracy"]
        d_spd = s["spd"] - dp["spd"]
        better = [w for w, ok in (("balanced accuracy", d_bal > 0), ("|SPD|", d_spd < 0),
                                  ("accuracy", d_acc > 0)) if ok]
        worse = [w for w, ok in (("balanced accuracy", d_bal < 0), ("|SPD|", d_spd > 0),
                                 ("accuracy", d_acc < 0)) if ok]
        statement = ("one-shot wins on " + (", ".join(better) or "nothing")
                     + ("; DP-FedAvg on " + ", ".join(worse) if worse else ""))
        constant = [name for name, row in (("one-shot", s), ("DP-FedAvg", dp))
                    if row["balanced_accuracy"] < 0.5 + CONSTANT_MARGIN]
        if constant:  # a constant model's small |SPD| is no fairness
            statement = (f"{' and '.join(constant)}: (nearly) a constant model, balanced "
                         f"accuracy below {0.5 + CONSTANT_MARGIN:g}; " + statement)
        out.append({"K": s["K"], "label": s["label"], "epsilon": s["epsilon_target"],
                    "dp_fedavg": dp["label"], "accuracy_points": d_acc,
                    "balanced_accuracy_diff": d_bal, "spd_diff": d_spd,
                    "oneshot_epsilon_spent": s["epsilon"], "dp_fedavg_epsilon_spent": dp["epsilon"],
                    "statement": statement})
    return out


def crossover(records: list[dict], *, rounds: int) -> list[dict]:
    """``d*`` for each one-shot release size and ``K``, from the measured rows per client."""
    out = []
    for K, label in sorted({(r["K"], r["label"]) for r in records if r["strategy"] == "oneshot"}):
        rs = [r for r in records if r["label"] == label and r["K"] == K and r["rows_released"]]
        if not rs:
            continue
        per_client = float(np.mean([r["rows_released"] / r["clients"] for r in rs]))
        q = rs[0]["columns"]
        out.append({"K": K, "label": label, "rows_per_client": per_client, "columns": q,
                    "rounds": rounds,
                    "d_star": comm.crossover_params(rows_per_client=per_client, columns=q,
                                                    rounds=rounds)})
    return out


def _eps(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def tables(out: dict) -> list[Table]:
    """The comparison as tables: every run (mean ± sd over seeds), one-shot against DP-FedAvg
    at equal ε, the one-shot verdicts against FedAvg and FairFed, and the crossover d*."""
    runs = [[str(s["K"]), s["label"], s["model"],
             f"{100 * s['accuracy']:.2f} ± {100 * s['accuracy_std']:.2f}",
             f"{s['balanced_accuracy']:.3f}",
             f"{s['spd']:.4f} ± {s['spd_std']:.4f}", f"{s['eod']:.4f} ± {s['eod_std']:.4f}",
             _eps(s["epsilon"]), f"{s['rounds']:.0f}", f"{s['bytes_up']:,.0f}",
             f"{s['bytes_down']:,.0f}", f"{s['ratio_bytes']:.3f}", f"{s['seconds']:.1f}"]
            for s in sorted(out["summary"], key=lambda s: (s["K"], s["model"], s["label"]))]
    tables = [Table("runs (mean ± sd over seeds; ε: the most any client's rows spent, - for none)",
                    ["K", "run", "model", "acc %", "bal", "|SPD|", "|EOD|", "ε spent", "rounds",
                     "bytes up", "bytes down", "measured / formula", "s"], runs)]
    if out["equal_privacy"]:
        tables.append(Table(
            "one-shot against DP-FedAvg at the same ε (differences: one-shot minus DP-FedAvg)",
            ["K", "run", "against", "acc points", "bal", "|SPD|", "who wins where"],
            [[str(e["K"]), e["label"], e["dp_fedavg"], f"{e['accuracy_points']:+.2f}",
              f"{e['balanced_accuracy_diff']:+.3f}", f"{e['spd_diff']:+.4f}", e["statement"]]
             for e in out["equal_privacy"]]))
    if out["verdicts"]:
        tables.append(Table(
            f"one-shot against the non-private baselines (holds: |SPD| below FedAvg's and "
            f"FairFed's, accuracy at most {ACCURACY_MARGIN} points below FedAvg's, and balanced "
            f"accuracy at least {0.5 + CONSTANT_MARGIN:g})",
            ["K", "run", "|SPD|", "FedAvg |SPD|", "FairFed |SPD|", "acc points vs FedAvg",
             "verdict"],
            [[str(v["K"]), v["label"], f"{v['spd']:.4f}", f"{v['fedavg_spd']:.4f}",
              "-" if v["fairfed_spd"] is None else f"{v['fairfed_spd']:.4f}",
              f"{v['accuracy_points_vs_fedavg']:+.2f}",
              "holds" if v["holds"] else
              "does not hold (constant model)" if v["constant_model"] else "does not hold"]
             for v in out["verdicts"]]))
    if out["crossover"]:
        tables.append(Table(
            "crossover: one-shot moves fewer bytes than FedAvg above d* = Ñ₂·q/(2R−1) weights",
            ["K", "run", "Ñ₂ per client", "q", "R", "d*"],
            [[str(c["K"]), c["label"], f"{c['rows_per_client']:.0f}", str(c["columns"]),
              str(c["rounds"]), f"{c['d_star']:,.0f}"] for c in out["crossover"]]))
    return tables


def warn_missing_formula(out: dict) -> None:
    if any(math.isnan(s["ratio_bytes"]) for s in out["summary"]):
        logger.warning("a run had no formula bytes to compare")
