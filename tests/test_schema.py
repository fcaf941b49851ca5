"""Declared schemas of your own CSV: ``fairsynth schema draft``, ``--schema``, and the rule that
a private order on a CSV needs one (docs/privacy.md, "Declared schemas").

The truths these tests check against are computed here from the rows the test wrote (category
lists, minima and maxima, whole numbers), not from the code under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from clients import node_data
from clients.pipeline import pipeline_config, run_pipeline
from common import datasets, protocol
from common.errors import ConfigError, DataError
from common.run_config import ORDERS, RunConfig
from common.schema import Column, Schema
from server.validation import accept_releases, expected_schema
from simulations.cli import main

ROLES = ["--sensitive", "group", "--privileged", "1", "--label", "label", "--favourable", "1"]
TINY_GENERATOR = ('{"epochs": 1.0, "sample_rate": 0.25, "generator_dims": [16], '
                  '"discriminator_dims": [16], "noise_dim": 8, "progress": false}')
PRIVATE = ("fair-then-private", "private-then-fair", "private-only")


def frame(n: int = 1000, seed: int = 4) -> pd.DataFrame:
    """``synthetic_frame`` plus a categorical column ``region`` and an integer column ``age``."""
    rng = np.random.default_rng(seed)
    out = datasets.synthetic_frame(n, seed=seed)
    out["region"] = rng.choice(["north", "south", "east"], n)
    out["age"] = rng.integers(18, 70, n)
    return out


def write_csv(tmp: Path, rows: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp / name
    rows.to_csv(path, index=False)
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    """``fairsynth argv``: exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def draft(tmp: Path, csv: Path, *extra: str) -> Path:
    """Draft the schema of ``csv`` with the CLI, then review it as a user would: delete the
    draft key. The reviewed file."""
    path = tmp / "schema.json"
    code, _, err = cli("schema", "draft", "--csv", str(csv), *ROLES, "--out", str(path), *extra)
    assert code == 0, err
    raw = json.loads(path.read_text())
    del raw[datasets.own_csv.DRAFT_KEY]
    path.write_text(json.dumps(raw, indent=2))
    return path


def declared(tmp: Path, schema: Schema, name: str = "schema.json") -> Path:
    path = tmp / name
    path.write_text(schema.to_json())
    return path


#: A schema written from domain knowledge for :func:`frame` (wider than the rows).
KNOWN = Schema(
    name="mine", sensitive="group", privileged="1", label="label", favourable="1",
    features=(*(Column(f"x{j}", bounds=(-10.0, 10.0)) for j in range(4)),
              Column("region", kind="categorical", categories=("east", "north", "south")),
              Column("age", bounds=(0.0, 120.0), integer=True)))


# --------------------------------------------------------------------------- the draft


@pytest.mark.parametrize("low, high, want", [
    (18, 69, (10, 70)), (0.12, 0.97, (0.1, 1.0)), (-3.2, 3.5, (-4, 4)), (0, 1, (0, 1)),
    (1000, 250_000, (0, 300_000)), (5, 5, (4, 6)), (0, 0, (-1, 1)), (-0.3, 0.7, (-1, 1)),
])
def test_bounds_are_rounded_outward_to_a_nice_number(low, high, want):
    assert datasets.own_csv.nice_bounds(low, high) == want


def test_nice_bounds_always_contain_the_range():
    rng = np.random.default_rng(0)
    for _ in range(500):
        a, b = np.sort(rng.normal(0, 10 ** rng.uniform(-3, 6), 2))
        lo, hi = datasets.own_csv.nice_bounds(a, b)
        assert lo <= a <= b <= hi
        assert hi - lo <= 3 * (b - a)  # widened by at most one step (≤ the range) each side


def test_the_draft_reads_kinds_categories_bounds_and_integers_from_the_rows(tmp_path):
    rows = frame().assign(x1=lambda f: f.x1.round(0))  # a whole-number float column
    code, out, err = cli("schema", "draft", "--csv", str(write_csv(tmp_path, rows)), *ROLES)
    assert code == 0, err
    raw = json.loads(out)
    assert "read from data.csv" in raw["draft"] and "delete this key" in raw["draft"]
    columns = {c["name"]: c for c in raw["features"]}
    assert list(columns) == ["x0", "x1", "x2", "x3", "region", "age"]
    assert columns["region"]["kind"] == "categorical"
    assert columns["region"]["categories"] == sorted(rows["region"].unique())
    for name in ("x0", "x1", "x2", "x3", "age"):
        lo, hi = columns[name]["bounds"]
        assert columns[name]["kind"] == "continuous"
        assert lo <= rows[name].min() and rows[name].max() <= hi
        step = 10 ** math.floor(math.log10(rows[name].max() - rows[name].min()))
        assert lo > rows[name].min() - step and hi < rows[name].max() + step
        assert columns[name]["integer"] == bool((rows[name] % 1 == 0).all())
    assert [columns[n]["integer"] for n in ("x0", "x1", "age")] == [False, True, True]
    assert (raw["sensitive"], raw["privileged"], raw["label"], raw["favourable"]) == \
        ("group", "1", "label", "1")


