"""``fair4free``: the bilevel pipeline's orders with Fair4Free (:mod:`clients.fair4free`) in
stage 1's place.

``fair-only`` releases Fair4Free's rows; ``fair-then-private`` fits the DP generator on them
(the guarantee covers Fair4Free's rows, not the real rows they were learned from, as for stage
1); ``private-then-fair`` trains Fair4Free on the DP rows (post-processing: the guarantee covers
the real rows). Options: the run config's ``fair4free_*`` settings.
"""

from __future__ import annotations

import dataclasses

from clients.fair4free import Fair4Free, Fair4FreeConfig
from clients.pipeline import FAIR_STEPS, FairRows, fair_model_rows
from clients.synthesizers import register_synthesizer
from clients.synthesizers.bilevel import Bilevel
from common.run_config import RunConfig
from common.schema import TabularData


def fair4free_rows(data: TabularData, n_out: int, measure: str, seed: int,
                   options: dict) -> FairRows:
    """Fair4Free fitted on ``data`` as the fair step (see
    :func:`clients.pipeline.fair_model_rows`)."""
    model = Fair4Free(Fair4FreeConfig(**options), seed=seed)
    return fair_model_rows(model, data, n_out, measure, seed)


FAIR_STEPS["fair4free"] = fair4free_rows


def fair4free_options(config: RunConfig) -> dict:
    """Fair4Free's options from the run config (validated by :class:`Fair4FreeConfig`)."""
    options = {"beta": config.fair4free_beta, "latent_dim": config.fair4free_latent,
               "teacher_epochs": config.fair4free_epochs,
               "student_epochs": config.fair4free_epochs}
    Fair4FreeConfig(**options)
    return options


@register_synthesizer("fair4free")
class Fair4FreeSynthesizer(Bilevel):
    """The pipeline's ``order`` with Fair4Free as its fair step."""

    def __init__(self, config: RunConfig, **noise) -> None:
        super().__init__(config, **noise)
        self.pipeline = dataclasses.replace(self.pipeline, fair="fair4free",
                                            fair_options=fair4free_options(config))
