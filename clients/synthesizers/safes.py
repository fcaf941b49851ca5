"""``safes``: a DP generator on the real rows, then the fairness transform TOT on its rows.

SAFES (Giddens, Lang & Liu, 2024): DP synthesis first — AIM by default (``generator = auto``),
DP-CTGAN with ``--generator dp-ctgan`` — then Calmon et al.'s optimised pre-processing
(:mod:`clients.tot`) fitted and applied to the DP rows only. TOT never reads the real rows, so
the generator's (ε, δ) covers the release end to end (post-processing). Its options are the
run config's ``safes_*`` settings.

The client draws ``N̂`` rows from the generator (``N̂``: the generator's DP estimate of its
input size), fits TOT on them, and releases ``fraction · N̂`` of them, transformed: the release
size, like the rows, is a function of the DP output only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from clients.pipeline import (
    COVERS_REAL_POST,
    PipelineResult,
    _dp_report,
    _fit_generator,
    _n_out,
    _sample,
    pipeline_config,
)
from clients.synthesizers import Release, Synthesizer, register_synthesizer
from clients.tot import TOT, TOTConfig
from common.run_config import RunConfig
from common.schema import TabularData

COVERS_SAFES = COVERS_REAL_POST.replace("stage 1", "the transform TOT")


def tot_config(config: RunConfig) -> TOTConfig:
    """TOT's options from the run config's ``safes_*`` settings."""
    columns = tuple(c.strip() for c in config.safes_columns.split(",") if c.strip())
    return TOTConfig(eta=config.safes_eta, distortion=config.safes_distortion,
                     cells=config.safes_cells, bins=config.safes_bins, columns=columns)


@register_synthesizer("safes")
class Safes(Synthesizer):
    """A DP generator (``generator``; auto: aim), then TOT on its rows."""

    def __init__(self, config: RunConfig, **noise) -> None:
        super().__init__(config, **noise)
        pipeline = pipeline_config(config)
        self.pipeline = dataclasses.replace(pipeline, stage2=dataclasses.replace(
            pipeline.stage2, noise_seed=self.noise_seed, secure_mode=self.secure_mode))
        self.pipeline.stage2.check_options()
        self.tot = tot_config(config)

    def check(self, train: TabularData) -> None:
        self.pipeline.check_delta(len(train))
        self.tot.check_schema(train.schema)

    def release(self, train: TabularData, *, seed: int,
                fractions: Sequence[float]) -> list[Release]:
        generator, fit = _fit_generator(train, self.pipeline, seed)
        private, t = _sample(generator, _n_out(1.0, generator.noisy_rows()), seed + 1)
        start = time.perf_counter()
        tot = TOT(self.tot).fit(private)  # the DP rows only: post-processing
        rng = np.random.default_rng(seed + 2)
        out = []
        report = _dp_report("safes", generator, COVERS_SAFES,
                            dp_generator=self.pipeline.stage2.generator, tot=tot.report)
        for f in fractions:
            n = _n_out(f, len(private))
            keep = rng.choice(len(private), n, replace=False) if n < len(private) else None
            rows = tot.transform(private if keep is None else private.subset(keep), rng)
            out.append(PipelineResult(rows, report, {"stage2": fit + t,
                                                     "tot": time.perf_counter() - start},
                                      intermediate={"stage2": private}))
        return out
