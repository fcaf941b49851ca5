"""What fair-then-private's repair sees: the gap it measures against the gap on the real rows.

The repair runs stage 1 on the DP generator's rows of the stage-1 rows, and so measures the
server model's gap on *those* rows. Stage 1's rows are not a sample of the real distribution:
their features were moved so that a model trained on them is fair on the real rows. When the
generator's copy of them carries the sensitive attribute differently from the real rows, the
repair lowers a gap that is not the real one. This script shows it, per release, on the
federation's own split (2 clients iid, the pooled real test rows):

* ``test |SPD|``: the server's model, trained on the union of the clients' rows, on the real
  test rows (what the federation reports);
* ``|SPD| on the DP rows``: the same model on the generator's rows, the gap the repair
  measures and lowers (its stage 1 reads those rows in place of the real ones).

Run::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.repair_check --dataset adult \\
        --generator aim --seeds 0 [--out results/repair_check.json]

Prints a table and writes JSON (every figure, the arguments and the commit).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from clients.pipeline import pipeline_config, run_pipeline  # noqa: E402
from common.datasets import load  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.partition import federated_split  # noqa: E402
from common.run_config import RunConfig  # noqa: E402
from common.schema import concat  # noqa: E402
from simulations.results import mean_over_seeds, write_script_results  # noqa: E402

RELEASES = {"stage-1 rows (syn_1)": "stage1", "generator's rows, no repair": "stage2",
            "repaired release": "rows"}


def run(dataset: str, sensitive: str, generator: str, seeds: list[int], epsilon: float,
        clients: int = 2) -> list[dict]:
    torch.set_num_threads(1)
    data = load(dataset, sensitive=sensitive or None)
    records = []
    for seed in seeds:
        splits = federated_split(data, clients=clients, seed=seed, test_fraction=0.2)
        test = concat([s.test for s in splits])
        config = pipeline_config(RunConfig(dataset=dataset, order="fair-then-private",
                                           repair="on", generator=generator, epsilon=epsilon,
                                           seed=seed))
        results = [run_pipeline(s.train, config, seed=seed) for s in splits]
        for name, key in RELEASES.items():
            parts = [r.rows if key == "rows" else r.intermediate[key] for r in results]
            model = fit_global_model(parts)
            dp_rows = concat([r.intermediate["stage2"] for r in results])
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
