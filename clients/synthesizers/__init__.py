"""Client synthesizers: what turns a client's training rows into the rows it releases.

A registry keyed by the run-config string ``synthesizer`` (like Opacus' accountants and the
DP generators of :mod:`clients.dp_generators`). Each synthesizer is one module of this package
that subclasses :class:`Synthesizer` and registers itself with :func:`register_synthesizer`;
adding one is that one module: every module of this package is imported (and so registers
itself) when the package is.

The interface a synthesizer implements::

    synth = make_synthesizer(config)        # reads its options from the RunConfig; raises
                                            #   ConfigError on a bad one, before any work
    synth = make_synthesizer(config, noise_seed=None, secure_mode=False)
                                            # the client's own noise settings (its privacy
                                            #   policy, never the run config)
    synth.check(train)                      # what would fail on this client's rows (their
                                            #   count and public schema), before any work
    [release] = synth.release(train, seed=..., fractions=[config.stage2_fraction])
    release.rows                            # TabularData: the rows the client may send
    release.privacy                         # PrivacyReport: what (ε, δ) covers, if anything
    release.seconds                         # seconds per stage (kept in the client's log)

``release`` fits on the training rows once and samples one release per fraction ``Ñ₂/N``
(several fractions share the fit: the same privacy as one release). ``seed`` seeds what is not
a DP mechanism (stage 1, sampling from a fitted generator); every DP mechanism draws its noise
from :class:`common.privacy.NoiseSource` with the synthesizer's ``noise_seed`` and
``secure_mode`` — fresh OS entropy by default — so that the server, which knows the run
config's seed, cannot recompute it.
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from collections.abc import Callable, Sequence

from clients.pipeline import PipelineResult
from common.errors import ConfigError
from common.run_config import RunConfig
from common.schema import TabularData

#: What a synthesizer returns for each release fraction.
Release = PipelineResult


class Synthesizer(abc.ABC):
    """Base class of the client synthesizers (see the package docstring)."""

    #: The run-config name (set by :func:`register_synthesizer`).
    name: str = ""

    def __init__(self, config: RunConfig, *, noise_seed: int | None = None,
                 secure_mode: bool = False) -> None:
        self.config = config
        self.noise_seed = noise_seed
        self.secure_mode = secure_mode

    def check(self, train: TabularData) -> None:  # noqa: B027 (optional hook)
        """Raise a :class:`common.errors.FairsynthError` for what would fail on a client with
        these training rows (from their count and public schema only), before any work."""

    @abc.abstractmethod
    def release(self, train: TabularData, *, seed: int,
                fractions: Sequence[float]) -> list[Release]:
        """Fit on ``train`` once; one release per fraction ``Ñ₂/N``."""


SYNTHESIZERS: dict[str, type[Synthesizer]] = {}


def register_synthesizer(name: str) -> Callable[[type[Synthesizer]], type[Synthesizer]]:
    """Class decorator: register a :class:`Synthesizer` under the run-config name ``name``."""
    def wrap(cls: type[Synthesizer]) -> type[Synthesizer]:
        cls.name = name
        SYNTHESIZERS[name] = cls
        return cls
    return wrap


def make_synthesizer(config: RunConfig, *, noise_seed: int | None = None,
                     secure_mode: bool = False) -> Synthesizer:
    """The synthesizer ``config.synthesizer``, built from ``config`` (validates its options),
    with the client's own DP-noise settings (see the package docstring)."""
    if config.synthesizer not in SYNTHESIZERS:
        raise ConfigError(f"run config: synthesizer = {config.synthesizer!r} is invalid; use "
                          f"one of {sorted(SYNTHESIZERS)}.")
    return SYNTHESIZERS[config.synthesizer](config, noise_seed=noise_seed,
                                            secure_mode=secure_mode)


def import_modules(path: Sequence[str]) -> list[str]:
    """Import every module found on ``path`` as a module of this package (each registers its
    synthesizer(s) as it is imported); return their names."""
    names = [m.name for m in pkgutil.iter_modules(path)]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_modules(__path__)
