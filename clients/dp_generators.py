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

from collections.abc import Callable, Sequence
from typing import Protocol

from common.errors import ConfigError
from common.privacy import Mechanism
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


def make_generator(name: str, *, epsilon: float, delta: float, seed: int = 0,
                   **options) -> DPGenerator:
    """A fresh, unfitted DP generator ``name`` with budget ``(ε, δ)`` and its own options."""
    if name not in GENERATORS:
        raise ConfigError(
            f"unknown DP generator {name!r}; valid names are {sorted(GENERATORS)}."
        )
    return GENERATORS[name](epsilon=epsilon, delta=delta, seed=seed, **options)
