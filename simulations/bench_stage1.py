"""Benchmark: stage 1 on one Law School client, closed-form vs torch-autograd hypergradient;
and the run's default stage 1 against the paper's form on one Law School and one Adult client.

Run as a script so that the thread settings apply before numpy loads::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.bench_stage1 \
        [--out results/bench_stage1.json]

Both variants run the same loop (same inner Newton solver, same Adam, T = 300) and differ only
in how ``∇_r F`` is computed: the closed form of :mod:`clients.stage1`, or torch autograd
through the inner optimality condition (``v = H⁻¹∇f`` with ``H`` and ``∇f`` from autograd, then
``−∂/∂r[∇_w g(w*, r)ᵀ v]``, the standardisation included).

``configurations`` times :class:`clients.stage1.FairDistiller` as a run configures it: the
default (fairness target 0.02 on the smooth gap, λ_in cross-validated, the cross-validation
included in the time) and the paper's penalty form (ρ = 10 on the covariance, λ_in = 1), on the
first client of a 2-client split of Law School and of Adult (sex). Prints JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the target says

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clients import stage1  # noqa: E402
from clients.fairness_terms import make_relaxation  # noqa: E402
from clients.pipeline import pipeline_config  # noqa: E402
from common import datasets, partition  # noqa: E402
from common.jsonio import write_json  # noqa: E402
from common.run_config import RunConfig  # noqa: E402


class AutogradHypergradient:
    """``∇_r F`` by torch autograd for a :class:`clients.stage1.BilevelProblem`."""

    def __init__(self, problem: stage1.BilevelProblem):
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
        self.p = problem
        self.X_real, self.ybar_real = t(problem.X_real), t(problem.ybar_real)
        self.ybar_syn, self.c = t(problem.ybar_syn), t(problem.relaxation.c)
        self.rest = t(problem._Xs[:, problem.n_learn:])  # frozen columns, s̃, 1
        self.anchor = t(problem.anchor) if not np.isscalar(problem.anchor) else None

    def __call__(self, r: np.ndarray, w: np.ndarray) -> np.ndarray:
        p = self.p
        r_t = torch.tensor(np.ascontiguousarray(r), dtype=torch.float64, requires_grad=True)
        w_t = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        u = (r_t - r_t.mean(0)) / r_t.std(0, unbiased=False)
        Xs = torch.cat([u, self.rest], dim=1)

        def inner(wv):
            m = self.ybar_syn * (Xs @ wv)
            return torch.nn.functional.softplus(-m).mean() + 0.5 * p.lam_in * (wv @ wv)

        def outer(wv):
            m = self.ybar_real * (self.X_real @ wv)
            cov = self.c @ wv
            return torch.nn.functional.softplus(-m).mean() + p.rho * cov * cov

        grad_w = torch.autograd.grad(inner(w_t), w_t, create_graph=True)[0]
        H = torch.autograd.functional.hessian(inner, w_t.detach())
        grad_f = torch.autograd.grad(outer(w_t), w_t)[0]
        v = torch.linalg.solve(H, grad_f)
        total = -(grad_w @ v)
        if self.anchor is not None and p.lam_out:
            total = total + 0.5 * p.lam_out * ((u - self.anchor) ** 2).sum() / len(u)
        return torch.autograd.grad(total, r_t)[0].numpy()


def run_stage1(real, config: stage1.Stage1Config, *, autograd: bool) -> tuple[float, np.ndarray]:
    """Time one stage-1 fit; with ``autograd`` the hypergradient comes from torch."""
    if not autograd:
        start = time.perf_counter()
        result = stage1.FairDistiller(config, progress=False).fit(real)
        return time.perf_counter() - start, result.covariance

    original = stage1.BilevelProblem.hypergradient_standardised
    engines: dict[int, AutogradHypergradient] = {}

    def by_autograd(self, u, w, std):
        engine = engines.setdefault(id(self), AutogradHypergradient(self))
        r = u * std  # any r with standardise(r) = u gives the same gradient up to its mean
        f, _ = self.outer_value_grad(w)
        return engine(r, w) , f

    stage1.BilevelProblem.hypergradient_standardised = by_autograd
    try:
        start = time.perf_counter()
        result = stage1.FairDistiller(config, progress=False).fit(real)
        return time.perf_counter() - start, result.covariance
    finally:
        stage1.BilevelProblem.hypergradient_standardised = original


def agreement(real, config: stage1.Stage1Config) -> float:
    """Max relative difference of the two hypergradients at the initial point."""
    enc = stage1.Encoder.fit(real)
    z = enc.encode_z(real)
    X = stage1.design_matrix(z, real.s)
    relaxation = make_relaxation("covariance", X, real.s, real.y, config.measure)
    problem = stage1.BilevelProblem(X, real.y, z[:, :0], real.s, real.y, relaxation,
                                    rho=config.rho, lam_in=config.lam_in, lam_out=config.lam_out)
    rng = np.random.default_rng(0)
    r = np.asfortranarray(z + 0.05 * rng.normal(size=z.shape))
    u, std = stage1.standardise(r)
    problem.anchor = stage1.standardise(z)[0]
    w = problem.inner(u, tol=1e-12)
    closed, _ = problem.hypergradient_standardised(u, w, std)
    auto = AutogradHypergradient(problem)(r, w)
    return float(np.abs(closed - auto).max() / np.abs(auto).max())


def configurations(data_dir: str | None, repeats: int) -> list[dict]:
    """Seconds of the default stage 1 and of the paper's form, per dataset (best of
    ``repeats``)."""
    forms = {
        "default (target 0.02, smooth gap, λ_in by CV)":
            pipeline_config(RunConfig()).stage1,
        "paper (ρ = 10, covariance, λ_in = 1)":
            pipeline_config(RunConfig(target=0, relaxation="covariance", rho=10.0,
                                      lam_in=1.0)).stage1,
    }
    out = []
    for name, sensitive in (("law_school", None), ("adult", "sex")):
        data = datasets.load(name, root=data_dir, sensitive=sensitive)
        real = partition.federated_split(data, clients=2, seed=0)[0].train
        for form, config in forms.items():
            times, gap = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                result = stage1.FairDistiller(config, progress=False).fit(real)
                times.append(time.perf_counter() - start)
                gap = abs(result.gap)
            out.append({"dataset": name, "rows": len(real), "form": form, "seconds": min(times),
                        "seconds_all": times, "local_gap": gap})
            print(f"{name:10s} {len(real):6d} rows  {form:48s} {min(times):6.2f} s  "
                  f"local |gap| {gap:.4f}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/bench_stage1.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    data = datasets.load("law_school", root=args.data_dir)
    real = partition.federated_split(data, clients=2, seed=0)[0].train
    # λ_in fixed (not cross-validated), so that both variants and earlier runs solve the same
    # problem.
    config = stage1.Stage1Config(measure="sp", rho=100.0, iterations=300, lam_in=1.0)
    run_stage1(real, config, autograd=False)  # warm-up (imports, caches)
    closed = [run_stage1(real, config, autograd=False)[0] for _ in range(args.repeats)]
    auto = [run_stage1(real, config, autograd=True)[0] for _ in range(max(1, args.repeats - 1))]
    result = {
        "benchmark": "stage1",
        "rows": len(real),
        "iterations": config.iterations,
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "torch": torch.get_num_threads()},
        "closed_form_seconds": min(closed),
        "closed_form_seconds_all": closed,
        "autograd_seconds": min(auto),
        "autograd_seconds_all": auto,
        "speedup": min(auto) / min(closed),
        "target_seconds": 0.5,
        "meets_target": min(closed) <= 0.5,
        "hypergradient_max_rel_diff": agreement(real, config),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    result["configurations"] = configurations(args.data_dir, args.repeats)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
