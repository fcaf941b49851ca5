"""The run configuration: pyproject's table, defaults, validation; where a client finds data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from clients.client_app import load_split
from clients.pipeline import ORDERS as PIPELINE_ORDERS
from clients.pipeline import Stage2Config, pipeline_config
from clients.stage1 import Stage1Config
from common import datasets
from common.errors import ConfigError, DataError
from common.run_config import GROUPS, ORDERS, RunConfig, key_of, settings
from server.server_app import check_run
from simulations.options import settings_markdown
from simulations.settings_command import toml_table

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_table_lists_every_key_with_the_code_defaults():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig().to_mapping()
    assert RunConfig.from_mapping(table) == RunConfig()


def test_pyproject_table_is_the_generated_one_in_its_order():
    text = PYPROJECT.read_text()
    lines = text[text.index("[tool.flwr.app.config]"):].splitlines()[1:]
    lines = lines[:next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))]
    table = [line for line in lines if line and (not line.startswith("#") or line[2:] in GROUPS)]
    assert table == toml_table().splitlines()[1:], "run `fairsynth settings --write`"


def test_configuration_page_is_generated_from_the_declaration():
    page = (PYPROJECT.parent / "docs" / "configuration.md").read_text()
    assert page == settings_markdown(), \
        "run `fairsynth settings --write`"
    for field in settings():
        assert f"| `{key_of(field.name)}` |" in page


def test_every_order_the_config_names_is_a_pipeline_order_and_back():
    assert set(ORDERS) == set(PIPELINE_ORDERS)


def test_the_server_checks_the_strategy_against_its_flows():
    check_run(RunConfig(strategy="fairfed"))
    with pytest.raises(ConfigError, match=r"strategy = 'fedprox' is invalid; use one of "
                                          r"\['dp-fedavg', 'fairfed', 'fedavg', 'oneshot'\]"):
        check_run(RunConfig(strategy="fedprox"))


def test_pipeline_defaults_are_the_stage_defaults():
    """The run's default is a fairness target on the smooth gap; the rest are the stages' own
    defaults, but for fair-then-private's repair (auto: relabel).
    target = 0 gives the paper's penalty form."""
    built = pipeline_config(RunConfig())
    assert built.stage1 == Stage1Config(target=0.02, relaxation="gap")
    assert built.stage2 == Stage2Config(repair="relabel")
    assert built.order == "fair-then-private"
    tuned = pipeline_config(RunConfig(target=0, relaxation="covariance", tolerance=0.01,
                                      delta=1e-6, rho=100.0))
    assert tuned.stage1 == Stage1Config(tolerance=0.01, rho=100.0)
    assert tuned.stage2.delta == 1e-6


@pytest.mark.parametrize("repair, utility, mode", [
    ("auto", "accuracy", "relabel"), ("auto", "balanced", "relabel"), ("off", "accuracy", "off"),
    ("stage1", "accuracy", "stage1"), ("off", "balanced", "off"),
    ("relabel", "balanced", "relabel")])
def test_repair_auto_is_relabel(repair, utility, mode):
    config = RunConfig(repair=repair, utility=utility)
    assert config.repair_mode == mode
    assert pipeline_config(config).stage2.repair == mode


def test_the_label_share_reaches_the_pipeline():
    assert pipeline_config(RunConfig()).stage2.label_share == 0.5
    assert pipeline_config(RunConfig(label_share=0.3)).stage2.label_share == 0.3
    with pytest.raises(ConfigError, match="label-share = 1.0 is invalid"):
        RunConfig(label_share=1.0)


def test_the_stage1_repair_with_the_balanced_utility_is_refused():
    with pytest.raises(ConfigError, match="label-balanced.*repair = 'auto' \\(relabel\\) or 'off'"):
        RunConfig(repair="stage1", utility="balanced")


def test_a_target_and_a_tolerance_are_refused_together():
    with pytest.raises(ConfigError, match="two constrained forms.*target = 0"):
        RunConfig(tolerance=0.01)


