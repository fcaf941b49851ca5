"""AIM: :meth:`AIM.fit` spends the budget on noisy marginals; the rest is post-processing."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from clients.aim import graphical
from clients.aim.budget import Schedule, zcdp_epsilon
from clients.aim.config import AIMConfig
from clients.aim.discretise import Discretiser, S, Y
from common import privacy
from common.errors import ConfigError
from common.schema import Schema, TabularData

logger = logging.getLogger(__name__)

Clique = graphical.Clique


def workload(sizes: dict[str, int], config: AIMConfig) -> list[Clique]:
    """The workload's marginals in domain order (weight 1 each): see :class:`AIMConfig`."""
    order = list(sizes)
    if config.workload == "fair":
        marginals = [cl for r in (2, 3) for cl in itertools.combinations(order, r)
                     if S in cl or Y in cl]
    else:
        marginals = list(itertools.combinations(order, 3))
    marginals = [cl for cl in marginals if math.prod(sizes[a] for a in cl) <= config.max_cells]
    if len(marginals) > config.max_workload:
        keep = np.random.default_rng(config.seed).choice(len(marginals), config.max_workload,
                                                         replace=False)
        marginals = [marginals[i] for i in sorted(keep)]
    if not marginals:
        raise ConfigError(f"aim: no workload marginal has at most max_cells = {config.max_cells} "
                          "cells; raise max_cells or lower bins.")
    return marginals


def initial_marginals(sizes: dict[str, int], config: AIMConfig) -> list[Clique]:
    """The marginals measured before the first round, each with the same ``σ₀``.

    ``"one-way"`` (the paper): every attribute's 1-way marginal. ``"group-label"``: the
    ``(s, y)`` marginal and, for every feature ``a``, the 3-way ``(s, y, a)`` marginal (its
    1-way marginal where that has more than ``max_cells`` cells), so that the rows keep each
    feature's law within every (group, label) cell, what a group's rates under a linear model
    depend on first. One measurement fewer than ``"one-way"``; the 1-way marginals they imply
    carry more noise (the sum of 2·2 noisy cells each)."""
    order = list(sizes)
    if config.init == "one-way":
        return [(a,) for a in order]
    out = [graphical.canonical((S, Y), order)]
    for a in order:
        if a in (S, Y):
            continue
        cl = graphical.canonical((S, Y, a), order)
        out.append(cl if math.prod(sizes[b] for b in cl) <= config.max_cells else (a,))
    return out


def candidates(marginals: list[Clique]) -> dict[Clique, float]:
    """Every non-empty subset of a workload marginal, weighted by its overlap with the workload,
    ``w_r = Σ_{W} |r ∩ W|`` (the paper's ``compile_workload``)."""
    closure = {sub for cl in marginals for k in range(1, len(cl) + 1)
               for sub in itertools.combinations(cl, k)}
    return {r: float(sum(len(set(r) & set(w)) for w in marginals))
            for r in sorted(closure, key=lambda c: (len(c), c))}


def select(scores: dict[Clique, float], sensitivity: float, epsilon: float,
           noise: privacy.NoiseSource, eligible: Callable[[Clique], bool] | None = None
           ) -> Clique:
    """The exponential mechanism, ``P(r) ∝ exp(ε · q_r / (2Δ))`` over the candidates that are
    ``eligible`` (all by default), by the Gumbel-max trick: ``argmax_r ε q_r / (2Δ) + G_r``
    with independent standard Gumbel ``G_r``. The noisy scores are drawn for every candidate
    and read in decreasing order until an eligible one: the argmax over the eligible set, so
    the same distribution, for as many eligibility checks as it takes."""
    keys = list(scores)
    q = np.array([scores[k] for k in keys])
    noisy = 0.5 * epsilon / sensitivity * q + noise.gumbel(len(keys))
    if eligible is None:
        return keys[int(np.argmax(noisy))]
    for i in np.argsort(-noisy, kind="stable"):
        if eligible(keys[i]):
            return keys[i]
    raise ValueError("select: no candidate is eligible")


def total_estimate(measurements) -> float:
    """Minimum-variance unbiased row count from the noisy marginals (each one's sum, weighted
    by ``1/(σ² · cells)``), at least 1 (``mbi.estimation.minimum_variance_unbiased_total``)."""
    sums = np.array([float(np.sum(y)) for _, y, _ in measurements])
    var = np.array([s**2 * np.size(y) for _, y, s in measurements])
    return max(1.0, float(np.average(sums, weights=1.0 / var)))


