"""``fairsynth stage1-sweep``: the paper's stage-1 experiment (Figures 2/3).

For every measure, ρ (or fairness target τ, ``--target``) and seed: split the data among the
clients, run stage 1 on each client, train the server's logistic model on the union of the
clients' stage-1 rows and evaluate it on the pooled test rows of all clients. ρ = 0 is the
real-data baseline (no stage 1). A target point also records the gap stage 1 reached on each
client's own rows (``local_gap``, the largest over the clients).
"""

from __future__ import annotations

import logging
import time

from clients.pipeline import pipeline_config
from clients.stage1 import FairDistiller
from common.global_model import fit_global_model
from common.jsonio import write_json
from common.schema import concat
from simulations import options
from simulations.figures import plot_rho_sweep
from simulations.results import Table, mean_over_seeds, write_tables

logger = logging.getLogger(__name__)

METRICS = ["accuracy", "spd", "eod", "cov", "corr", "cov_eo", "corr_eo", "dpr", "eor",
           "balanced_accuracy", "positive_rate", "seconds", "local_gap"]
#: The sweep's grid: its settings (outermost first) and their default values.
GRID = {"seed": [0, 1, 2], "measure": ["sp"], "target": [], "rho": [0, 10, 100, 1000, 10000]}


def register(sub) -> None:
    parser = sub.add_parser("stage1-sweep", help="stage 1 over a grid of ρ (paper Figs. 2/3) "
                                                 "or of fairness targets")
    options.add_clients(parser)
    options.add_settings(parser, ("data", "stage 1"), grid=GRID, include=("lam_server",),
                         skip=("synthesizer", "order"))
    options.add_out(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    base, points = options.sweep_points(args, list(GRID))
    options.check_measures(base, points, args.clients)
    records = sweep(base, points, args.clients)
    summary = mean_over_seeds(records, ["measure", "target", "rho"], METRICS)
    write_json(args.out / "results.json", {"records": records, "summary": summary,
                                           "args": options.args_record(args)})
    for measure in options.grid_values(args, "measure"):
        for knob in ("rho", "target"):
            if any(s[knob] > 0 and s["measure"] == measure for s in summary):
                suffix = "" if knob == "rho" else "_target"
                plot_rho_sweep(summary, measure=measure, knob=knob,
                               path=args.out / f"stage1_{measure}{suffix}.png")
    write_tables(args.out / "tables.md", tables(summary), argv=args.argv)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'tables.md'}")
    return 0


def sweep(base, points: list[dict], clients: int) -> list[dict]:
    """One record per grid point: the server's model on the union of the clients' stage-1
    rows (the real rows at ρ = 0), evaluated on the pooled test rows."""
    records, splits, seed = [], None, None
    for point in points:
        if point["seed"] != seed:
            seed = point["seed"]
            splits = options.client_splits(base.replace(seed=seed), clients)
            test = concat([s.test for s in splits])
        start = time.perf_counter()
        config = base.replace(**point)
        local_gap = None
        if not config.target and config.rho == 0:
            parts = [s.train for s in splits]
        else:
            results = [FairDistiller(pipeline_config(
                config.replace(seed=seed + 1000 * k)).stage1).fit(s.train)
                for k, s in enumerate(splits)]
            parts = [r.data for r in results]
            local_gap = max(abs(r.gap) for r in results)
        model = fit_global_model(parts, lam=base.lam_server)
        record = {**point, "target": config.target, "rho": 0.0 if config.target else config.rho,
                  "local_gap": local_gap, **model.evaluate(test),
                  "seconds": time.perf_counter() - start}
        logger.info("%s", record)
        records.append(record)
    return records


def tables(summary: list[dict]) -> list[Table]:
    """Per measure: the server's model at each ρ (mean over seeds); cov and corr are the
    measure's decision-boundary covariance and correlation on the real rows."""
    out = []
    for measure in sorted({r["measure"] for r in summary}):
        rows = []
        for r in sorted((r for r in summary if r["measure"] == measure),
                        key=lambda r: (bool(r["target"]), -r["target"], r["rho"])):
            cov, corr = (r["cov"], r["corr"]) if measure == "sp" else (r["cov_eo"], r["corr_eo"])
            real = not r["target"] and r["rho"] == 0
            rows.append([options.point_label(r) + (" (real)" if real else ""),
                         f"{100 * r['accuracy']:.2f}", f"{r['spd']:.4f}", f"{r['eod']:.4f}",
                         f"{r['balanced_accuracy']:.3f}", f"{r['positive_rate']:.3f}",
                         f"{cov:.4f}", f"{corr:.3f}", _maybe(r["local_gap"]),
                         f"{r['seconds']:.2f}"])
        out.append(Table(f"stage 1, measure {measure}, mean over {summary[0]['n_seeds']} seed(s)",
                         ["point", "acc %", "|SPD|", "|EOD|", "bal", "P(ŷ=1)", "cov", "corr",
                          "local |gap|", "s"],
                         rows))
    return out


def _maybe(value: float) -> str:
    """A cell for a value that only some points have (NaN: '-')."""
    return "-" if value != value else f"{value:.4f}"
