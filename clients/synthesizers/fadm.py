"""``fadm``: the bilevel pipeline's orders with FADM (:mod:`clients.fadm`) in stage 1's place.

As for ``fair4free``: ``fair-only`` releases FADM's rows, ``fair-then-private`` fits the DP
generator on them (covering FADM's rows only), ``private-then-fair`` trains FADM on the DP
rows (covering the real rows). Options: the run config's ``fadm_*`` settings.
"""

from __future__ import annotations

import dataclasses

from clients.fadm import FADM, FADMConfig
from clients.pipeline import FAIR_STEPS, FairRows, fair_model_rows
from clients.synthesizers import register_synthesizer
from clients.synthesizers.bilevel import Bilevel
from common.errors import ConfigError
from common.run_config import RunConfig
from common.schema import TabularData


def fadm_rows(data: TabularData, n_out: int, measure: str, seed: int,
              options: dict) -> FairRows:
    """FADM fitted on ``data`` as the fair step (see
    :func:`clients.pipeline.fair_model_rows`)."""
    model = FADM(FADMConfig(**options), seed=seed)
    return fair_model_rows(model, data, n_out, measure, seed)


FAIR_STEPS["fadm"] = fadm_rows


def fadm_options(config: RunConfig) -> dict:
    """FADM's options from the run config (validated by :class:`FADMConfig`)."""
    options = {"lambda_y": config.fadm_lambda_y, "lambda_z": config.fadm_lambda_z,
               "domain": config.fadm_domain, "iterations": config.fadm_iterations,
               "steps": config.fadm_steps}
    FADMConfig(**options)
    return options


@register_synthesizer("fadm")
class FADMSynthesizer(Bilevel):
    """The pipeline's ``order`` with FADM as its fair step."""

    def __init__(self, config: RunConfig, **noise) -> None:
        super().__init__(config, **noise)
        self.pipeline = dataclasses.replace(self.pipeline, fair="fadm",
                                            fair_options=fadm_options(config))

    def check(self, train: TabularData) -> None:
        super().check(train)
        domain = self.pipeline.fair_options["domain"]
        if domain and domain not in [c.name for c in train.schema.categorical]:
            raise ConfigError(f"fadm: fadm-domain = {domain!r} must name a categorical feature "
                              "column; choose among "
                              f"{[c.name for c in train.schema.categorical]}.")
