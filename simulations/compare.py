"""``fairsynth compare``: the one-shot scheme against FedAvg and FairFed, same data, same seeds.

For every seed, on the same partitions: one-shot with ``Ñ₂ = 100 %`` and ``10 %`` of each
client's rows, FedAvg and FairFed (all with the logistic model), and, for the seeds in
``--mlp-seeds``, FedAvg and one-shot with the MLP, whose size puts it on the other side of the
communication crossover. Each run is a separate in-process Flower simulation
(:func:`simulations.simulate.simulate`) whose every message is counted.

Writes ``DIR/compare.json`` (per strategy, model and seed: accuracy, spd, eod, rounds,
bytes_up, bytes_down, seconds and the per-exchange traffic; means over seeds; the verdicts
below) after every run, and three figures: ``accuracy_vs_spd.png``, ``bytes_vs_rounds.png``
and ``bytes_vs_model_size.png`` (measured bytes against METHOD.md's formula, the crossover
``d* = Ñ₂·q / (2R − 1)`` marked).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common import comm  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from simulations import options  # noqa: E402
from simulations.results import mean_over_seeds, write_json  # noqa: E402
from simulations.simulate import (  # noqa: E402
    add_federation_arguments,
    add_stage2_arguments,
    quiet_flower,
    run_config_from_args,
    simulate,
)

logger = logging.getLogger(__name__)

METRICS = ["accuracy", "spd", "eod", "rounds", "bytes_up", "bytes_down", "bytes_total",
           "ratio_bytes", "ratio_payload", "ratio_all", "rows_released", "seconds"]
#: Accuracy points by which one-shot may trail FedAvg in the verdict.
ACCURACY_MARGIN = 1.5


def register(sub) -> None:
    parser = sub.add_parser("compare", conflict_handler="resolve",
                            help="one-shot vs FedAvg vs FairFed: accuracy, fairness, bytes")
    options.add_data_arguments(parser)
    options.add_stage1_arguments(parser, sweep=False)
    add_stage2_arguments(parser)
    add_federation_arguments(parser, strategy=False)
    g = parser.add_argument_group("comparison")
    # Replaces the single --seed of the stage-1 options (conflict_handler="resolve").
    g.add_argument("--seeds", "--seed", dest="seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds (partition, pipeline, training); default 0 1 2")
    g.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.1],
                   help="one-shot release sizes Ñ₂/N (default 1.0 0.1)")
    g.add_argument("--mlp-seeds", nargs="*", type=int, default=None,
                   help="seeds that also run FedAvg and one-shot with the MLP (default: the "
                        "first seed; none to skip)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def plan(args: argparse.Namespace) -> list[dict]:
    """The runs: (label, strategy, model, stage-2 fraction, seed)."""
    mlp_seeds = args.seeds[:1] if args.mlp_seeds is None else args.mlp_seeds
    unknown = sorted(set(mlp_seeds) - set(args.seeds))
    if unknown:
        raise ConfigError(f"--mlp-seeds {unknown} are not among --seeds {args.seeds}.")
    runs = []
    for seed in args.seeds:
        models = ["logistic", "mlp"] if seed in mlp_seeds else ["logistic"]
        for model in models:
            for fraction in args.fractions:
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


def run(args: argparse.Namespace) -> int:
    quiet_flower(args.verbose)
    runs = plan(args)
    records: list[dict] = []
    base = run_config_from_args(argparse.Namespace(**{**vars(args), "seed": args.seeds[0]}))
    args.out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(runs, 1):
        mapping = {**base, "seed": r["seed"], "strategy": r["strategy"], "model": r["model"]}
        if r["fraction"] is not None:
            mapping["stage2-fraction"] = r["fraction"]
        print(f"[{i}/{len(runs)}] {r['label']} ({r['model']}), seed {r['seed']} ...", flush=True)
        start = time.perf_counter()
        result = simulate(mapping, clients=args.clients, verbose=args.verbose > 0)
        records.append(record(r, result, time.perf_counter() - start))
        write_json(args.out / "compare.json", payload(records, args))
    out = payload(records, args)
    write_json(args.out / "compare.json", out)
    plot_accuracy_vs_spd(out["summary"], records, args.out / "accuracy_vs_spd.png")
    plot_bytes_vs_rounds(records, args.out / "bytes_vs_rounds.png")
    plot_bytes_vs_model_size(records, out["crossover"], args.out / "bytes_vs_model_size.png",
                             rounds=args.rounds)
    print_summary(out)
    print(f"wrote {args.out / 'compare.json'} and 3 figures")
    return 0


def payload(records: list[dict], args: argparse.Namespace) -> dict:
    summary = mean_over_seeds(records, ["label", "model"], METRICS)
    return {"records": records, "summary": summary, "verdicts": verdicts(summary),
            "crossover": crossover(records, rounds=args.rounds),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "func"}}


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


# --------------------------------------------------------------------------- figures


def _style(label: str) -> dict:
    colours = {"fedavg": "tab:blue", "fairfed": "tab:orange"}
    if label.startswith("oneshot"):
        return {"color": "tab:green" if label.endswith("100%") else "tab:olive", "marker": "o"}
    return {"color": colours.get(label, "tab:gray"), "marker": "s"}


def plot_accuracy_vs_spd(summary: list[dict], records: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for s in summary:
        if s["model"] != "logistic":
            continue
        st = _style(s["label"])
        pts = [r for r in records if r["label"] == s["label"] and r["model"] == "logistic"]
        ax.scatter([r["spd"] for r in pts], [100 * r["accuracy"] for r in pts], alpha=0.3,
                   s=14, color=st["color"])
        ax.errorbar(s["spd"], 100 * s["accuracy"], xerr=s["spd_std"],
                    yerr=100 * s["accuracy_std"], label=s["label"], capsize=3, **st)
    ax.set_xlabel("|SPD| (pooled test rows)")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy against |SPD| (mean ± sd; seeds faint)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bytes_vs_rounds(records: list[dict], path: Path) -> Path:
    """Cumulative bytes (both directions) after each exchange, first seed of each run."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    seen = set()
    for r in records:
        key = (r["label"], r["model"])
        if key in seen:
            continue
        seen.add(key)
        total = np.cumsum([e["bytes_up"] + e["bytes_down"] for e in r["exchanges"]])
        st = _style(r["label"])
        ax.plot(np.arange(1, len(total) + 1), total,
                linestyle="-" if r["model"] == "logistic" else "--", color=st["color"],
                marker=st["marker"], markersize=4,
                label=f"{r['label']} ({r['model']}, d = {r['params']:,})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_yscale("log")
    ax.set_xlabel("exchange (server ↔ all clients), final evaluation included")
    ax.set_ylabel("cumulative bytes, both directions")
    ax.set_title("measured traffic against rounds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bytes_vs_model_size(records: list[dict], crossovers: list[dict], path: Path, *,
                             rounds: int) -> Path:
    """Measured total bytes against ``d``, the formula lines and the crossover ``d*``."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    d_values = np.logspace(0.5, 6.5, 200)
    fedavg = [r for r in records if r["strategy"] == "fedavg"]
    if fedavg:
        k = fedavg[0]["clients"]
        ax.plot(d_values, comm.BYTES_PER_NUMBER * comm.fedavg_numbers(clients=k, rounds=rounds,
                                                                      params=1) * d_values,
                color="tab:blue", linewidth=1, label=f"formula FedAvg: 8·2KRd (R = {rounds})")
    for c in crossovers:
        rs = [r for r in records if r["label"] == c["label"]]
        k = rs[0]["clients"]
        line = comm.BYTES_PER_NUMBER * k * (c["rows_per_client"] * c["columns"] + d_values)
        st = _style(c["label"])
        ax.plot(d_values, line, color=st["color"], linewidth=1,
                label=f"formula {c['label']}: 8·K(Ñ₂q + d)")
        ax.axvline(c["d_star"], color=st["color"], linestyle=":", linewidth=1)
        ax.text(c["d_star"] * 1.1, 0.03, f"d* ≈ {c['d_star']:,.0f} ({c['label']})",
                transform=ax.get_xaxis_transform(), rotation=90, fontsize=7,
                color=st["color"], va="bottom")
    for label in sorted({r["label"] for r in records}):
        pts = [r for r in records if r["label"] == label]
        st = _style(label)
        ax.scatter([r["params"] for r in pts], [r["bytes_total"] for r in pts], zorder=3,
                   edgecolor="k", linewidth=0.5, label=f"measured {label}", **st)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model parameters d (logistic: 12, MLP: 107,201 on Law School)")
    ax.set_ylabel("total bytes, both directions")
    ax.set_title("bytes against model size: one-shot wins right of d*")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_summary(out: dict) -> None:
    print(f"{'run':14} {'model':8} {'acc %':>13} {'|SPD|':>15} {'|EOD|':>15} {'rounds':>6} "
          f"{'bytes up':>12} {'bytes down':>12} {'meas/formula':>12} {'s':>6}")
    for s in sorted(out["summary"], key=lambda s: (s["model"], s["label"])):
        print(f"{s['label']:14} {s['model']:8} {100 * s['accuracy']:6.2f}±"
              f"{100 * s['accuracy_std']:5.2f} {s['spd']:7.4f}±{s['spd_std']:6.4f} {s['eod']:7.4f}±{s['eod_std']:6.4f}"
              f" {s['rounds']:6.0f} {s['bytes_up']:12,.0f} {s['bytes_down']:12,.0f}"
              f" {s['ratio_bytes']:12.3f} {s['seconds']:6.1f}")
    for v in out["verdicts"]:
        fairfed = "" if v["fairfed_spd"] is None else f" and FairFed {v['fairfed_spd']:.4f}"
        print(f"{v['label']}: |SPD| {v['spd']:.4f} vs FedAvg {v['fedavg_spd']:.4f}{fairfed};"
              f" accuracy {v['accuracy_points_vs_fedavg']:+.2f} points vs FedAvg ->"
              f" {'holds' if v['holds'] else 'does not hold'}")
    for c in out["crossover"]:
        print(f"crossover {c['label']}: d* = Ñ₂·q/(2R−1) = {c['rows_per_client']:.0f}·"
              f"{c['columns']}/{2 * c['rounds'] - 1} ≈ {c['d_star']:,.0f} parameters")
    if any(math.isnan(s["ratio_bytes"]) for s in out["summary"]):
        logger.warning("a run had no formula bytes to compare")
