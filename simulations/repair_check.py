"""What fair-then-private's repairs see and do, per release, on the federation's own split.

The DP generator, fitted on the stage-1 rows, re-learns the group gap stage 1 removed. Two
repairs mend its rows (docs/method.md): ``relabel`` draws the labels from a DP logistic model of
the stage-1 rows; ``stage1`` runs stage 1 on the generator's rows, and so lowers the server
model's gap *on those rows*, which is the real gap only when the generator carries the sensitive
attribute as the real rows do. This script shows both, with a bound beside them: the labels
drawn from the *exact* logistic model of the stage-1 rows (not private; what ``relabel`` would
reach without its noise). Per release (2 clients iid, the pooled real test rows):

* ``test |SPD|``: the server's model, trained on the union of the clients' rows, on the real
  test rows (what the federation reports);
* ``|SPD| on the DP rows``: the same model on the generator's rows (with its own labels), the
  gap the ``stage1`` repair measures and lowers.

Run::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.repair_check --dataset adult \\
        --generator dp-ctgan --seeds 0 1 2 [--out results/repair_check.json]

Prints a table and writes JSON (every figure, the arguments and the commit).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clients.label_model import DPLabelModel  # noqa: E402
from clients.pipeline import pipeline_config, run_pipeline  # noqa: E402
from common.datasets import load  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.partition import federated_split  # noqa: E402
from common.run_config import RunConfig  # noqa: E402
from common.schema import concat  # noqa: E402
from simulations.results import mean_over_seeds, write_script_results  # noqa: E402

RELEASES = ("stage-1 rows (syn_1)", "generator's rows, no repair",
            "relabelled by the exact stage-1 model (not private)", "relabel repair",
            "stage1 repair")


def _exact_relabel(result, seed: int):
    """The generator's rows relabelled by the exact (non-private) logistic model of the
    stage-1 rows: ``relabel`` without its noise."""
    model = fit_global_model([result.intermediate["stage1"]])
    exact = DPLabelModel(model.encoder, model.w, lam=0.0, clip=math.inf)
    return exact.relabel(result.intermediate["stage2"], np.random.default_rng(seed))


def run(dataset: str, sensitive: str, generator: str, seeds: list[int], epsilon: float,
        clients: int = 2) -> list[dict]:
    torch.set_num_threads(1)
    data = load(dataset, sensitive=sensitive or None)
    records = []
    for seed in seeds:
        splits = federated_split(data, clients=clients, seed=seed, test_fraction=0.2)
        test = concat([s.test for s in splits])
        runs = {}
        for repair in ("relabel", "stage1"):
            config = pipeline_config(RunConfig(dataset=dataset, order="fair-then-private",
                                               repair=repair, generator=generator,
                                               epsilon=epsilon, seed=seed))
            runs[repair] = [run_pipeline(s.train, config, seed=seed) for s in splits]
        relabelled = runs["relabel"]
        parts = dict(zip(RELEASES, (
            [r.intermediate["stage1"] for r in relabelled],
            [r.intermediate["stage2"] for r in relabelled],
            [_exact_relabel(r, seed) for r in relabelled],
            [r.rows for r in relabelled],
            [r.rows for r in runs["stage1"]])))
        for name, rows in parts.items():
            model = fit_global_model(rows)
            source = runs["stage1" if name == "stage1 repair" else "relabel"]
            dp_rows = concat([r.intermediate["stage2"] for r in source])
            on_test, on_dp = model.evaluate(test), model.evaluate(dp_rows)
            record = {"release": name, "seed": seed, "accuracy": float(on_test["accuracy"]),
                      "spd": float(on_test["spd"]), "dp_rows_spd": float(on_dp["spd"])}
            print(record, flush=True)
            records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="adult")
    parser.add_argument("--sensitive", default="", help="its sensitive column (default: the "
                                                        "dataset's)")
    parser.add_argument("--generator", default="aim", choices=["aim", "dp-ctgan"])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("results/repair_check.json"))
    args = parser.parse_args()
    records = run(args.dataset, args.sensitive, args.generator, args.seeds, args.epsilon)
    summary = mean_over_seeds(records, ["release"], ["accuracy", "spd", "dp_rows_spd"])
    print("| rows | acc % | test \\|SPD\\| | \\|SPD\\| on the DP rows | seeds |")
    print("|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['release']} | {100 * s['accuracy']:.2f} | {s['spd']:.4f} | "
              f"{s['dp_rows_spd']:.4f} | {s['n_seeds']} |")
    write_script_results(args.out, {"records": records, "summary": summary}, args)


if __name__ == "__main__":
    main()
