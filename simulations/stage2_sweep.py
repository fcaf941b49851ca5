"""``fairsynth stage2-sweep``: the paper's stage-2 experiment (Figures 2/3, syn_2 curves).

For every seed, measure, ρ (or fairness target τ, ``--target``), order and ε: split the data
among the clients, run the client pipeline (:func:`clients.pipeline.run_pipeline_fractions`:
stage 1 and the DP generator are fit once, then sampled at every ``--fraction``), train the
server's logistic model on the union of the released rows and evaluate it on the pooled real
test rows. Records also hold the quality
of the released rows (KS, TVD and TSTR against the client's real rows; the generator's own
fidelity to its input) and the spent ε.

Curves: ``syn_1`` (the stage-1 rows, before any DP), ``syn_2(100%)``, ``syn_2(10%)`` (released
rows at those fractions) and the real-data baseline ``real`` (ρ = 0). At ρ = 0 no stage 1 runs,
so every order reduces to the DP generator on the real rows: those records have order
``private-only``.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import numpy as np

from clients.pipeline import pipeline_config
from clients.synthesizers import make_synthesizer
from common.errors import ConfigError
from common.global_model import fit_global_model
from common.jsonio import write_json
from common.quality import column_distances, quality_report
from common.run_config import ORDERED_SYNTHESIZERS, release_settings
from common.schema import TabularData, concat
from simulations import options
from simulations.figures import plot_rho_sweep
from simulations.results import Table, mean_over_seeds, write_tables

logger = logging.getLogger(__name__)

#: Orders a sweep can run (``real`` is its baseline record, always written).
SWEEP_ORDERS = ("fair-then-private", "private-then-fair", "private-only", "fair-only", "safes")
METRICS = ["accuracy", "spd", "eod", "cov", "corr", "cov_eo", "corr_eo", "dpr", "eor",
           "balanced_accuracy", "positive_rate", "seconds", "epsilon_spent",
           "ks_mean", "tvd_mean", "cell_tvd", "tstr_accuracy", "gen_ks_mean", "gen_tvd_mean"]
KEYS = ["order", "measure", "target", "rho", "epsilon", "fraction", "curve"]
#: The sweep's grid: its settings (outermost first) and their default values. The release
#: fractions are not a loop: every fraction is a sample of one fit.
GRID = {"seed": [0, 1, 2], "epsilon": [1.0], "measure": ["sp"],
        "target": [], "rho": [0, 10, 100, 1000, 10000],
        "order": ["fair-then-private", "private-then-fair"]}


def register(sub) -> None:
    parser = sub.add_parser("stage2-sweep",
                            help="stage 1 + DP stage 2 over a grid of ρ (paper Figs. 2/3)")
    options.add_clients(parser)
    options.add_settings(parser, ("data", "stage 1", "stage 2", "safes", "fair4free", "fadm"),
                         grid={**GRID, "stage2_fraction": [1.0, 0.1]}, include=("lam_server",))
    options.add_out(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    base, points = options.sweep_points(args, list(GRID))
    fractions = options.grid_values(args, "stage2_fraction")
    orders = options.grid_values(args, "order")
    wrong = sorted(set(orders) - set(SWEEP_ORDERS))
    if wrong:
        raise ConfigError(f"--order {' '.join(wrong)}: a sweep runs {list(SWEEP_ORDERS)} (the "
                          "real-data baseline is always recorded).")
    for fraction in fractions:
        base.replace(stage2_fraction=fraction)
    for point in points:
        pipeline_config(base.replace(**options.release_point(point))).stage2.check_options()
    if base.synthesizer not in ORDERED_SYNTHESIZERS:
        raise ConfigError(f"--synthesizer {base.synthesizer}: a sweep puts one of "
                          f"{list(ORDERED_SYNTHESIZERS)} in the orders' fair step; SAFES is a "
                          "release of its own: --order safes.")
    make_synthesizer(base)  # checks the synthesizer's options up front
    if "safes" in orders:
        make_synthesizer(base.replace(synthesizer="safes"))
    options.check_measures(base, points, args.clients)
    records = sweep(base, args, fractions)
    summary = mean_over_seeds(records, KEYS, METRICS)
    write_json(args.out / "results.json", {"records": records, "summary": summary,
                                           "args": options.args_record(args)})
    for path in plot(summary, args):
        print(f"wrote {path}")
    write_tables(args.out / "tables.md", tables(summary, base.synthesizer), argv=args.argv)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'tables.md'}")
    return 0


def _curve(fraction: float) -> str:
    return f"syn_2({100 * fraction:g}%)"


def _evaluate(parts: list[TabularData], test: TabularData, lam: float) -> dict:
    return fit_global_model(parts, lam=lam).evaluate(test)


def _quality(splits, released: list[TabularData], lam: float) -> dict:
    """Quality of each client's released rows against its real rows, averaged over clients;
    ``columns`` holds the per-column KS and TVD (mean over clients)."""
    reps = [quality_report(s.train, r, s.test, lam=lam) for s, r in zip(splits, released)]
    out: dict = {k: float(np.mean([r[k] for r in reps]))
                 for k in ("ks_mean", "tvd_mean", "cell_tvd", "tstr_accuracy")}
    out["columns"] = {name: {k: float(np.mean([r["columns"][name][k] for r in reps]))
                             for k in values}
                      for name, values in reps[0]["columns"].items()}
    return out


def _fidelity(inputs: list[TabularData], outputs: list[TabularData]) -> dict:
    """The DP generator's rows against its own input rows (mean KS and TVD over clients)."""
    ks, tv = [], []
    for a, b in zip(inputs, outputs):
        cols = column_distances(a, b)
        feats = [c.name for c in a.schema.features]
        ks.append(np.nanmean([cols[c].get("ks", np.nan) for c in feats]))
        tv.append(np.mean([cols[c]["tvd"] for c in feats]))
    return {"gen_ks_mean": float(np.mean(ks)), "gen_tvd_mean": float(np.mean(tv))}