def test_a_reviewed_draft_round_trips_and_loads_the_file(tmp_path):
    rows = frame()
    csv = write_csv(tmp_path, rows.assign(id=np.arange(len(rows))))
    path = draft(tmp_path, csv, "--drop", "id")
    schema = Schema.from_json(path.read_text())
    assert schema == datasets.read_schema(path)
    assert schema.feature_names == ["x0", "x1", "x2", "x3", "region", "age"]  # id dropped
    data = datasets.load_csv(csv, schema=path)
    assert data.schema == schema
    assert all(c.bounds is not None for c in data.schema.continuous)
    np.testing.assert_array_equal(data.s, rows["group"].to_numpy())
    np.testing.assert_array_equal(data.y, rows["label"].to_numpy())
    np.testing.assert_array_equal(data.features["age"].to_numpy(), rows["age"].to_numpy())


def test_draft_writes_a_file_and_keeps_an_existing_one(tmp_path):
    csv, out = write_csv(tmp_path, frame(200)), tmp_path / "schema.json"
    assert cli("schema", "draft", "--csv", str(csv), *ROLES, "--out", str(out))[0] == 0
    first = out.read_text()
    out.write_text("reviewed")
    code, _, err = cli("schema", "draft", "--csv", str(csv), *ROLES, "--out", str(out))
    assert code == 2 and "--force" in err and out.read_text() == "reviewed"
    assert cli("schema", "draft", "--csv", str(csv), *ROLES, "--out", str(out), "--force")[0] == 0
    assert out.read_text() == first


@pytest.mark.parametrize("argv, message", [
    (["--sensitive", "group"], "schema draft needs --csv --label"),
    (["--csv", "CSV", "--sensitive", "group", "--label", "label", "--privileged", "1"],
     "name the favourable value with --favourable"),
])
def test_draft_names_what_is_missing(tmp_path, argv, message):
    csv = write_csv(tmp_path, frame(100))
    code, out, err = cli("schema", "draft", *[str(csv) if a == "CSV" else a for a in argv])
    assert code == 2 and message in err and out == ""


# --------------------------------------------------------------------------- held to the schema


def test_a_file_still_marked_as_a_draft_is_refused(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(datasets.draft_text(KNOWN, "data.csv"))
    with pytest.raises(DataError, match="schema.json is still a draft") as info:
        datasets.read_schema(path)
    assert "delete the 'draft' key" in str(info.value)
    with pytest.raises(DataError, match="still a draft"):
        datasets.load_csv(write_csv(tmp_path, frame(50)), schema=path)


@pytest.mark.parametrize("change, column, problem", [
    ({"region": "west"}, "region", "has 3 row(s) with value(s) ['west'] outside the categories"),
    ({"age": 121}, "age", "has 3 row(s) outside the bounds [0, 120]"),
    ({"x2": -10.5}, "x2", "has 3 row(s) outside the bounds [-10, 10]"),
    ({"x0": "unknown"}, "x0", "is continuous in schema.json but holds 3 non-numeric value(s)"),
])
def test_a_value_outside_the_declared_schema_is_refused_naming_the_column(
        tmp_path, change, column, problem):
    rows = frame(60).astype(object)
    for name, value in change.items():
        rows.loc[[4, 9, 30], name] = value
    with pytest.raises(DataError) as info:
        datasets.load_csv(write_csv(tmp_path, rows), schema=declared(tmp_path, KNOWN))
    message = str(info.value)
    assert f"column {column!r} of data.csv {problem}" in message
    assert "schema.json" in message
    fix = {"region": "Add them to the column's categories in schema.json",
           "age": "Widen the column's bounds in schema.json",
           "x2": "Widen the column's bounds in schema.json",
           "x0": "declare the column categorical in schema.json"}[column]
    assert fix in message


def test_the_rows_at_the_declared_bounds_and_categories_load(tmp_path):
    rows = frame(60)
    rows.loc[0, ["x0", "age"]] = [-10.0, 120]
    rows.loc[1, ["x0", "age"]] = [10.0, 0]
    data = datasets.load_csv(write_csv(tmp_path, rows), schema=declared(tmp_path, KNOWN))
    assert data.schema == KNOWN and len(data) == 60
    assert data.features["x0"].tolist()[:2] == [-10.0, 10.0]


@pytest.mark.parametrize("flags, message", [
    ({"sensitive": "age"}, "--sensitive 'age' contradicts"),
    ({"favourable": "0"}, "--favourable '0' contradicts"),
    ({"drop": ["region"]}, "name column(s) ['region'] that schema.json declares otherwise"),
    ({"categorical": ["age"]}, "name column(s) ['age'] that schema.json declares otherwise"),
])
def test_flags_that_contradict_the_schema_are_refused(tmp_path, flags, message):
    with pytest.raises(DataError, match=re.escape(message)):
        datasets.load_csv(write_csv(tmp_path, frame(40)), schema=declared(tmp_path, KNOWN),
                          **flags)


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["features"].pop(), None),  # fine: a column the schema leaves out
    (lambda raw: raw["features"].append({"name": "income", "kind": "continuous"}),
     "has no column(s) ['income'], which schema.json declares"),
    (lambda raw: raw["features"][0].update(bounds=[1]), "write [low, high]"),
    (lambda raw: raw["features"][0].update(bounds=[3, 1]), "empty bounds"),
    (lambda raw: raw["features"][4].update(categories=["east", "east"]), "twice"),
    (lambda raw: raw["features"][4].update(categories=[1, 2]), "list of strings"),
    (lambda raw: raw["features"].append(dict(raw["features"][0])), "more than once"),
    (lambda raw: raw["features"].append({"name": "label", "kind": "continuous"}),
     "as features too"),
    (lambda raw: raw.pop("label"), "malformed schema JSON"),
])
def test_schema_files_no_table_can_follow_are_refused(tmp_path, edit, message):
    raw = json.loads(KNOWN.to_json())
    edit(raw)
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    csv = write_csv(tmp_path, frame(40))
    if message is None:
        assert datasets.load_csv(csv, schema=path).schema.feature_names == \
            KNOWN.feature_names[:-1]
        return
    with pytest.raises(DataError, match=re.escape(message)):
        datasets.load_csv(csv, schema=path)