class AIM:
    """AIM (McKenna, Mullins, Sheldon & Miklau, PVLDB 2022): :meth:`fit` spends ``(ε, δ)``;
    :meth:`sample` is post-processing. The method is in :mod:`clients.aim`.

    Attributes
    ----------
    config : AIMConfig
    domain : Discretiser or None
        The public domain (None until :meth:`fit`, as every attribute below).
    schedule : Schedule or None
        The budget, round by round.
    model : clients.aim.graphical.GraphicalModel or None
        The final model.
    measured : list of tuple
        The measured cliques, in order.
    seconds : float or None
    """

    def __init__(self, config: AIMConfig):
        self.config = config
        self.schema: Schema | None = None
        self.domain: Discretiser | None = None
        self.schedule: Schedule | None = None
        self.model: graphical.GraphicalModel | None = None
        self.measured: list[Clique] = []
        self.workload: list[Clique] = []
        self.seconds: float | None = None
        self.reserved: dict[str, float] = {}

    def fit(self, data: TabularData, *, reserve: Sequence[privacy.Mechanism] = ()) -> AIM:
        """Measure the 1-way marginals, then select and measure marginals until ``ρ`` is
        spent; the final model is estimated from every measurement. ``reserve``: unsampled
        Gaussian mechanisms that another step runs on the same rows; their zCDP cost comes off
        ``ρ`` first, so the reported (ε, δ) covers them too."""
        cfg = self.config
        privacy.check_budget(epsilon=cfg.epsilon, delta=cfg.delta, n=len(data))
        start = time.perf_counter()
        noise = privacy.NoiseSource(cfg.noise_seed, secure=cfg.secure_mode, purpose="aim fit")
        self.schema, self.domain = data.schema, Discretiser(data.schema, cfg.bins, cfg.binning)
        sizes = self.domain.sizes
        codes = self.domain.encode(data)
        self.workload = workload(sizes, cfg)
        pool = candidates(self.workload)
        self.reserved = {m.name: privacy.mechanism_zcdp(m) for m in reserve}
        rho = privacy.zcdp_rho(cfg.epsilon, cfg.delta) - sum(self.reserved.values())
        if rho <= 0:
            raise ConfigError(f"aim: the reserved mechanisms {sorted(self.reserved)} spend the "
                              "whole budget; lower their share.")
        first = initial_marginals(sizes, cfg)
        schedule = Schedule(rho, rounds=cfg.rounds or 16 * len(sizes), initial=len(first))
        answers: dict[Clique, np.ndarray] = {}

        def answer(cl: Clique) -> np.ndarray:  # the true marginal: private
            if cl not in answers:
                shape = [sizes[a] for a in cl]
                flat = np.ravel_multi_index([codes[a] for a in cl], shape)
                answers[cl] = np.bincount(flat, minlength=math.prod(shape)).astype(np.float64)
            return answers[cl]

        def measure(cl: Clique, sigma: float) -> None:
            x = answer(cl)
            measurements.append((cl, x + noise.normal(0.0, sigma, size=x.size), sigma))
            self.measured.append(cl)

        measurements: list = []
        self.measured = []
        for cl in first:
            measure(cl, schedule.sigma)
        model = graphical.estimate(sizes, measurements, total=total_estimate(measurements),
                                   iters=cfg.iters)
        last = False
        while not last:
            sigma, epsilon, last = schedule.next_round()
            cl = self._select(pool, model, answer, sigma, epsilon,
                              schedule.size_limit(cfg.max_model_size), noise)
            measure(cl, sigma)
            before = model.project(cl).ravel()
            model = graphical.estimate(sizes, measurements, total=total_estimate(measurements),
                                       iters=cfg.iters, warm_start=model)
            moved = float(np.abs(model.project(cl).ravel() - before).sum())
            annealed = moved <= math.sqrt(2.0 / math.pi) * sigma * before.size
            schedule.history[-1].update(clique=list(cl), annealed=annealed)
            if annealed:
                schedule.anneal()
            logger.debug("aim: round %d measured %s (σ = %.2f, ε = %.4f)%s",
                         len(schedule.history), cl, sigma, epsilon, ", annealed" * annealed)
        self.model = graphical.estimate(sizes, measurements, total=total_estimate(measurements),
                                        iters=cfg.final_iters, warm_start=model)
        self.schedule = schedule
        self.seconds = time.perf_counter() - start
        logger.info("aim: %d rows, %d rounds, ρ = %.5f (ε = %.3f, δ = %.2e), %d cliques in "
                    "%.2fs", len(data), len(schedule.history), schedule.used, cfg.epsilon,
                    cfg.delta, len(self.model.cliques), self.seconds)
        return self

    def _select(self, pool: dict[Clique, float], model: graphical.GraphicalModel, answer,
                sigma: float, epsilon: float, size_limit: float,
                noise: privacy.NoiseSource) -> Clique:
        """The worst-approximated candidate that keeps the model under ``size_limit`` MB:
        quality ``w_r (‖μ_r − μ̂_r‖₁ − \\sqrt{2/π} σ n_r)``, sensitivity ``max_r w_r``."""
        free = {sub for cl in model.cliques for k in range(1, len(cl) + 1)
                for sub in itertools.combinations(cl, k)}
        sizes = model.sizes
        fits: dict[Clique, bool] = {}

        def eligible(cl: Clique) -> bool:  # depends on the model (DP) only, never on the rows
            if cl not in fits:
                fits[cl] = cl in free or graphical.model_size(
                    sizes, [*model.cliques, cl]) <= size_limit
            return fits[cl]

        # Δ is the largest weight among the eligible candidates; the heaviest ones are checked
        # first, so that only as many junction trees are built as the answer needs.
        heaviest = sorted(pool, key=lambda cl: -abs(pool[cl]))
        sensitivity = next((abs(pool[cl]) for cl in heaviest if eligible(cl)), None)
        if sensitivity is None:  # never: every attribute is in a measured marginal, whose
            # subsets fit; kept so a broken invariant fails by name
            raise RuntimeError("aim: no candidate marginal fits under the model-size limit")
        scores = {}
        for cl, weight in pool.items():
            error = float(np.abs(answer(cl) - model.project(cl).ravel()).sum())
            bias = math.sqrt(2.0 / math.pi) * sigma * math.prod(sizes[a] for a in cl)
            scores[cl] = weight * (error - bias)
        return select(scores, sensitivity, epsilon, noise, eligible)

    # -- post-processing -------------------------------------------------------------------

    def _check_fitted(self, what: str) -> None:
        if self.model is None:
            raise ConfigError(f"aim: call fit() before {what}().")

    def sample(self, n: int, *, seed: int | None = None) -> TabularData:
        """``n`` rows drawn from the model; its ``(s, y)`` cells in exact proportions."""
        self._check_fitted("sample")
        if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1):
            raise ConfigError(f"aim: the number of rows to sample must be ≥ 1, got {n!r}.")
        rng = np.random.default_rng(self.config.seed + 1 if seed is None else seed)
        codes = graphical.sample(self.model, int(n), rng, first=(S, Y))
        return self.domain.decode(codes, rng)

    def noisy_rows(self) -> int:
        """The DP estimate of the input's row count: the model's total, the minimum-variance
        combination of the noisy marginals' sums (never the true count)."""
        self._check_fitted("noisy_rows")
        return max(1, int(round(self.model.total)))

    def privacy_spent(self) -> dict:
        """The budget spent and how.

        Keys: ``epsilon`` (the zCDP total converted at ``delta``), ``delta``, ``accountant``
        ("zcdp"), ``rho`` (the budget), ``rho_spent`` (initialisation plus rounds),
        ``reserved`` (the zCDP ρ of each reserved mechanism, outside ``rho``),
        ``target_epsilon``; ``rounds_planned`` (``T``), ``rounds`` (selections made),
        ``annealed`` (how many halved σ), ``initial`` (which, how many, σ and ρ of the initial
        measurements), ``sigma_initial`` / ``epsilon_em_initial`` (the first round's),
        ``per_round`` (each round's clique, σ, exponential-mechanism ε and ρ), and the
        workload's name and size.
        """
        self._check_fitted("privacy_spent")
        sch, cfg = self.schedule, self.config
        reserved = sum(self.reserved.values())
        epsilon = zcdp_epsilon(sch.used + reserved, cfg.delta)
        if sch.used <= sch.rho * (1 + 1e-12):  # within the budget: ρ → ε → ρ rounds by an ulp
            epsilon = min(epsilon, cfg.epsilon)
        return {
            "generator": "aim", "accountant": "zcdp",
            "epsilon": epsilon, "delta": cfg.delta,
            "target_epsilon": cfg.epsilon, "rho": sch.rho, "rho_spent": sch.used,
            "reserved": dict(self.reserved),
            "rounds_planned": sch.rounds, "rounds": len(sch.history),
            "annealed": sum(bool(h.get("annealed")) for h in sch.history),
            "initial": {"marginals": cfg.init, "count": sch.initial,
                        "sigma": sch.initial_sigma, "rho": sch.initial_rho},
            "sigma_initial": sch.initial_sigma, "epsilon_em_initial": sch.initial_epsilon,
            "per_round": [dict(h) for h in sch.history],
            "workload": cfg.workload, "workload_size": len(self.workload),
        }