def sweep(base, args, fractions: list[float]) -> list[dict]:
    records = []
    grid = {name: options.grid_values(args, name) for name in GRID if name not in options.KNOBS}
    for seed in grid["seed"]:
        config = base.replace(seed=seed)
        splits = options.client_splits(config, args.clients)
        test = concat([s.test for s in splits])
        trains = [s.train for s in splits]
        fixed = {"seed": seed, "epsilon": None, "epsilon_spent": None}
        for measure in grid["measure"]:
            records.append({**fixed, "order": "real", "measure": measure, "target": 0.0,
                            "rho": 0.0,
                            "fraction": 1.0, "curve": "real",
                            **_evaluate(trains, test, base.lam_server), "seconds": 0.0})
        for eps in grid["epsilon"]:
            for measure in grid["measure"]:
                knobs = (options.knob_points(args, ("target", "rho"))
                         if base.synthesizer == "bilevel" else [None])
                for knob in knobs:
                    if knob is None:  # Fair4Free or FADM: no stage-1 knob, every order once
                        knob, orders = {"rho": 0.0, "target": 0.0}, grid["order"]
                    elif not knob.get("target") and knob["rho"] == 0:
                        # private-only and safes have no stage 1: they run at ρ = 0 only
                        orders = ["private-only"] + [o for o in grid["order"] if o == "safes"]
                    else:
                        orders = [o for o in grid["order"] if o not in ("private-only", "safes")]
                    for order in orders:
                        point = config.replace(epsilon=eps, measure=measure, **knob,
                                               **release_settings(order))
                        records += _one(point, splits, test, fractions)
    return records


def _one(config, splits, test, fractions: list[float]) -> list[dict]:
    """Records of one (seed, measure, ρ, order, ε): syn_1 (if any) and syn_2 per fraction."""
    start = time.perf_counter()
    per_client = []
    for k, s in enumerate(splits):
        seed = config.seed + 1000 * k
        per_client.append(make_synthesizer(config.replace(seed=seed)).release(
            s.train, seed=seed, fractions=fractions))
    elapsed = (time.perf_counter() - start) / len(splits)
    order, lam = config.release, config.lam_server
    common = {"order": order, "synthesizer": config.synthesizer,
              "measure": config.measure, "target": float(config.target),
              "rho": 0.0 if config.target else float(config.rho),
              "seed": config.seed, "epsilon": config.epsilon}
    out = []
    if order == "fair-then-private":
        stage1 = [results[0].intermediate["stage1"] for results in per_client]
        out.append({**common, "fraction": 1.0, "curve": "syn_1", "epsilon": None,
                    "epsilon_spent": None, **_evaluate(stage1, test, lam),
                    **_quality(splits, stage1, lam),
                    "seconds": float(np.mean([r[0].seconds.get("stage1", 0.0)
                                              for r in per_client]))})
    for i, fraction in enumerate(fractions):
        released = [results[i].rows for results in per_client]
        if order == "fair-then-private":
            inputs = [r[i].intermediate["stage1"] for r in per_client]
            outputs = [r[i].intermediate.get("stage2", r[i].rows) for r in per_client]
        elif order in ("private-then-fair", "safes"):
            inputs = [s.train for s in splits]
            outputs = [r[i].intermediate["stage2"] for r in per_client]
        else:
            inputs, outputs = [s.train for s in splits], released
        record = {**common, "fraction": fraction, "curve": _curve(fraction),
                  "epsilon_spent": _spent([r[i].privacy.epsilon for r in per_client]),
                  **_evaluate(released, test, lam), **_quality(splits, released, lam),
                  **_fidelity(inputs, outputs), "seconds": elapsed}
        logger.info("%s", record)
        out.append(record)
    return out


