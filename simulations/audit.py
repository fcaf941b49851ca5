"""``fairsynth audit``: membership inference against everything a client could release.

For one client of the federation (members: its training rows; non-members: its test rows;
the attacker's reference sample: another client's training rows, same population), release
rows by each source and attack them (``common.audit``):

* ``real`` — the training rows themselves (for scale: DCR finds every member);
* ``fair-only`` — the stage-1 rows;
* ``fair-then-private`` and ``private-then-fair`` at each ε of ``--epsilon``.

``--synthesizer fair4free`` or ``fadm`` puts Fair4Free or FADM in stage 1's place (their rows are
then ``fair-only``); ``--synthesizer safes`` attacks SAFES' release at each ε instead of the
orders.

Writes ``DIR/audit.json`` and ``DIR/tables.md`` (attack AUCs, mean over seeds) and prints the
table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clients.pipeline import pipeline_config
from clients.synthesizers import make_synthesizer
from common.audit import membership_audit
from common.errors import ConfigError
from common.jsonio import write_json
from simulations import options
from simulations.results import Table, mean_over_seeds, write_tables

logger = logging.getLogger(__name__)

#: The audit's grid: its settings and their default values.
GRID = {"seed": [0, 1, 2], "order": ["fair-then-private", "private-then-fair"],
        "epsilon": [0.5, 1.0, 4.0]}


def register(sub) -> None:
    parser = sub.add_parser("audit", help="membership-inference AUC of released rows")
    parser.add_argument("--clients", type=int, default=2,
                        help="number of clients K (≥ 2: client 0 is audited, client 1 supplies "
                             "the attacker's reference rows; default: 2)")
    options.add_settings(parser, ("data", "stage 1", "stage 2", "safes", "fair4free", "fadm"),
                         grid=GRID,
                         skip=("stage2_fraction",))
    parser.add_argument("--queries", type=int, default=1000,
                        help="members (= non-members) attacked (default: 1000)")
    options.add_out(parser, Path("runs/audit"))
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.clients < 2:
        raise ConfigError(f"--clients must be ≥ 2 for an audit, got {args.clients}: client 0 "
                          "is audited and client 1 supplies the attacker's reference rows.")
    if args.queries < 1:
        raise ConfigError(f"--queries must be ≥ 1, got {args.queries}.")
    base, points = options.sweep_points(args, list(GRID))
    for point in points:
        pipeline_config(base.replace(**point)).stage2.check_options()
        make_synthesizer(base.replace(**point))  # the synthesizer's options, before any work
    records = []
    for seed in options.grid_values(args, "seed"):
        config = base.replace(seed=seed)
        splits = options.client_splits(config, args.clients)
        target, reference = splits[0], splits[1].train
        orders = (["safes"] if base.synthesizer == "safes"
                  else options.grid_values(args, "order"))
        sources = [("real", None)] + ([] if base.synthesizer == "safes" else [("fair-only", None)])
        sources += [(order, eps) for order in orders
                    for eps in options.grid_values(args, "epsilon")]
        for order, eps in sources:
            point = config.replace(epsilon=eps if eps is not None else 1.0,
                                   **({} if order == "safes" else {"order": order}))
            if order == "real":
                point = point.replace(synthesizer="bilevel")
            released = make_synthesizer(point).release(target.train, seed=seed,
                                                       fractions=[1.0])[0].rows
            result = membership_audit(released, target.train, target.test, reference,
                                      max_queries=args.queries, seed=seed)
            record = {"source": order, "epsilon": eps, "seed": seed, **result.as_dict()}
            logger.info("%s", record)
            records.append(record)
    summary = mean_over_seeds(records, ["source", "epsilon"], ["dcr_auc", "density_auc"])
    write_json(args.out / "audit.json", {"records": records, "summary": summary,
                                         "args": options.args_record(args)})
    rows = [[r["source"], "-" if r["epsilon"] is None else f"{r['epsilon']:g}",
             f"{r['dcr_auc']:.3f}", f"{r['density_auc']:.3f}"] for r in summary]
    seeds = summary[0]["n_seeds"]
    table = Table(f"membership-inference AUC (0.5: no signal), synthesizer {base.synthesizer}, "
                  f"mean over {seeds} seed(s)",
                  ["released rows", "ε", "DCR AUC", "density AUC"], rows)
    write_tables(args.out / "tables.md", [table], argv=args.argv)
    print(f"wrote {args.out / 'audit.json'} and {args.out / 'tables.md'}")
    return 0
