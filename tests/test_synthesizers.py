"""The client-synthesizer registry: a module of clients/synthesizers/ is all a synthesizer
needs, and the seed pipeline is one of them."""

from __future__ import annotations

import sys

import pytest

import clients.synthesizers as synthesizers
from clients.pipeline import pipeline_config, run_pipeline_fractions
from clients.synthesizers import SYNTHESIZERS, Synthesizer, make_synthesizer
from common.datasets import make_synthetic
from common.errors import ConfigError
from common.run_config import RunConfig

PROBE = '''
from clients.synthesizers import Synthesizer, register_synthesizer

@register_synthesizer("probe-copy")
class Copy(Synthesizer):
    def release(self, train, *, seed, fractions):
        raise NotImplementedError
'''


def test_a_new_module_in_the_package_is_a_new_synthesizer(tmp_path, monkeypatch):
    (tmp_path / "probe_copy.py").write_text(PROBE)
    monkeypatch.setattr(synthesizers, "__path__", [*synthesizers.__path__, str(tmp_path)])
    try:
        assert "probe_copy" in synthesizers.import_modules(synthesizers.__path__)
        synth = make_synthesizer(RunConfig(synthesizer="probe-copy"))
        assert isinstance(synth, Synthesizer) and synth.name == "probe-copy"
    finally:
        SYNTHESIZERS.pop("probe-copy", None)
        sys.modules.pop("clients.synthesizers.probe_copy", None)


def test_the_seed_pipeline_is_registered_as_bilevel():
    assert "bilevel" in SYNTHESIZERS
    assert make_synthesizer(RunConfig()).name == "bilevel"


def test_an_unknown_synthesizer_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"synthesizer = 'nope' is invalid.*bilevel"):
        make_synthesizer(RunConfig(synthesizer="nope"))


def test_bilevel_releases_what_the_pipeline_releases():
    """The registry adds nothing: same rows as calling the pipeline with the same seed."""
    config = RunConfig(order="fair-only", iterations=5)
    train = make_synthetic(300, seed=4)
    [via_registry] = make_synthesizer(config).release(train, seed=7, fractions=[1.0])
    [direct] = run_pipeline_fractions(train, pipeline_config(config), [1.0], seed=7)
    a, b = via_registry.rows, direct.rows
    assert a.features.equals(b.features)
    assert (a.s == b.s).all() and (a.y == b.y).all()
    assert len(via_registry.rows) == len(train)
