"""``fairsynth compare``: the one-shot scheme against FedAvg and FairFed, same data, same seeds.

For every seed, on the same partitions: one-shot with ``Ñ₂ = 100 %`` and ``10 %`` of each
client's rows, FedAvg and FairFed (all with the logistic model), and, for the seeds in
``--mlp-seeds``, FedAvg and one-shot with the MLP, whose size puts it on the other side of the
communication crossover. Each run is a separate in-process Flower simulation
(:func:`simulations.engine.simulate`) whose every message is counted.

Writes ``DIR/compare.json`` (per strategy, model and seed: accuracy, spd, eod, rounds,
bytes_up, bytes_down, seconds and the per-exchange traffic; means over seeds; the verdicts
below) after every run, and three figures: ``accuracy_vs_spd.png``, ``bytes_vs_rounds.png``
and ``bytes_vs_model_size.png`` (measured bytes against METHOD.md's formula, the crossover
``d* = Ñ₂·q / (2R − 1)`` marked).
The runs and what they record are :mod:`simulations.comparison`; the figures are
:mod:`simulations.figures`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.jsonio import write_json
from simulations import comparison, figures, options
from simulations.engine import preflight, quiet_flower, simulate
from simulations.results import write_tables

#: The comparison's grid (seeds and one-shot release sizes) and their default values.
GRID = {"seed": [0, 1, 2], "stage2_fraction": [1.0, 0.1]}


def register(sub) -> None:
    parser = sub.add_parser("compare",
                            help="one-shot vs FedAvg vs FairFed: accuracy, fairness, bytes")
    options.add_clients(parser)
    options.add_settings(parser, grid=GRID, skip=("strategy", "model", "results_path"))
    parser.add_argument("--mlp-seeds", nargs="*", type=int, default=None,
                        help="seeds that also run FedAvg and one-shot with the MLP (default: "
                             "the first seed; none to skip)")
    options.add_policy(parser, nonprivate=True)
    options.add_out(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_flower(args.verbose)
    options.check_clients(args.clients)
    seeds = options.grid_values(args, "seed")
    fractions = options.grid_values(args, "stage2_fraction")
    runs = comparison.plan(seeds, fractions, args.mlp_seeds)
    base = options.run_config(args, **options.min_clients_default(args))
    configs = [base.replace(seed=r["seed"], strategy=r["strategy"], model=r["model"],
                            **({} if r["fraction"] is None else
                               {"stage2_fraction": r["fraction"]})) for r in runs]
    rules = options.policy(args)
    for config in configs:  # every run within the clients' policy, before any starts
        preflight(config, args.clients, rules)
    print(f"the clients' privacy policy: {rules.describe()}")
    records: list[dict] = []
    record_of_args = options.args_record(args)
    path = Path(args.out) / "compare.json"
    for i, (r, config) in enumerate(zip(runs, configs), 1):
        print(f"[{i}/{len(runs)}] {r['label']} ({r['model']}), seed {r['seed']} ...", flush=True)
        start = time.perf_counter()
        result = simulate(config, clients=args.clients, verbose=args.verbose > 0, policy=rules)
        records.append(comparison.record(r, result, time.perf_counter() - start))
        write_json(path, comparison.payload(records, rounds=base.rounds, args=record_of_args))
    out = comparison.payload(records, rounds=base.rounds, args=record_of_args)
    write_json(path, out)
    figures.plot_accuracy_vs_spd(out["summary"], records, args.out / "accuracy_vs_spd.png")
    figures.plot_bytes_vs_rounds(records, args.out / "bytes_vs_rounds.png")
    figures.plot_bytes_vs_model_size(records, out["crossover"],
                                     args.out / "bytes_vs_model_size.png", rounds=base.rounds)
    comparison.warn_missing_formula(out)
    tables = write_tables(args.out / "tables.md", comparison.tables(out), argv=args.argv)
    print(f"wrote {path}, {tables} and 3 figures")
    return 0
