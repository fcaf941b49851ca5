"""``bilevel``: the two-stage pipeline of the seed paper (:mod:`clients.pipeline`).

Stage 1 (fair distillation by bilevel optimisation, :mod:`clients.stage1`) and stage 2 (a DP
generator, :mod:`clients.dp_generators`) in the order that the run config's ``order`` names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from clients.pipeline import pipeline_config, run_pipeline_fractions
from clients.synthesizers import Release, Synthesizer, register_synthesizer
from common.run_config import RunConfig
from common.schema import TabularData


@register_synthesizer("bilevel")
class Bilevel(Synthesizer):
    """The seed pipeline: ``order`` ∈ fair-then-private, private-then-fair, private-only,
    fair-only, real."""

    def __init__(self, config: RunConfig, **noise) -> None:
        super().__init__(config, **noise)
        pipeline = pipeline_config(config)
        self.pipeline = dataclasses.replace(pipeline, stage2=dataclasses.replace(
            pipeline.stage2, noise_seed=self.noise_seed, secure_mode=self.secure_mode))
        if self.pipeline.order not in ("real", "fair-only"):
            self.pipeline.stage2.check_options()

    def check(self, train: TabularData) -> None:
        self.pipeline.check_delta(len(train))

    def release(self, train: TabularData, *, seed: int,
                fractions: Sequence[float]) -> list[Release]:
        return run_pipeline_fractions(train, self.pipeline, fractions, seed=seed)
