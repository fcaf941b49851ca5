"""Command-line options shared by the experiment commands, and their conversion to configs."""

from __future__ import annotations

import argparse

from clients.stage1 import MEASURES, Stage1Config
from common import datasets, partition
from common.errors import ConfigError
from common.schema import TabularData


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="law_school", choices=datasets.DATASETS,
                   help="named dataset (default: law_school); ignored with --csv")
    g.add_argument("--data-dir", help=f"data folder (default: ${datasets.DATA_ENV}, else the user cache)")
    g.add_argument("--sensitive", help="sensitive column (Adult: sex or race; required with --csv)")
    g.add_argument("--csv", help="your own CSV file instead of --dataset")
    g.add_argument("--privileged", help="with --csv: the privileged value of --sensitive")
    g.add_argument("--label", help="with --csv: the label column")
    g.add_argument("--favourable", help="with --csv: the favourable label value")
    g.add_argument("--drop", nargs="*", default=[], help="with --csv: columns to ignore")
    g.add_argument("--categorical", nargs="*", default=[], help="with --csv: categorical columns")
    g = parser.add_argument_group("federation")
    g.add_argument("--clients", type=int, default=2, help="number of clients K (default: 2)")
    g.add_argument("--partition", default="iid", choices=partition.PARTITIONS,
                   help="how rows are split among clients (default: iid)")
    g.add_argument("--alpha", type=float, default=0.5, help="Dirichlet α over the sensitive attribute")
    g.add_argument("--partition-column", help="with --partition column: the natural column")


def load_data(args: argparse.Namespace, seed: int = 0) -> TabularData:
    if args.csv:
        # --privileged/--favourable may be left out: the loader then names the column's values.
        needed = {"--sensitive": args.sensitive, "--label": args.label}
        missing = [k for k, v in needed.items() if v is None]
        if missing:
            raise ConfigError(f"--csv needs {' '.join(missing)} as well (the sensitive and the "
                              "label column).")
        return datasets.load_csv(args.csv, sensitive=args.sensitive, privileged=args.privileged,
                                 label=args.label, favourable=args.favourable, drop=args.drop,
                                 categorical=args.categorical)
    return datasets.load(args.dataset, root=args.data_dir, sensitive=args.sensitive, seed=seed)


def split_clients(data: TabularData, args: argparse.Namespace, seed: int
                  ) -> list[partition.ClientSplit]:
    return partition.federated_split(data, clients=args.clients, method=args.partition, seed=seed,
                                     alpha=args.alpha, column=args.partition_column)


def add_stage1_arguments(parser: argparse.ArgumentParser, *, sweep: bool) -> None:
    g = parser.add_argument_group("stage 1 (fair distillation)")
    g.add_argument("--measure", nargs="+" if sweep else None, default=["sp"] if sweep else "sp",
                   choices=MEASURES, help="fairness measure(s): sp or eo")
    if sweep:
        g.add_argument("--rho", nargs="+", type=float, default=[0, 10, 100, 1000, 10000],
                       help="penalty weights; 0 is the real-data baseline (no stage 1)")
        g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    else:
        g.add_argument("--rho", type=float, default=10.0, help="penalty weight ρ")
        g.add_argument("--seed", type=int, default=0)
    d = Stage1Config()
    g.add_argument("--tolerance", type=float, default=None, help="τ: penalise only |Cov| > τ")
    g.add_argument("--lam-in", type=float, default=d.lam_in, help="inner L2 strength")
    g.add_argument("--lam-out", type=float, default=d.lam_out, help="outer regulariser on z̃")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam step size")
    g.add_argument("--iterations", type=int, default=d.iterations, help="outer iterations T")
    g.add_argument("--stage1-fraction", type=float, default=d.fraction, help="Ñ/N")
    g.add_argument("--solver", default=d.solver, choices=["newton", "lbfgs"], help="inner solver")
    g.add_argument("--anchor", default=d.anchor, choices=["init", "zero"],
                   help="centre of the outer regulariser: the initial rows (default) or 0 "
                        "(METHOD.md's ‖z̃‖²)")
    g.add_argument("--no-keep-moments", dest="keep_moments", action="store_false",
                   help="let stage 1 change each column's mean and spread (METHOD.md's form)")
    g.add_argument("--lam-server", type=float, default=1.0, help="server model's L2 strength")


def stage1_config(args: argparse.Namespace, *, measure: str, rho: float, seed: int) -> Stage1Config:
    return Stage1Config(measure=measure, rho=rho, tolerance=args.tolerance, lam_in=args.lam_in,
                        lam_out=args.lam_out, lr=args.lr, iterations=args.iterations,
                        fraction=args.stage1_fraction, solver=args.solver,
                        anchor=args.anchor, keep_moments=args.keep_moments, seed=seed)
