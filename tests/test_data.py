"""Data loading, validation, wire format, fetching, splits and partitions."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from common import datasets, partition
from common.encoding import Encoder
from common.errors import ConfigError, DataError
from common.schema import Schema, TabularData, from_frame


def test_law_school_schema_and_size(law_school):
    assert len(law_school) == 20798
    assert law_school.schema.feature_names == [c.name for c in datasets.LAW_SCHOOL.features]
    assert law_school.s.sum() == 17491  # White
    assert law_school.y.sum() == 18505  # passed the bar
    enc = Encoder.fit(law_school)
    assert enc.design(law_school).shape == (20798, 12)  # 10 features, s, intercept


def test_adult_loads_with_sex_or_race(data_dir):
    adult = datasets.load("adult", root=data_dir)
    assert len(adult) == 45222  # rows without '?', train and test pooled
    assert 0.6 < adult.s.mean() < 0.7  # share of men
    assert 0.2 < adult.y.mean() < 0.3  # share of >50K
    by_race = datasets.load("adult", root=data_dir, sensitive="race")
    assert "sex" in by_race.schema.feature_names and 0.8 < by_race.s.mean() < 0.9


def test_wire_format_roundtrip(data_dir):
    adult = datasets.load("adult", root=data_dir).subset(np.arange(500))
    back = TabularData.from_array(adult.to_array(), adult.schema)
    pd.testing.assert_frame_equal(back.features.astype(object), adult.features.astype(object),
                                  check_dtype=False)
    np.testing.assert_array_equal(back.s, adult.s)
    np.testing.assert_array_equal(back.y, adult.y)
    assert Schema.from_json(adult.schema.to_json()) == adult.schema


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a[:, :-1], "columns"),
    (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a), "NaN"),
    (lambda a: np.column_stack([a[:, :-1], np.full(len(a), 2.0)]), "0/1"),
])
def test_wire_format_rejects_malformed_arrays(toy, mutate, message):
    with pytest.raises(DataError, match=message):
        TabularData.from_array(mutate(toy.to_array()), toy.schema)


def _frame(**overrides):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(size=20),
                          "grp": ["x", "y"] * 10, "lab": [0, 1, 1, 0] * 5})
    for k, v in overrides.items():
        frame[k] = v
    return frame


def _write(tmp_path, frame):
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_loader_builds_schema(tmp_path):
    frame = _frame(c=["u", "v", "w", "u"] * 5)
    data = datasets.load_csv(_write(tmp_path, frame), sensitive="grp", privileged="x",
                             label="lab", favourable="1")
    kinds = {c.name: c.kind for c in data.schema.features}
    assert kinds == {"a": "continuous", "b": "continuous", "c": "categorical"}
    assert data.s.tolist() == [1, 0] * 10
    assert data.y.tolist() == [0, 1, 1, 0] * 5


@pytest.mark.parametrize("overrides, kwargs, message", [
    ({}, {"sensitive": "race"}, "sensitive column 'race'"),
    ({}, {"label": "outcome"}, "label column 'outcome'"),
    ({"a": [np.nan] + [0.0] * 19}, {}, "missing/NaN"),
    ({"a": [np.inf] + [0.0] * 19}, {}, "NaN/inf"),
    ({"grp": ["x"] * 20}, {}, "single value"),
    ({"lab": [1] * 20}, {}, "single value"),
    ({"grp": ["x", "y", "z", "x"] * 5}, {"privileged": None}, "name the privileged value"),
    ({}, {"privileged": "q"}, "does not occur"),
    ({}, {"drop": ["zzz"]}, "zzz"),
])
def test_csv_loader_errors_name_the_problem(tmp_path, overrides, kwargs, message):
    args = {"sensitive": "grp", "privileged": "x", "label": "lab", "favourable": "1", **kwargs}
    with pytest.raises(DataError, match=message):
        datasets.load_csv(_write(tmp_path, _frame(**overrides)), **args)


def test_non_binary_sensitive_is_binarised_with_privileged_value(tmp_path, caplog):
    frame = _frame(grp=["x", "y", "z", "x"] * 5)
    data = datasets.load_csv(_write(tmp_path, frame), sensitive="grp", privileged="x",
                             label="lab", favourable="1")
    assert data.s.tolist() == [1, 0, 0, 1] * 5
    assert "binarised" in caplog.text


def test_declared_continuous_column_with_text_is_an_error():
    frame = _frame(a=["1.0", "oops"] * 10)
    schema = Schema("t", (datasets.Column("a"),), sensitive="grp", privileged="x", label="lab",
                    favourable="1")
    with pytest.raises(DataError, match="non-numeric"):
        from_frame(frame, schema)


def test_missing_columns_are_listed():
    with pytest.raises(DataError, match=r"no column\(s\) \[.*'lsat'"):
        from_frame(pd.DataFrame({"x": [1]}), datasets.LAW_SCHOOL)


def test_missing_file_names_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match="fairsynth data fetch law_school"):
        datasets.load("law_school", root=tmp_path)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "env"))
    assert datasets.data_dir() == tmp_path / "env"
    assert datasets.data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(datasets.DATA_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert datasets.data_dir() == tmp_path / "cache" / "fairsynth"


def test_fetch_from_file_url_verifies_digest(tmp_path, data_dir, monkeypatch):
    target = tmp_path / "data"
    paths = datasets.fetch("law_school", root=target, base_url=data_dir.as_uri())
    assert [p.name for p in paths] == ["law_school_clean.csv"]
    digest = hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert digest == datasets.SOURCES["law_school"]["law_school_clean.csv"][1]
    # a corrupted mirror is refused and nothing is left behind
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "law_school_clean.csv").write_text("not the data\n")
    with pytest.raises(DataError, match="SHA-256"):
        datasets.fetch("law_school", root=tmp_path / "other", base_url=bad.as_uri())
    assert list((tmp_path / "other").iterdir()) == []


def test_synthetic_dataset_is_seeded_and_biased():
    a, b = datasets.make_synthetic(1000, seed=1), datasets.make_synthetic(1000, seed=1)
    pd.testing.assert_frame_equal(a.features, b.features)
    assert a.y[a.s == 1].mean() > a.y[a.s == 0].mean() + 0.1
    fair = datasets.make_synthetic(4000, bias=0.0, label_bias=0.0, seed=1)
    assert abs(fair.y[fair.s == 1].mean() - fair.y[fair.s == 0].mean()) < 0.05


def test_train_test_split_is_stratified_and_disjoint(toy):
    train, test = partition.train_test_split(toy, seed=0)
    assert len(train) + len(test) == len(toy)
    for cell, count in toy.cell_counts().items():
        assert test.cell_counts()[cell] == round(0.2 * count)


@pytest.mark.parametrize("method, kwargs", [("iid", {}), ("dirichlet", {"alpha": 0.5}),
                                            ("column", {"column": "tier"})])
def test_partitions_are_disjoint_and_complete(law_school, method, kwargs):
    parts = partition.partition(law_school, clients=4, method=method, seed=0, **kwargs)
    assert sum(len(p) for p in parts) == len(law_school)
    assert min(len(p) for p in parts) >= 10
    if method == "column":
        tiers = [set(p.features["tier"]) for p in parts]
        assert all(a.isdisjoint(b) for i, a in enumerate(tiers) for b in tiers[i + 1:])


def test_dirichlet_skews_group_shares(law_school):
    parts = partition.partition(law_school, clients=10, method="dirichlet", alpha=0.1, seed=0)
    shares = [p.s.mean() for p in parts]
    assert max(shares) - min(shares) > 0.3


@pytest.mark.parametrize("kwargs, message", [
    ({"clients": 0}, "clients"),
    ({"clients": 5000}, "cannot give"),
    ({"clients": 2, "method": "random"}, "unknown partition"),
    ({"clients": 2, "method": "column"}, "column name"),
    ({"clients": 2, "method": "column", "column": "nope"}, "no such feature"),
    ({"clients": 2, "method": "dirichlet", "alpha": 0.0}, "α"),
])
def test_partition_errors(toy, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        partition.partition(toy, **kwargs)