@pytest.mark.parametrize("mapping, message", [
    ({"rhoo": 1.0}, r"unknown key 'rhoo'\. Did you mean \['rho'\]"),
    ({"rho": "ten"}, "rho must be a number"),
    ({"rounds": 2.5}, "rounds must be an integer"),
    ({"fairfed-reweigh": 1}, "fairfed-reweigh must be true or false"),
    ({"epsilon": 0}, "epsilon = 0.0 is invalid"),
    ({"stage2-fraction": 1.5}, r"stage2-fraction = 1.5 is invalid; use a number in \(0, 1\]"),
    ({"mlp-hidden": "320,,-1"}, "mlp-hidden"),
    ({"generator-options": "[1]"}, "JSON object"),
    ({"rho": float("inf")}, "finite"),
])
def test_bad_values_name_the_key_and_the_fix(mapping, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_mapping(mapping)


def test_config_is_frozen_and_integers_pass_for_floats():
    config = RunConfig.from_mapping({"rho": 100, "rounds": 5.0, "model": "mlp"})
    assert config.rho == 100.0 and isinstance(config.rho, float) and config.rounds == 5
    assert config.network_hidden == (320, 320) and config.l2 == config.mlp_weight_decay
    assert RunConfig().network_hidden == () and RunConfig().l2 == 0.0  # λ cross-validated
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rho = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="order"):
        pipeline_config(RunConfig(order="random"))


def test_simulation_nodes_take_their_partition():
    config = RunConfig(dataset="synthetic", seed=2)
    splits = [load_split({"partition-id": k, "num-partitions": 3}, config) for k in range(3)]
    assert sum(len(s.train) + len(s.test) for s in splits) == 4000
    for s in splits:
        assert len(s.test) == pytest.approx(0.2 * (len(s.train) + len(s.test)), abs=2)
    with pytest.raises(ConfigError, match="outside 0..2"):
        load_split({"partition-id": 3, "num-partitions": 3}, config)


def test_deployment_nodes_read_their_own_file(tmp_path):
    data = datasets.make_synthetic(250, seed=5)
    frame = data.features.copy()
    frame["group"], frame["label"] = data.s, data.y
    path = tmp_path / "client.csv"
    frame.to_csv(path, index=False)
    split = load_split({"data-path": str(path)}, RunConfig(dataset="synthetic"))
    assert (len(split.train), len(split.test)) == (200, 50)
    assert sorted(split.train.to_array().tolist() + split.test.to_array().tolist()) == \
        sorted(data.to_array().tolist())
    with pytest.raises(DataError, match="does not exist"):
        load_split({"data-path": str(tmp_path / "nowhere.csv")}, RunConfig())
    with pytest.raises(ConfigError, match="neither data-path"):
        load_split({"node": 1}, RunConfig())


def test_a_law_school_client_file_in_the_dataset_format(data_dir, tmp_path):
    frame = pd.read_csv(data_dir / "law_school_clean.csv").iloc[:500]
    frame.to_csv(tmp_path / "law.csv", index=False)
    split = load_split({"data-path": str(tmp_path / "law.csv")}, RunConfig())
    assert len(split.train) + len(split.test) == 500
    assert split.train.schema == datasets.LAW_SCHOOL


def test_settings_write_regenerates_a_stale_table_and_page(tmp_path):
    """`fairsynth settings --write` after a declaration changed: a table with a missing key, a
    stale key and a wrong default, and a stale page, come back as the generated ones; the rest of
    pyproject.toml is kept."""
    from simulations.settings_command import write_generated

    real = PYPROJECT.read_text()
    stale = (real.replace("rho = 10.0\n", "rho = 3.0\nold-key = 1\n")
             .replace("min-clients = 2\n", ""))
    (tmp_path / "docs").mkdir()
    (tmp_path / "pyproject.toml").write_text(stale + "\n[tool.other]\nx = 1\n")
    (tmp_path / "docs" / "configuration.md").write_text("stale\n")
    write_generated(tmp_path)
    assert (tmp_path / "pyproject.toml").read_text() == real + "\n[tool.other]\nx = 1\n"
    assert (tmp_path / "docs" / "configuration.md").read_text() == settings_markdown()