def test_a_missing_or_broken_schema_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="fairsynth schema draft"):
        datasets.read_schema(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="is not JSON"):
        datasets.read_schema(tmp_path / "bad.json")


# --------------------------------------------------------------------------- the run setting


@pytest.mark.parametrize("order", ORDERS)
def test_a_private_order_on_a_csv_needs_a_declared_schema(order):
    if order in PRIVATE:
        with pytest.raises(ConfigError) as info:
            RunConfig(csv="data.csv", order=order)
        message = str(info.value)
        assert "fairsynth schema draft --csv FILE ... --out schema.json" in message
        assert "--schema schema.json" in message
    else:
        assert RunConfig(csv="data.csv", order=order).order == order
    assert RunConfig(csv="data.csv", schema="schema.json", order=order).schema == "schema.json"
    assert RunConfig(dataset="synthetic", order=order).order == order


def test_the_cli_refuses_a_private_sweep_on_a_csv_without_a_schema(tmp_path):
    csv = write_csv(tmp_path, frame(200))
    code, _, err = cli("stage2-sweep", "--csv", str(csv), *ROLES, "--seeds", "0",
                       "--out", str(tmp_path / "out"))
    assert code == 2
    assert "fairsynth schema draft --csv FILE ... --out schema.json" in err
    assert "--schema schema.json" in err
    assert not (tmp_path / "out").exists()


