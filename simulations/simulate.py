"""``fairsynth simulate``: one federation run on Flower's in-process simulation engine.

Default: the paper's setup — Law School, 2 clients, race, SP, ρ = 10, fair-then-private,
ε = 1, one shot — under the clients' default privacy policy (private orders, ε ≤ 1, a private
evaluation; ``--allow-*`` flags change it). Prints a results table and the policy, and writes
``DIR/results.json`` (``--out``, default ``runs/simulate``). The runtime is
:mod:`simulations.engine`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clients.faults import parse_assignments
from common.jsonio import write_json
from simulations import options, report
from simulations.engine import quiet_flower, simulate


def register(sub) -> None:
    parser = sub.add_parser("simulate", help="one federation run on Flower's simulation engine")
    options.add_clients(parser)
    options.add_settings(parser)
    options.add_policy(parser)
    options.add_fault(parser)
    options.add_out(parser, Path("runs/simulate"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_flower(args.verbose)
    options.check_clients(args.clients)
    config = options.run_config(args, **options.min_clients_default(args))
    faults = parse_assignments(args.inject_fault)
    rules = options.policy(args)
    start = time.perf_counter()
    result = simulate(config, clients=args.clients, verbose=args.verbose > 0, faults=faults,
                      policy=rules, address=args.ray_address)
    wall = time.perf_counter() - start
    payload = {**result.as_dict(), "clients_requested": args.clients, "wall_seconds": wall,
               "client_policy": rules.describe()}
    path = write_json(args.out / "results.json", payload)
    report.print_result(result, wall=wall)
    print(f"the clients' privacy policy: {rules.describe()}")
    where = result.runtime
    print("ran on " + ("the embedded Ray engine" if where["embedded"] else
                       f"the Ray cluster at {where['ray_address']} ({where['nodes']} node(s), "
                       f"{where['resources'].get('CPU', 0):g} CPUs)"))
    print(f"wrote {path}")
    return 0
