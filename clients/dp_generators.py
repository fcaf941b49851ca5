"""Registry of stage-2 DP generators, keyed by the run-config string (like Opacus' accountants).

Every generator follows one small protocol::

    gen = make_generator(name, epsilon=..., delta=..., seed=..., **options)
    gen.fit(data)               # spends (ε, δ) on data; fit(data, reserve=[mechanism, ...])
                                #   leaves room for mechanisms another step runs on data
    rows = gen.sample(n)        # post-processing: same schema, (s, y) cells in noisy proportions
                                #   (seed=... for an independent draw)
    gen.noisy_rows()            # the DP estimate of the input's row count (sizes releases)
    gen.privacy_spent()         # dict: epsilon, delta, accountant, and the mechanism's own
                                #   figures (dp-ctgan: noise_multiplier, sample_rate, steps,
                                #   budget_split, ...; aim: rho, rounds, per_round σ and ε, ...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from common.errors import ConfigError
from common.privacy import Mechanism, NoiseSource, zcdp_rho
from common.schema import TabularData


class DPGenerator(Protocol):
    def fit(self, data: TabularData, *, reserve: Sequence[Mechanism] = ()) -> DPGenerator: ...

    def sample(self, n: int, *, seed: int | None = None) -> TabularData: ...

    def noisy_rows(self) -> int: ...

    def privacy_spent(self) -> dict: ...


Factory = Callable[..., DPGenerator]
GENERATORS: dict[str, Factory] = {}


def register_generator(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        GENERATORS[name] = factory
        return factory
    return wrap


@register_generator("dp-ctgan")
def _dp_ctgan(*, epsilon: float, delta: float, seed: int, **options) -> DPGenerator:
    from clients.dp_ctgan import DPCTGAN, DPCTGANConfig

    return DPCTGAN(DPCTGANConfig.from_options(epsilon=epsilon, delta=delta, seed=seed, **options))


@register_generator("aim")
def _aim(*, epsilon: float, delta: float, seed: int, **options) -> DPGenerator:
    from clients.aim import AIM, AIMConfig

    return AIM(AIMConfig.from_options(epsilon=epsilon, delta=delta, seed=seed, **options))


#: ``auto`` fits AIM to a table of fewer rows than this (by a DP count), DP-CTGAN to a larger
#: one. Measured (docs/results.md, "Which generator for which table"): at 2,100–2,400 rows a
#: client AIM's relabelled fair-then-private release was fairer than DP-CTGAN's on two tables
#: never tuned on, at 400 rows as well; at 8,300 rows and above the two were as fair and
#: DP-CTGAN 7 times faster.
SMALL_TABLE = 5_000
#: The share of the zCDP budget that ``auto``'s row count spends (its noise: about 55 rows at
#: ε = 1, δ = 10⁻⁶, small beside the threshold).
COUNT_SHARE = 0.01


class BySize:
    """The DP generator ``auto``: AIM for a small table, DP-CTGAN otherwise.

    The choice is made from a Gaussian count of the input rows (sensitivity 1, ``COUNT_SHARE``
    of the budget), which goes into the chosen generator's accounting as a reserved mechanism:
    the release shows which generator ran, so that choice may depend only on a DP statistic,
    never on the true row count. Everything else is the chosen generator's own.
    """

    def __init__(self, *, epsilon: float, delta: float, seed: int = 0, **options):
        extra = sorted(set(options) - {"noise_seed", "secure_mode"})
        if extra:
            raise ConfigError(
                f"generator auto chooses AIM or DP-CTGAN from the table's size, so it takes no "
                f"generator options (got {extra}); name the generator (--generator dp-ctgan or "
                f"--generator aim) to pass them.")
        self.epsilon, self.delta, self.seed, self.options = epsilon, delta, seed, options
        self.chosen: str | None = None
        self.count = Mechanism("table size (noisy count)", math.sqrt(
            1.0 / (2.0 * COUNT_SHARE * zcdp_rho(epsilon, delta))))
        self.inner: DPGenerator | None = None

    def fit(self, data: TabularData, *, reserve: Sequence[Mechanism] = ()) -> BySize:
        noise = NoiseSource(self.options.get("noise_seed"),
                            secure=bool(self.options.get("secure_mode")), purpose="table size")
        rows = len(data) + float(noise.normal(0.0, self.count.noise_multiplier))
        self.chosen = "aim" if rows < SMALL_TABLE else "dp-ctgan"
        self.inner = make_generator(self.chosen, epsilon=self.epsilon, delta=self.delta,
                                    seed=self.seed, **self.options)
        self.inner.fit(data, reserve=(*reserve, self.count))
        return self

    def _fitted(self) -> DPGenerator:
        if self.inner is None:
            raise ConfigError("generator auto: call fit before sample, noisy_rows or "
                              "privacy_spent.")
        return self.inner

    def sample(self, n: int, *, seed: int | None = None) -> TabularData:
        return self._fitted().sample(n, seed=seed)

    def noisy_rows(self) -> int:
        return self._fitted().noisy_rows()

    def privacy_spent(self) -> dict:
        return {**self._fitted().privacy_spent(), "generator": self.chosen,
                "chosen_by": f"a noisy row count (σ = {self.count.noise_multiplier:.1f}) "
                             f"against {SMALL_TABLE} rows"}


@register_generator("auto")
def _auto(*, epsilon: float, delta: float, seed: int, **options) -> DPGenerator:
    return BySize(epsilon=epsilon, delta=delta, seed=seed, **options)


def make_generator(name: str, *, epsilon: float, delta: float, seed: int = 0,
                   **options) -> DPGenerator:
    """A fresh, unfitted DP generator ``name`` with budget ``(ε, δ)`` and its own options."""
    if name not in GENERATORS:
        raise ConfigError(
            f"unknown DP generator {name!r}; valid names are {sorted(GENERATORS)}."
        )
    return GENERATORS[name](epsilon=epsilon, delta=delta, seed=seed, **options)
