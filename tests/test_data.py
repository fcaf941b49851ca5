"""Data loading, validation, wire format, fetching, splits and partitions."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from common import datasets, partition
from common.encoding import Encoder
from common.errors import ConfigError, DataError
from common.schema import Column, Schema, TabularData, from_frame


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


def test_every_feature_with_missing_cells_is_named_at_once(tmp_path):
    frame = _frame(a=[np.nan] + [0.0] * 19, c=["u", "", "", "v"] * 5)
    with pytest.raises(DataError) as err:
        datasets.load_csv(_write(tmp_path, frame), sensitive="grp", privileged="x",
                          label="lab", favourable="1")
    text = str(err.value)
    # Most missing first, each with its count and first row; the --drop list names both.
    assert "2 feature columns have missing/NaN/inf values: 'c' (10, first at row 1), " \
           "'a' (1, first at row 0)" in text
    assert "--drop c,a" in text and "never fills values in silently" in text


def test_identifier_columns_are_refused(tmp_path):
    n = 60
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "a": rng.normal(size=n), "grp": ["x", "y"] * (n // 2), "lab": [0, 1, 1, 0] * (n // 4),
        "name": [f"person {i}" for i in range(n)],           # one value a row
        "case": [f"C{i % 40}" for i in range(n)],             # 40 values in 60 rows
        "town": [f"t{i % 20}" for i in range(n)],             # 20: a category, 3 rows each
    })
    args = {"sensitive": "grp", "privileged": "x", "label": "lab", "favourable": "1"}
    with pytest.raises(DataError) as err:
        datasets.load_csv(_write(tmp_path, frame), **args)
    text = str(err.value)
    assert "'name' (60 values in 60 rows), 'case' (40 values in 60 rows)" in text
    assert "--drop name,case" in text and "town" not in text
    # The same refusal stops a draft, whose categories would otherwise list every name.
    with pytest.raises(DataError, match="identifiers or free text"):
        datasets.draft_schema(_write(tmp_path, frame), **args)
    data = datasets.load_csv(_write(tmp_path, frame), drop=["name", "case"], **args)
    assert {c.name for c in data.schema.categorical} == {"town"}


def test_a_long_category_list_and_a_numeric_identifier_are_warned(tmp_path, caplog):
    n = 400
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "a": rng.normal(size=n), "grp": ["x", "y"] * (n // 2), "lab": [0, 1, 1, 0] * (n // 4),
        "zip": [f"z{i % 150}" for i in range(n)],            # 150 categories, < n/2
        "row_id": rng.permutation(n) + 1000,                 # a whole number a row
        "score": rng.normal(size=n),                          # unique, but not whole
    })
    with caplog.at_level("WARNING"):
        data = datasets.load_csv(_write(tmp_path, frame), sensitive="grp", privileged="x",
                                 label="lab", favourable="1")
    assert {c.name for c in data.schema.features} == {"a", "zip", "row_id", "score"}
    warned = caplog.text
    assert "column 'zip' of mine.csv has 150 categories" in warned and "--drop zip" in warned
    assert "column 'row_id' of mine.csv holds a different whole number" in warned
    assert "'score'" not in warned and "'a'" not in warned


def test_non_binary_sensitive_is_binarised_with_privileged_value(tmp_path, caplog):
    frame = _frame(grp=["x", "y", "z", "x"] * 5)
    data = datasets.load_csv(_write(tmp_path, frame), sensitive="grp", privileged="x",
                             label="lab", favourable="1")
    assert data.s.tolist() == [1, 0, 0, 1] * 5
    assert "binarised" in caplog.text


def test_declared_continuous_column_with_text_is_an_error():
    frame = _frame(a=["1.0", "oops"] * 10)
    schema = Schema("t", (Column("a"),), sensitive="grp", privileged="x", label="lab",
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
    assert digest == datasets.get("law_school").sources[0].sha256
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


# --------------------------------------------------------------------------- the registry

#: Four rows in Adult's own format: no header, ", " separators, "?" for missing, and (as in
#: adult.test) labels ending in ".". The second row has a "?" and is dropped.
ADULT_ROWS = [
    ("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
     "Male, 2174, 0, 40, United-States, <=50K"),
    ("50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, "
     "0, 0, 13, United-States, <=50K"),
    ("38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, Black, "
     "Female, 0, 0, 40, United-States, >50K."),
    ("28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, "
     "Female, 0, 0, 40, Cuba, <=50K."),
]


def test_registry_names_and_unknown_names_list_the_valid_ones():
    assert set(datasets.names()) == {"law_school", "adult", "synthetic"} == set(datasets.DATASETS)
    assert set(datasets.fetchable()) == {"law_school", "adult"}
    for call in (lambda: datasets.get("adults"), lambda: datasets.load("adults"),
                 lambda: datasets.public_schema("adults")):
        with pytest.raises(ConfigError, match="unknown dataset 'adults'") as info:
            call()
        assert all(repr(name) in str(info.value) for name in ("law_school", "adult", "synthetic"))
    with pytest.raises(ConfigError, match="nothing to fetch for 'synthetic'"):
        datasets.fetch("synthetic")


def test_registry_sensitive_columns():
    adult = datasets.get("adult")
    assert adult.schema().sensitive == "sex" and adult.schema("race").sensitive == "race"
    assert adult.schema("race").privileged == "White"
    assert datasets.get("law_school").schema() == datasets.LAW_SCHOOL
    with pytest.raises(ConfigError, match=r"must be one of \['sex', 'race'\], got 'age'"):
        adult.schema("age")
    with pytest.raises(ConfigError, match=r"one of \['race'\]"):
        datasets.load("law_school", sensitive="sex")


@pytest.mark.parametrize("header", [False, True])
def test_adult_client_file_in_its_own_format(tmp_path, header):
    path = tmp_path / "client.csv"
    lines = [", ".join(datasets.ADULT_COLUMNS)] if header else []
    path.write_text("\n".join(lines + ADULT_ROWS) + "\n")
    data = datasets.get("adult").read_client_file(path)
    assert len(data) == 3  # the row with "?" is dropped
    assert data.features["age"].tolist() == [39.0, 38.0, 28.0]
    assert data.features["workclass"].tolist() == ["State-gov", "Private", "Private"]
    assert data.features["race"].tolist() == ["White", "Black", "Black"]
    assert data.s.tolist() == [1, 0, 0]  # sex, Male privileged
    assert data.y.tolist() == [0, 1, 0]  # ">50K." is >50K, "<=50K." is <=50K
    by_race = datasets.get("adult").read_client_file(path, sensitive="race")
    assert by_race.s.tolist() == [1, 0, 0] and by_race.features["sex"].tolist()[1] == "Female"


def test_adult_whole_dataset_pools_train_and_test_files(tmp_path):
    (tmp_path / "adult.data").write_text("\n".join(ADULT_ROWS[:2]) + "\n")
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(ADULT_ROWS[2:]))
    adult = datasets.get("adult")
    frame = adult.read_frame(tmp_path)
    assert list(frame.columns) == list(datasets.ADULT_COLUMNS)
    assert frame["age"].tolist() == ["39", "38", "28"]  # the "?" row dropped, data then test
    assert frame["income"].tolist() == ["<=50K", ">50K", "<=50K"]
    data = datasets.load("adult", root=tmp_path)
    assert data.y.tolist() == [0, 1, 0] and data.features["age"].tolist() == [39.0, 38.0, 28.0]


def test_a_client_file_that_is_not_csv_is_a_data_error(tmp_path):
    path = tmp_path / "client.csv"
    path.write_bytes(b"\xff\xfe\x00\x81 not a table \x00" * 50)
    with pytest.raises(DataError, match="not a readable CSV file of law_school rows"):
        datasets.get("law_school").read_client_file(path)
    path.write_text("")
    with pytest.raises(DataError, match="no rows"):
        datasets.get("adult").read_client_file(path)
    with pytest.raises(DataError, match="does not exist"):
        datasets.get("law_school").read_client_file(tmp_path / "nowhere.csv")


def test_every_dataset_reads_its_frame_and_whole_data_alike(data_dir):
    for name in ("law_school", "synthetic"):
        dataset = datasets.get(name)
        frame = dataset.read_frame(data_dir, seed=2)
        data = dataset.read_full(data_dir, seed=2)
        assert len(frame) == len(data) and data.schema == dataset.schema()
        schema = data.schema
        np.testing.assert_array_equal(data.features[schema.feature_names[0]].to_numpy(),
                                      frame[schema.feature_names[0]].to_numpy(dtype=float))
    synthetic = datasets.load("synthetic", seed=2)
    np.testing.assert_array_equal(synthetic.to_array(),
                                  datasets.make_synthetic(seed=2).to_array())