def _spent(epsilons: list[float | None]) -> float | None:
    """The largest ε a client spent (None for a non-private order)."""
    return None if any(e is None for e in epsilons) else float(max(epsilons))


def plot(summary: list[dict], args) -> list[Path]:
    """One figure per (order, ε, measure) and knob: syn_1 and the syn_2 curves against ρ, or
    against the target τ."""
    paths = []
    baseline = [r for r in summary if r["curve"] == "real"]
    for order in options.grid_values(args, "order"):
        for eps in options.grid_values(args, "epsilon"):
            for measure, knob in itertools.product(options.grid_values(args, "measure"),
                                                   ("rho", "target")):
                rows = [r for r in summary if r["order"] == order and r["epsilon"] in (eps, None)
                        and r["measure"] == measure and r[knob] > 0]
                rows += [{**r, "order": order} for r in baseline if r["measure"] == measure]
                if not any(r["curve"].startswith("syn_2") for r in rows):
                    continue
                suffix = "" if knob == "rho" else "_target"
                path = args.out / f"stage2_{order}_{measure}_eps{eps:g}{suffix}.png"
                title = (f"{order}, ε = {eps:g}, {measure.upper()} "
                         f"{'penalty' if knob == 'rho' else 'target'} (mean ± sd over seeds)")
                paths.append(plot_rho_sweep(rows, measure=measure, path=path, curve_key="curve",
                                            title=title, knob=knob))
    return paths


def tables(summary: list[dict], synthesizer: str = "bilevel") -> list[Table]:
    """Paper-style tables: per order and measure, for each ρ and ε, accuracy % / |gap| /
    balanced accuracy of every curve (syn_1, syn_2 at each release fraction; mean over seeds).
    With another ``synthesizer`` than the bilevel one, its name stands for the point."""
    out = []
    with_ = "" if synthesizer == "bilevel" else f" with {synthesizer} as the fair step"
    for order in sorted({r["order"] for r in summary if r["order"] != "real"}):
        for measure in sorted({r["measure"] for r in summary}):
            gap = "spd" if measure == "sp" else "eod"
            rows = [r for r in summary if r["measure"] == measure
                    and r["order"] in (order, "private-only", "real")]
            curves = sorted({r["curve"] for r in rows}, key=_curve_order)
            cells = []
            for eps in sorted({r["epsilon"] for r in rows if r["epsilon"] is not None}):
                for knob in sorted({(r["target"], r["rho"]) for r in rows},
                                   key=lambda k: (k[0] > 0, -k[0], k[1])):
                    label = (options.point_label({"target": knob[0], "rho": knob[1]})
                             if synthesizer == "bilevel" else synthesizer)
                    line = [label, f"{eps:g}"]
                    for c in curves:
                        hit = [r for r in rows if (r["target"], r["rho"]) == knob
                               and r["curve"] == c and r["epsilon"] in (eps, None)]
                        hit.sort(key=lambda r: r["order"] != order)  # this table's own first
                        line.append(f"{100 * hit[0]['accuracy']:.2f} / {hit[0][gap]:.4f} / "
                                    f"{hit[0]['balanced_accuracy']:.3f}" if hit else "")
                    cells.append(line)
            out.append(Table(f"{order}{with_}, measure {measure}: accuracy % / |{gap.upper()}| / "
                             "balanced accuracy (mean over seeds)",
                             ["point", "ε", *curves], cells))
    return out


def _curve_order(curve: str) -> tuple:
    return (curve != "real", curve != "syn_1", -len(curve), curve)

