"""``fairsynth compare``: the one-shot scheme against DP-FedAvg at the same ε, and against
FedAvg and FairFed; same data, same seeds, for each number of clients ``K``.

For every ``K`` in ``--clients`` and every seed, on the same partitions: one-shot in each
private order (``--order``, default fair-then-private and private-then-fair) at each ε
(``--epsilon``, default 1 and 4), with ``Ñ₂ = 100 %`` and, for the first order and ε, ``10 %``
of each client's rows; DP-FedAvg (sample-level DP-SGD, :mod:`clients.dp_sgd`) at each ε; the
non-private FedAvg and FairFed (all with the logistic model); and, for the seeds in
``--mlp-seeds``, FedAvg and one-shot with the MLP, whose size puts it on the other side of the
communication crossover. Each run is a separate in-process Flower simulation
(:func:`simulations.engine.simulate`) whose every message is counted.

Writes ``DIR/compare.json`` (per K, run, model and seed: accuracy, balanced accuracy, spd,
eod, the ε spent, rounds, bytes_up, bytes_down, seconds and the per-exchange traffic; means
over seeds; the verdicts below) after every run, and four figures: ``accuracy_vs_spd.png``,
``bytes_vs_rounds.png``, ``bytes_vs_model_size.png`` (measured bytes against METHOD.md's
formula, the crossover ``d* = Ñ₂·q / (2R − 1)`` marked) and, with more than one ``K``,
``utility_vs_clients.png`` (balanced accuracy and |SPD| against K). A run that fails is
listed under ``failed`` with its reason and the others go on; the command then exits with 1.
The runs and what they record are :mod:`simulations.comparison`; the figures are
:mod:`simulations.figures`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.errors import ConfigError, FairsynthError
from common.jsonio import write_json
from common.run_config import ORDERS, release_settings
from simulations import comparison, figures, options
from simulations.engine import preflight, quiet_flower, simulate
from simulations.results import write_tables

#: The comparison's grid (seeds, one-shot release sizes, budgets and orders) and its defaults.
GRID = {"seed": [0, 1, 2], "stage2_fraction": [1.0, 0.1], "epsilon": [1.0, 4.0],
        "order": ["fair-then-private", "private-then-fair"]}


def register(sub) -> None:
    parser = sub.add_parser("compare",
                            help="one-shot vs DP-FedAvg at equal ε, FedAvg and FairFed: "
                                 "accuracy, fairness, privacy, bytes")
    options.add_clients(parser, many=True)
    options.add_settings(parser, grid=GRID, skip=("strategy", "model", "results_path"))
    parser.add_argument("--mlp-seeds", nargs="*", type=int, default=None,
                        help="seeds that also run FedAvg and one-shot with the MLP (default: "
                             "the first seed; none to skip)")
    options.add_policy(parser, nonprivate=True, max_epsilon=max(GRID["epsilon"]))
    options.add_out(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_flower(args.verbose)
    for k in args.clients:
        options.check_clients(k)
    seeds = options.grid_values(args, "seed")
    # another synthesizer than the bilevel pipeline has no orders: its name stands for them
    synthesizer = getattr(args, "synthesizer", "bilevel")
    orders = (options.grid_values(args, "order") if synthesizer == "bilevel"
              else [synthesizer])
    first_order = next((o for o in orders if o in ORDERS), ORDERS[0])
    runs = [{**r, "K": k} for k in args.clients for r in comparison.plan(
        seeds, options.grid_values(args, "stage2_fraction"), args.mlp_seeds,
        epsilons=options.grid_values(args, "epsilon"), orders=orders)]
    base = options.run_config(args, epsilon=options.grid_values(args, "epsilon")[0],
                              order=first_order)
    min_clients = "min_clients" not in vars(args)  # default: every client must reply
    configs = [base.replace(seed=r["seed"], strategy=r["strategy"], model=r["model"],
                            **({"min_clients": r["K"]} if min_clients else {}),
                            **{k: v for k, v in (("stage2_fraction", r["fraction"]),
                                                 ("epsilon", r["epsilon"]))
                                  if v is not None},
                            **(release_settings(r["order"]) if r["order"] else {}))
               for r in runs]
    rules = options.policy(args)
    for r, config in zip(runs, configs):  # every run within the clients' policy, before any
        preflight(config, r["K"], rules)
    print(f"the clients' privacy policy: {rules.describe()}")
    records: list[dict] = []
    failed: list[dict] = []
    record_of_args = options.args_record(args)
    path = Path(args.out) / "compare.json"
    for i, (r, config) in enumerate(zip(runs, configs), 1):
        print(f"[{i}/{len(runs)}] K = {r['K']}: {r['label']} ({r['model']}), seed {r['seed']} "
              "...", flush=True)
        start = time.perf_counter()
        try:
            result = simulate(config, clients=r["K"], verbose=args.verbose > 0, policy=rules,
                              address=args.ray_address)
        except FairsynthError as exc:  # one failed run does not cost the others
            print(f"  failed: {exc}", flush=True)
            failed.append({**{k: r[k] for k in ("K", "label", "model", "seed")},
                           "error": str(exc)})
        else:
            records.append({**comparison.record(r, result, time.perf_counter() - start),
                            "runtime": result.runtime})
        write_json(path, {**comparison.payload(records, rounds=base.rounds,
                                               args=record_of_args), "failed": failed})
    if not records:
        raise ConfigError(f"every run failed; the first: {failed[0]['error']}")
    out = {**comparison.payload(records, rounds=base.rounds, args=record_of_args),
           "failed": failed}
    write_json(path, out)
    figures.plot_accuracy_vs_spd(out["summary"], records, args.out / "accuracy_vs_spd.png")
    figures.plot_bytes_vs_rounds(records, args.out / "bytes_vs_rounds.png")
    figures.plot_bytes_vs_model_size(records, out["crossover"],
                                     args.out / "bytes_vs_model_size.png", rounds=base.rounds)
    count = 3
    if len(args.clients) > 1:
        figures.plot_utility_vs_clients(out["summary"], args.out / "utility_vs_clients.png")
        count += 1
    comparison.warn_missing_formula(out)
    tables = write_tables(args.out / "tables.md", comparison.tables(out), argv=args.argv)
    print(f"wrote {path}, {tables} and {count} figures")
    if failed:
        print(f"{len(failed)} run(s) failed (in compare.json, 'failed'): "
              + "; ".join(f"K = {f['K']} {f['label']} seed {f['seed']}" for f in failed))
        return 1
    return 0
