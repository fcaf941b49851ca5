"""``fairsynth audit``: membership inference against everything a client could release.

For one client of the federation (members: its training rows; non-members: its test rows;
the attacker's reference sample: another client's training rows, same population), release
rows by each source and attack them (``common.audit``):

* ``real`` — the training rows themselves (for scale: DCR finds every member);
* ``fair-only`` — the stage-1 rows;
* ``fair-then-private`` and ``private-then-fair`` at each ε of ``--epsilon``.

Writes ``DIR/audit.json`` and prints a table of attack AUCs (mean over seeds).
"""

from __future__ import annotations

import logging
from pathlib import Path

from clients.pipeline import PipelineConfig, Stage2Config, run_pipeline
from common.audit import membership_audit
from simulations import options
from simulations.results import mean_over_seeds, write_json

logger = logging.getLogger(__name__)


def register(sub) -> None:
    parser = sub.add_parser("audit", help="membership-inference AUC of released rows")
    options.add_data_arguments(parser)
    options.add_stage1_arguments(parser, sweep=False)
    parser.add_argument("--epsilon", nargs="+", type=float, default=[0.5, 1.0, 4.0])
    parser.add_argument("--orders", nargs="+", default=["fair-then-private", "private-then-fair"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--queries", type=int, default=1000, help="members (= non-members) attacked")
    parser.add_argument("--out", type=Path, default=Path("runs/audit"))
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.clients < 2:
        args.clients = 2  # one client is audited, another supplies the attacker's reference
    records = []
    for seed in args.seeds:
        data = options.load_data(args, seed=seed)
        splits = options.split_clients(data, args, seed)
        target, reference = splits[0], splits[1].train
        stage1 = options.stage1_config(args, measure=args.measure, rho=args.rho, seed=seed)
        sources = [("real", None), ("fair-only", None)]
        sources += [(order, eps) for order in args.orders for eps in args.epsilon]
        for order, eps in sources:
            config = PipelineConfig(order=order, stage1=stage1,
                                    stage2=Stage2Config(epsilon=eps if eps is not None else 1.0))
            released = run_pipeline(target.train, config, seed=seed).rows
            result = membership_audit(released, target.train, target.test, reference,
                                      max_queries=args.queries, seed=seed)
            record = {"source": order, "epsilon": eps, "seed": seed, **result.as_dict()}
            logger.info("%s", record)
            records.append(record)
    summary = mean_over_seeds(records, ["source", "epsilon"], ["dcr_auc", "density_auc"])
    write_json(args.out / "audit.json", {"records": records, "summary": summary,
                                         "args": {k: str(v) for k, v in vars(args).items()
                                                  if k != "func"}})
    print(f"{'released rows':20} {'ε':>5} {'DCR AUC':>8} {'density AUC':>11}")
    for r in summary:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:g}"
        print(f"{r['source']:20} {eps:>5} {r['dcr_auc']:8.3f} {r['density_auc']:11.3f}")
    print(f"wrote {args.out / 'audit.json'}")
    return 0

