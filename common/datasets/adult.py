"""UCI Adult (census income): its schema and its own file format, parsed here only.

The format: comma-separated with a space after each comma, no header row, ``?`` for a
missing value; ``adult.test`` starts with one line that is not a row, and its labels end in
``.`` (``>50K.``). Rows with a missing value are dropped, as is usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from common.datasets.base import Dataset, Source, require_file
from common.errors import ConfigError
from common.schema import Column, Schema

logger = logging.getLogger(__name__)

#: The columns of Adult's files, in order (the files have no header row).
ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
)
_CATEGORIES = {
    "workclass": "Private, Self-emp-not-inc, Self-emp-inc, Federal-gov, Local-gov, State-gov, "
    "Without-pay, Never-worked",
    "marital-status": "Married-civ-spouse, Divorced, Never-married, Separated, Widowed, "
    "Married-spouse-absent, Married-AF-spouse",
    "occupation": "Tech-support, Craft-repair, Other-service, Sales, Exec-managerial, "
    "Prof-specialty, Handlers-cleaners, Machine-op-inspct, Adm-clerical, Farming-fishing, "
    "Transport-moving, Priv-house-serv, Protective-serv, Armed-Forces",
    "relationship": "Wife, Own-child, Husband, Not-in-family, Other-relative, Unmarried",
    "race": "White, Asian-Pac-Islander, Amer-Indian-Eskimo, Other, Black",
    "sex": "Female, Male",
}
_PRIVILEGED = {"sex": "Male", "race": "White"}
#: The public files and the number of leading lines of each that are not rows.
_FILES = (("adult.data", 0), ("adult.test", 1))
_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"


def adult_schema(sensitive: str = "sex") -> Schema:
    """Adult with ``sex`` (Male privileged) or ``race`` (White privileged) as sensitive column.

    ``education`` is dropped (``education-num`` encodes it) and so is ``native-country``
    (41 sparse categories that add little to a linear model).
    """
    if sensitive not in _PRIVILEGED:
        raise ConfigError(
            f"Adult's sensitive column must be one of {sorted(_PRIVILEGED)}, got {sensitive!r}."
        )
    other = "race" if sensitive == "sex" else "sex"
    cats = {k: tuple(v.split(", ")) for k, v in _CATEGORIES.items()}
    return Schema(
        name="adult",
        features=(
            Column("age", bounds=(17.0, 90.0), integer=True),
            Column("workclass", kind="categorical", categories=cats["workclass"]),
            Column("fnlwgt", bounds=(1.0e4, 1.5e6), integer=True),
            Column("education-num", bounds=(1.0, 16.0), integer=True),
            Column("marital-status", kind="categorical", categories=cats["marital-status"]),
            Column("occupation", kind="categorical", categories=cats["occupation"]),
            Column("relationship", kind="categorical", categories=cats["relationship"]),
            Column(other, kind="categorical", categories=cats[other]),
            Column("capital-gain", bounds=(0.0, 99999.0), integer=True),
            # Dollar amounts in a five-digit census field (capital gains are top-coded at its
            # maximum, 99999): the field's range, not the data's.
            Column("capital-loss", bounds=(0.0, 99999.0), integer=True),
            Column("hours-per-week", bounds=(1.0, 99.0), integer=True),
        ),
        sensitive=sensitive,
        privileged=_PRIVILEGED[sensitive],
        label="income",
        favourable=">50K",
    )


def _parse(path: Path, *, skiprows: int = 0) -> pd.DataFrame:
    """One file in Adult's format, every value a string (``?`` read as missing)."""
    frame = pd.read_csv(path, header=None, names=list(ADULT_COLUMNS), skiprows=skiprows,
                        skipinitialspace=True, na_values="?", dtype=str)
    if len(frame) and tuple(frame.iloc[0]) == ADULT_COLUMNS:  # a file written with a header
        frame = frame.iloc[1:]
    return frame


def _clean(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Labels without the test file's trailing ``.``; rows with a missing value dropped."""
    frame = frame.assign(income=frame["income"].str.rstrip("."))
    before = len(frame)
    frame = frame.dropna().reset_index(drop=True)
    logger.info("adult (%s): dropped %d of %d rows with missing values", source,
                before - len(frame), before)
    return frame


def _read_frame(root: Path, seed: int) -> pd.DataFrame:
    """``adult.data`` and ``adult.test`` pooled, in that order, cleaned."""
    frames = [_parse(require_file(root / name, "adult"), skiprows=skip) for name, skip in _FILES]
    return _clean(pd.concat(frames, ignore_index=True), str(root))


def _read_file(path: Path) -> pd.DataFrame:
    return _clean(_parse(path), path.name)


DATASET = Dataset(
    name="adult",
    description="UCI Adult census income (45,222 complete rows); sensitive: sex (Male "
                "privileged) or race (White privileged)",
    sensitive_columns=("sex", "race"),
    default_sensitive="sex",
    schema_for=adult_schema,
    frame_reader=_read_frame,
    file_reader=_read_file,
    sources=tuple(Source(name, _URL + name, digest) for name, digest in (
        ("adult.data", "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"),
        ("adult.test", "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"),
        ("adult.names", "c248284c0b5de30c9e1958d6cdd168a34a654758b620e68f46aefa83fc0a576a"),
    )),
    header=False,
)
