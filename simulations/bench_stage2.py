"""Benchmark: the stage-2 DP generator on one Law School client (8,319 rows, ε = 1).

``--generator aim`` times AIM instead of DP-CTGAN (``--dataset adult`` for an Adult client;
``--csv FILE --schema FILE`` for a client of a table of your own, such as a wide one).

Run as a script so that the thread settings apply before numpy and torch load::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.bench_stage2 [--threads 1 2]

Times ``DPCTGAN.fit`` (every DP statistic, the DP-SGD critic and the generator, the privacy
accounting) and ``sample(N)`` (with the calibration), on the client's real rows and on its
stage-1 rows (SP, ρ = 10), ``--repeats`` times each, and reports the minimum and all runs, the
import time of torch and Opacus, the process's peak resident memory and the load average (the
machine may be shared). Utility (first repeat, outside the timing): the server's logistic model
trained on the sampled rows against the same model trained on the generator's input, both on
the client's real test rows, and the rows' mean KS and TVD against the input. The 10 s target
is judged on the worst fit + sample at the first ``--threads`` value. Prints JSON and writes it
to ``--out``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

_start = time.perf_counter()
import opacus  # noqa: E402
import torch  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _start

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from clients.dp_generators import make_generator  # noqa: E402
from clients.stage1 import FairDistiller, Stage1Config  # noqa: E402
from common import datasets, partition  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.jsonio import write_json  # noqa: E402
from common.quality import quality_report  # noqa: E402

TARGET_SECONDS = 10.0


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_fit(data, *, threads: int, seed: int, test=None, generator: str = "dp-ctgan",
             noise_seed: int | None = None) -> dict:
    """Time one fit and one sample of ``len(data)`` rows; with ``test`` (the client's real test
    rows), also the utility of the sampled rows, outside the timed part. ``noise_seed`` seeds
    the DP noise (None: fresh), so that two commits time the same fits."""
    delta = 1.0 / (len(data) * np.sqrt(len(data)))
    options = {"threads": threads, "progress": False} if generator == "dp-ctgan" else {}
    if noise_seed is not None:
        options["noise_seed"] = noise_seed
    gen = make_generator(generator, epsilon=1.0, delta=delta, seed=seed, **options)
    start = time.perf_counter()
    gen.fit(data)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    rows = gen.sample(len(data))
    sample = time.perf_counter() - start
    spent = gen.privacy_spent()
    out = {"fit_seconds": fit, "sample_seconds": sample, "total_seconds": fit + sample,
           "rows_out": len(rows), "epsilon": spent["epsilon"],
           # DP-SGD's figures for dp-ctgan; AIM's rounds and first-round σ for aim
           "steps": spent.get("steps", spent.get("rounds")),
           "noise_multiplier": spent.get("noise_multiplier", spent.get("sigma_initial")),
           "sample_rate": spent.get("sample_rate")}
    if test is not None:
        out["utility"] = utility(data, rows, test)
    return out


def utility(inputs, rows, test) -> dict:
    """The server's logistic model trained on the generator's rows against the same model
    trained on its input rows, both evaluated on the client's real test rows; and the rows'
    fidelity to the input (mean KS, mean TVD)."""
    syn = fit_global_model([rows]).evaluate(test)
    ref = fit_global_model([inputs]).evaluate(test)
    quality = quality_report(inputs, rows, test)
    return {"accuracy": syn["accuracy"], "accuracy_input_rows": ref["accuracy"],
            "balanced_accuracy": syn["balanced_accuracy"],
            "balanced_accuracy_input_rows": ref["balanced_accuracy"],
            "spd": syn["spd"], "spd_input_rows": ref["spd"],
            "ks_mean": quality["ks_mean"], "tvd_mean": quality["tvd_mean"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="law_school", choices=datasets.fetchable(),
                        help="Law School (race), or Adult (sex) for a wider table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="torch threads to time (the target is judged on the first; the "
                             "generator's default is 1, as clients run side by side)")
    parser.add_argument("--generator", default="dp-ctgan", choices=("dp-ctgan", "aim"),
                        help="the DP generator to time (aim: --threads does not apply)")
    parser.add_argument("--csv", type=Path, help="a table of your own instead of --dataset")
    parser.add_argument("--schema", type=Path, help="its declared schema (required with --csv)")
    parser.add_argument("--noise-seed", type=int, default=None, metavar="N",
                        help="seed the DP noise (repeat r: N + r), so that two commits time "
                             "the same fits: AIM's rounds, and so its time, follow the noise "
                             "(default: fresh noise in every fit)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_stage2.json"))
    args = parser.parse_args(argv)
    if (args.csv is None) != (args.schema is None):
        parser.error("--csv and --schema go together: a declared schema names the columns")

    if args.csv is not None:
        data = datasets.load_csv(args.csv, schema=args.schema)
    else:
        data = datasets.load(args.dataset, root=args.data_dir)  # its default sensitive column
    client = partition.federated_split(data, clients=2, seed=0)[0]
    real = client.train
    stage1_rows = FairDistiller(Stage1Config(measure="sp", rho=10.0), progress=False).fit(real).data
    rss_before = _rss_mb()
    time_fit(real, threads=1, seed=99, generator=args.generator)  # warm-up (imports, allocator)
    runs = {}
    for name, rows in (("real_rows", real), ("stage1_rows", stage1_rows)):
        for threads in args.threads:
            results = [time_fit(rows, threads=threads, seed=seed,
                                test=client.test if seed == 0 else None,
                                generator=args.generator,
                                noise_seed=None if args.noise_seed is None
                                else args.noise_seed + seed)
                       for seed in range(args.repeats)]
            runs[f"{name}_threads{threads}"] = {
                "fit_seconds_min": min(r["fit_seconds"] for r in results),
                "total_seconds_min": min(r["total_seconds"] for r in results),
                "total_seconds_all": [r["total_seconds"] for r in results],
                "fit_seconds_all": [r["fit_seconds"] for r in results],
                "sample_seconds_all": [r["sample_seconds"] for r in results],
                "epsilon": max(r["epsilon"] for r in results),
                "steps": results[0]["steps"], "noise_multiplier": results[0]["noise_multiplier"],
                "sample_rate": results[0]["sample_rate"],
                "utility_seed0": results[0]["utility"],
            }
    judged = [v for k, v in runs.items() if k.endswith(f"_threads{args.threads[0]}")]
    best = min(v["total_seconds_min"] for v in judged)
    worst = max(max(v["total_seconds_all"]) for v in judged)
    result = {
        "benchmark": "stage2",
        "generator": args.generator,
        "dataset": str(args.csv) if args.csv is not None else args.dataset,
        "rows": len(real),
        "columns": len(real.schema.features) + 2,
        "epsilon": 1.0,
        "noise_seed": args.noise_seed,
        "import_torch_opacus_seconds": IMPORT_SECONDS,
        "runs": runs,
        "judged_threads": args.threads[0],
        "best_total_seconds": best,
        "worst_total_seconds": worst,
        "worst_with_imports_seconds": worst + IMPORT_SECONDS,
        "target_seconds": TARGET_SECONDS,
        "meets_target": worst <= TARGET_SECONDS,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_fits_mb": rss_before,
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