def test_commands_that_release_nothing_private_run_on_a_csv_without_a_schema(tmp_path):
    """stage1-sweep (stage 1 only) and deploy-split (files only) take no --order."""
    csv = write_csv(tmp_path, frame(200))
    code, _, err = cli("stage1-sweep", "--csv", str(csv), *ROLES, "--seeds", "0", "--rho", "0",
                       "--out", str(tmp_path / "sweep"))
    assert code == 0, err
    assert (tmp_path / "sweep" / "results.json").is_file()
    code, _, err = cli("deploy-split", "--csv", str(csv), *ROLES, "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert sum(len(pd.read_csv(p)) for p in (tmp_path / "d").rglob("client.csv")) == 200


def test_a_node_reads_the_declared_schema_and_again_when_it_changes(tmp_path):
    csv, path = write_csv(tmp_path, frame(300)), declared(tmp_path, KNOWN)
    config = RunConfig(csv=str(csv), schema=str(path), order="private-only")
    node_data.clear_cache()
    first = node_data.load_dataset(config)
    assert first.schema == KNOWN and node_data.load_dataset(config) is first
    wider = dataclasses.replace(KNOWN, features=(
        dataclasses.replace(KNOWN.features[0], bounds=(-20.0, 20.0)), *KNOWN.features[1:]))
    path.write_text(wider.to_json() + " " * 8)  # another size: another file identity
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = node_data.load_dataset(config)
    assert second is not first and second.schema == wider
    split = node_data.load_split({"data-path": str(csv)}, config)
    assert split.train.schema == wider
    node_data.clear_cache()


# --------------------------------------------------------------------------- the server


def _reply(data, node: int) -> Message:
    ask = Message(RecordDict(), dst_node_id=node, message_type="query")
    ask.metadata.__dict__["_message_id"] = f"q{node}"
    content = RecordDict({
        protocol.ROWS: ArrayRecord({protocol.ROWS: Array(data.to_array())}),
        protocol.META: ConfigRecord({protocol.SCHEMA: data.schema.to_json(),
                                     protocol.PRIVACY: "{}"}),
        protocol.METRICS: MetricRecord({protocol.NUM_EXAMPLES: len(data)}),
    })
    return Message(content, reply_to=ask)


def test_the_server_expects_the_declared_schema_when_it_can_read_it(tmp_path, caplog):
    path = declared(tmp_path, KNOWN)
    assert expected_schema(RunConfig(csv="data.csv", schema=str(path))) == KNOWN
    missing = RunConfig(csv="data.csv", schema=str(tmp_path / "elsewhere.json"))
    assert expected_schema(missing) is None
    assert "majority schema" in caplog.text
    assert expected_schema(RunConfig(csv="data.csv", order="real")) is None
    assert expected_schema(RunConfig(dataset="synthetic")) == datasets.synthetic_schema()


def test_replies_are_checked_against_the_declared_schema_not_the_majority(
        tmp_path, task_identity):
    """Two clients whose schema was read from their rows outvote nobody: the declared one
    rules, and their replies are rejected with the difference."""
    csv = write_csv(tmp_path, frame(120))
    good = datasets.load_csv(csv, schema=declared(tmp_path, KNOWN))
    read = datasets.load_csv(csv, sensitive="group", privileged="1", label="label",
                             favourable="1")
    assert read.schema != KNOWN
    expected = expected_schema(RunConfig(csv=str(csv), schema=str(tmp_path / "schema.json")))
    replies = [_reply(good, 1), _reply(read, 2), _reply(read, 3)]
    accepted, rejected = accept_releases(replies, queried=[1, 2, 3], max_rows=1000,
                                         min_clients=1, expected=expected)
    assert [r.node_id for r in accepted] == [1]
    assert sorted(r.node_id for r in rejected) == [2, 3]
    assert all("differs from the federation's" in r.reason for r in rejected)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow  # a DP generator fit: about 5 s
def test_declared_bounds_spare_the_generator_the_budget_for_bounds(tmp_path):
    """With the declared schema the DP generator spends nothing on bounds; with a schema read
    from the rows it must spend budget on them (or, on few rows, refuse)."""
    csv = write_csv(tmp_path, frame(200))
    config = pipeline_config(RunConfig(csv=str(csv), schema="s.json", order="private-only",
                                       generator_options=TINY_GENERATOR))
    data = datasets.load_csv(csv, schema=draft(tmp_path, csv))
    spent = run_pipeline(data, config, seed=0).privacy.details["budget_split"]
    assert "bounds" not in spent
    rows = datasets.load_csv(csv, sensitive="group", privileged="1", label="label",
                             favourable="1")
    try:
        spent = run_pipeline(rows, config, seed=0).privacy.details["budget_split"]
    except DataError as exc:
        assert "bounds" in str(exc)
    else:
        assert "bounds" in spent


@pytest.mark.slow
def test_a_1000_row_csv_runs_fair_then_private_with_a_drafted_schema(tmp_path):
    """The goal: draft, review (delete the key), run the sweep for 2 clients, fair-then-private;
    without --schema the same command stops before any work, naming both commands."""
    csv = write_csv(tmp_path, frame(1000, seed=7))
    schema = draft(tmp_path, csv)
    sweep = ["stage2-sweep", "--csv", str(csv), "--clients", "2", "--seeds", "0", "--rho", "0",
             "10", "--iterations", "10", "--order", "fair-then-private", "--generator-options",
             TINY_GENERATOR]
    code, _, err = cli(*sweep, *ROLES, "--out", str(tmp_path / "refused"))
    assert code == 2 and "fairsynth schema draft --csv FILE" in err and "--schema" in err
    assert not (tmp_path / "refused").exists()
    code, out, err = cli(*sweep, "--schema", str(schema), "--out", str(tmp_path / "out"))
    assert code == 0, err
    records = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    curves = {(r["order"], r["rho"], r["curve"]) for r in records}
    assert ("fair-then-private", 10.0, "syn_2(100%)") in curves
    assert ("private-only", 0.0, "syn_2(100%)") in curves
    private = [r for r in records if r["epsilon_spent"] is not None]
    assert private and all(0 < r["epsilon_spent"] <= 1.0 + 1e-9 for r in private)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)
