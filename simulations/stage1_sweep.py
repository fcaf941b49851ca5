"""``fairsynth stage1-sweep``: the paper's stage-1 experiment (Figures 2/3).

For every measure, ρ and seed: split the data among the clients, run stage 1 on each client,
train the server's logistic model on the union of the clients' stage-1 rows and evaluate it on
the pooled test rows of all clients. ρ = 0 is the real-data baseline (no stage 1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from clients.stage1 import FairDistiller
from common.global_model import fit_global_model
from common.schema import concat
from simulations import options
from simulations.figures import plot_rho_sweep
from simulations.results import mean_over_seeds, write_json

logger = logging.getLogger(__name__)

METRICS = ["accuracy", "spd", "eod", "cov", "corr", "cov_eo", "corr_eo", "dpr", "eor",
           "balanced_accuracy",
           "positive_rate", "seconds"]


def register(sub) -> None:
    parser = sub.add_parser("stage1-sweep", help="stage 1 over a grid of ρ (paper Figs. 2/3)")
    options.add_data_arguments(parser)
    options.add_stage1_arguments(parser, sweep=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    check(args)
    records = sweep(args)
    summary = mean_over_seeds(records, ["measure", "rho"], METRICS)
    write_json(args.out / "results.json", {"records": records, "summary": summary,
                                           "args": _args_dict(args)})
    for measure in args.measure:
        plot_rho_sweep(summary, measure=measure, path=args.out / f"stage1_{measure}.png")
    _print_table(summary)
    print(f"wrote {args.out / 'results.json'}")
    return 0


def check(args) -> None:
    """Every setting of the sweep, validated before any work (nothing is half-written)."""
    for measure in args.measure:
        for rho in args.rho:
            options.stage1_config(args, measure=measure, rho=rho, seed=0)
    data = options.load_data(args, seed=args.seeds[0])
    for measure in args.measure:
        data.check_measure(measure)
    options.split_clients(data, args, args.seeds[0])


def sweep(args) -> list[dict]:
    records = []
    for seed in args.seeds:
        data = options.load_data(args, seed=seed)
        splits = options.split_clients(data, args, seed)
        test = concat([s.test for s in splits])
        for measure in args.measure:
            for rho in args.rho:
                start = time.perf_counter()
                if rho == 0:
                    parts = [s.train for s in splits]
                else:
                    parts = [
                        FairDistiller(options.stage1_config(args, measure=measure, rho=rho,
                                                            seed=seed + 1000 * k)).fit(s.train).data
                        for k, s in enumerate(splits)
                    ]
                model = fit_global_model(parts, lam=args.lam_server)
                record = {"measure": measure, "rho": rho, "seed": seed, **model.evaluate(test),
                          "seconds": time.perf_counter() - start}
                logger.info("%s", record)
                records.append(record)
    return records


def _args_dict(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}


def _print_table(summary: list[dict]) -> None:
    print(f"{'measure':7} {'rho':>8} {'acc %':>7} {'|SPD|':>7} {'|EOD|':>7} {'cov':>8} "
          f"{'corr':>7} {'bal acc':>7} {'P(ŷ=1)':>7} {'s':>6}   (cov, corr: the measure's)")
    for r in sorted(summary, key=lambda r: (r["measure"], r["rho"])):
        cov, corr = (r["cov"], r["corr"]) if r["measure"] == "sp" else (r["cov_eo"], r["corr_eo"])
        print(f"{r['measure']:7} {r['rho']:8g} {100 * r['accuracy']:7.2f} {r['spd']:7.4f} "
              f"{r['eod']:7.4f} {cov:8.4f} {corr:7.3f} {r['balanced_accuracy']:7.3f} "
              f"{r['positive_rate']:7.3f} {r['seconds']:6.2f}")
