"""Tabular schema and the in-memory dataset every stage works on.

A :class:`Schema` is *public metadata*: column names and kinds, the public category list of
each categorical column, a public value range for each continuous column, which column is the
sensitive attribute (and its privileged value) and which is the label (and its favourable
value). Nothing in it is computed from private rows, so it may be shared with the server and
used by the differentially private generator without spending privacy budget.

A :class:`TabularData` holds the rows of one party: the non-sensitive features in their
original units (continuous as float, categorical as the category's string), the binary
sensitive attribute ``s`` (1 = privileged) and the binary label ``y`` (1 = favourable).

On the wire (between clients and server) rows travel as one float64 matrix with the columns
``[features in schema order (categorical as category index), s, y]``; see
:meth:`TabularData.to_array` and :meth:`TabularData.from_array`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from common.errors import DataError

logger = logging.getLogger(__name__)

ColumnKind = Literal["continuous", "categorical"]

MISSING_COLUMNS = (
    "the data has no column(s) {missing}; it has {present}. Fix the column names in the file "
    "or pass the right names (--sensitive, --label, --drop, --categorical)."
)
NAN_VALUES = (
    "column {column!r} has {count} missing/NaN/inf value(s) (first at row {row}). Drop or "
    "impute those rows before loading: fairsynth never fills values in silently."
)
NAN_FEATURES = (
    "{listing}. Drop or impute those rows before loading: fairsynth "
    "never fills values in silently. Or leave {which} out of the features (for your own CSV: "
    "--drop {names})."
)
NOT_NUMERIC = (
    "column {column!r} is declared continuous but holds non-numeric values such as {example!r}"
    " (row {row}). Clean or drop those rows (for your own CSV, or declare the column "
    "categorical with --categorical {column})."
)
UNKNOWN_CATEGORY = (
    "column {column!r} holds value(s) {values} that are not in its declared categories "
    "{categories}. Add them to the schema or clean the file."
)
SINGLE_VALUE = (
    "the {role} column {column!r} has a single value ({value!r}) in the whole dataset, so "
    "there is nothing to {purpose}. Choose another {role} column or a dataset with both values."
)
NON_BINARY = (
    "the {role} column {column!r} has {count} distinct values {values}; name the {which} value "
    "with --{flag} VALUE so that it is binarised as {which} vs the rest."
)
#: Cells of a text column that are missing values, not values (Adult writes ``?``).
MISSING_TEXT = ("", "?", "nan", "NaN")
VALUE_ABSENT = (
    "the {which} value {value!r} does not occur in the {role} column {column!r} (values: "
    "{values}). Pass one of those values with --{flag}."
)


@dataclasses.dataclass(frozen=True)
class Column:
    """One non-sensitive feature column.

    Parameters
    ----------
    name : str
        Column name in the source file.
    kind : {"continuous", "categorical"}
        Continuous columns are standardised for the linear model; categorical ones one-hot.
    bounds : tuple of float, optional
        Public value range of a continuous column (domain knowledge, not read off the data).
    categories : tuple of str, optional
        Public category list of a categorical column, in a fixed order.
    integer : bool
        The column takes integer values in the real data (used when a generator rounds).
    """

    name: str
    kind: ColumnKind = "continuous"
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("continuous", "categorical"):
            raise DataError(
                f"column {self.name!r} has kind {self.kind!r}; use 'continuous' or 'categorical'."
            )
        if self.kind == "categorical" and not self.categories:
            raise DataError(f"categorical column {self.name!r} needs its list of categories.")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise DataError(f"column {self.name!r} has empty bounds {self.bounds}.")


@dataclasses.dataclass(frozen=True)
class Schema:
    """Public description of a binary-classification dataset with a binary sensitive attribute.

    Parameters
    ----------
    name : str
        Dataset name (used in reports).
    features : tuple of Column
        The non-sensitive features, in model order.
    sensitive, privileged : str
        Sensitive column and the value that marks the privileged group (``s = 1``).
    label, favourable : str
        Label column and the value that marks the favourable outcome (``y = 1``).
    """

    name: str
    features: tuple[Column, ...]
    sensitive: str
    privileged: str
    label: str
    favourable: str

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    @property
    def continuous(self) -> list[Column]:
        return [c for c in self.features if c.kind == "continuous"]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.features if c.kind == "categorical"]

    @property
    def wire_columns(self) -> list[str]:
        """Column names of the wire matrix: features, then ``s`` and ``y``."""
        return [*self.feature_names, self.sensitive, self.label]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def digest(self) -> str:
        """SHA-256 of :meth:`to_json` (canonical: sorted keys), to compare schemas by value."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def difference(self, other: Schema) -> str | None:
        """The first way ``other`` differs from this schema, in words (None if equal)."""
        if other == self:
            return None
        for role in ("sensitive", "privileged", "label", "favourable"):
            if getattr(other, role) != getattr(self, role):
                return f"{role} is {getattr(other, role)!r}, expected {getattr(self, role)!r}"
        if other.feature_names != self.feature_names:
            return f"its feature columns are {other.feature_names}, expected {self.feature_names}"
        for mine, theirs in zip(self.features, other.features):
            if mine != theirs:
                return f"column {mine.name!r} is declared {theirs}, expected {mine}"
        return f"its name is {other.name!r}, expected {self.name!r}"

    @classmethod
    def from_json(cls, text: str) -> Schema:
        try:
            raw = json.loads(text)
            feats = tuple(
                Column(
                    name=c["name"],
                    kind=c["kind"],
                    bounds=tuple(c["bounds"]) if c.get("bounds") is not None else None,
                    categories=tuple(c["categories"]) if c.get("categories") else None,
                    integer=bool(c.get("integer", False)),
                )
                for c in raw["features"]
            )
            return cls(
                name=raw["name"],
                features=feats,
                sensitive=raw["sensitive"],
                privileged=str(raw["privileged"]),
                label=raw["label"],
                favourable=str(raw["favourable"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"malformed schema JSON ({exc!r}); expected Schema.to_json()'s "
                            "output.") from exc


@dataclasses.dataclass(frozen=True)
class TabularData:
    """Rows of one party: features in original units, binary ``s`` and ``y``."""

    schema: Schema
    features: pd.DataFrame
    s: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.s.shape != (n,) or self.y.shape != (n,):
            raise DataError(
                f"features have {n} rows but s has shape {self.s.shape} and y {self.y.shape}."
            )

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: np.ndarray) -> TabularData:
        """Rows ``index`` (positions), as a new dataset with a fresh 0..n-1 index."""
        index = np.asarray(index)
        return TabularData(
            schema=self.schema,
            features=self.features.iloc[index].reset_index(drop=True),
            s=self.s[index],
            y=self.y[index],
        )

    def to_array(self) -> np.ndarray:
        """Wire matrix ``[features (categorical as index), s, y]`` in float64."""
        cols = []
        for col in self.schema.features:
            values = self.features[col.name]
            if col.kind == "categorical":
                codes = pd.Categorical(values, categories=list(col.categories)).codes
                cols.append(codes.astype(np.float64))
            else:
                cols.append(values.to_numpy(dtype=np.float64))
        cols += [self.s.astype(np.float64), self.y.astype(np.float64)]
        return np.column_stack(cols) if cols else np.empty((0, 0))

    @classmethod
    def from_array(cls, array: np.ndarray, schema: Schema) -> TabularData:
        """Inverse of :meth:`to_array`; raises :class:`DataError` on a malformed matrix."""
        array = np.asarray(array)
        q = len(schema.features) + 2
        if array.ndim != 2 or array.shape[1] != q:
            raise DataError(
                f"expected a 2-D array with {q} columns {schema.wire_columns}, got shape "
                f"{array.shape}."
            )
        if not np.issubdtype(array.dtype, np.number):
            raise DataError(f"expected a numeric array, got dtype {array.dtype}.")
        if not np.all(np.isfinite(array)):
            raise DataError("the array holds NaN or inf values.")
        s, y = array[:, -2], array[:, -1]
        for role, v in (("sensitive", s), ("label", y)):
            if not np.all((v == 0) | (v == 1)):
                bad = np.unique(v[(v != 0) & (v != 1)])[:5]
                raise DataError(f"the {role} column must be 0/1, found {bad.tolist()}.")
        data = {}
        for j, col in enumerate(schema.features):
            if col.kind == "categorical":
                codes = array[:, j]
                k = len(col.categories)
                if not np.all((codes == np.round(codes)) & (codes >= 0) & (codes < k)):
                    raise DataError(
                        f"categorical column {col.name!r} must hold integer codes in [0, {k})."
                    )
                data[col.name] = np.asarray(col.categories, dtype=object)[codes.astype(int)]
            else:
                data[col.name] = array[:, j]
        return cls(
            schema=schema,
            features=pd.DataFrame(data, columns=schema.feature_names),
            s=s.astype(np.int8),
            y=y.astype(np.int8),
        )

    def check_measure(self, measure: str) -> None:
        """Raise if the fairness gap of ``measure`` (``"sp"``/``"eo"``) is undefined on these
        rows: a group without rows, or (equal opportunity) without favourable rows."""
        for a in (0, 1):
            name = "privileged" if a == 1 else "unprivileged"
            if not np.any(self.s == a):
                raise DataError(f"the {name} group (s = {a}) has no rows, so no fairness gap is "
                                "defined; check --sensitive and --privileged.")
            if measure == "eo" and not np.any((self.s == a) & (self.y == 1)):
                raise DataError(
                    f"no row of the {name} group (s = {a}) has the favourable label, so equal "
                    "opportunity is undefined on this dataset; use --measure sp or check "
                    "--favourable."
                )

    def cell_counts(self) -> dict[tuple[int, int], int]:
        """Rows per ``(s, y)`` cell."""
        return {(a, b): int(np.sum((self.s == a) & (self.y == b))) for a in (0, 1) for b in (0, 1)}


def binarise(
    values: pd.Series, *, role: str, column: str, positive: str | None, which: str, flag: str
) -> tuple[np.ndarray, str]:
    """Map a column to 0/1 with ``positive`` as 1. Returns the array and the positive value."""
    as_text = values.astype(str).str.strip()
    uniques = sorted(as_text.unique().tolist())
    if len(uniques) == 1:
        purpose = "compare" if role == "sensitive" else "predict"
        raise DataError(
            SINGLE_VALUE.format(role=role, column=column, value=uniques[0], purpose=purpose)
        )
    if positive is None:
        if len(uniques) > 2:
            raise DataError(
                NON_BINARY.format(
                    role=role, column=column, count=len(uniques), values=uniques[:10],
                    which=which, flag=flag,
                )
            )
        raise DataError(
            NON_BINARY.format(
                role=role, column=column, count=2, values=uniques, which=which, flag=flag
            )
        )
    positive_text = str(positive).strip()
    matches = as_text == positive_text
    if not matches.any():
        # Accept numeric spellings: "1" for a column read as 1.0.
        try:
            numeric = pd.to_numeric(values, errors="raise").astype(float)
            matches = numeric == float(positive_text)
        except (ValueError, TypeError):
            pass
    if not matches.any():
        raise DataError(
            VALUE_ABSENT.format(
                which=which, value=positive, role=role, column=column, values=uniques[:10],
                flag=flag
            )
        )
    if len(uniques) > 2:
        logger.warning(
            "%s column %r has %d values; binarised as %r vs the rest.",
            role, column, len(uniques), positive_text,
        )
    return matches.to_numpy().astype(np.int8), positive_text


def from_frame(frame: pd.DataFrame, schema: Schema) -> TabularData:
    """Validate a raw frame against ``schema`` and build a :class:`TabularData`.

    Raises
    ------
    DataError
        On missing columns, NaN/inf, non-numeric continuous values, unknown categories, or a
        sensitive/label column that cannot be binarised. Messages name the column and the fix.
    """
    needed = [*schema.feature_names, schema.sensitive, schema.label]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(MISSING_COLUMNS.format(missing=missing, present=list(frame.columns)))
    if len(frame) == 0:
        raise DataError("the data has no rows.")
    for column in (schema.sensitive, schema.label):
        _check_no_missing(frame[column], column)
    s, _ = binarise(
        frame[schema.sensitive], role="sensitive", column=schema.sensitive,
        positive=schema.privileged, which="privileged", flag="privileged",
    )
    y, _ = binarise(
        frame[schema.label], role="label", column=schema.label,
        positive=schema.favourable, which="favourable", flag="favourable",
    )
    _check_features_complete(frame, schema.feature_names)
    features = {}
    for col in schema.features:
        values = frame[col.name]
        if col.kind == "continuous":
            numeric = pd.to_numeric(values, errors="coerce")
            bad = numeric.isna()
            if bad.any():
                example = values[bad].iloc[0]
                row = int(np.argmax(bad.to_numpy()))
                raise DataError(NOT_NUMERIC.format(column=col.name, example=example, row=row))
            arr = numeric.to_numpy(dtype=np.float64)
            _check_no_missing(pd.Series(arr), col.name)
            features[col.name] = arr
        else:
            text = values.astype(str).str.strip()
            unknown = sorted(set(text.unique()) - set(col.categories))
            if unknown:
                raise DataError(
                    UNKNOWN_CATEGORY.format(
                        column=col.name, values=unknown[:5], categories=list(col.categories)[:20]
                    )
                )
            features[col.name] = text.to_numpy(dtype=object)
    return TabularData(
        schema=schema,
        features=pd.DataFrame(features, columns=schema.feature_names),
        s=s,
        y=y,
    )


def _missing(values: pd.Series) -> np.ndarray:
    """Which cells of ``values`` are missing: NaN, ±inf, or a :data:`MISSING_TEXT` marker."""
    bad = values.isna().to_numpy()
    if values.dtype.kind == "f":
        bad = bad | ~np.isfinite(values.to_numpy())
    if values.dtype == object or values.dtype.kind in "OUT":
        bad = bad | values.astype(str).str.strip().isin(MISSING_TEXT).to_numpy()
    return bad


def _check_no_missing(values: pd.Series, column: str) -> None:
    bad = _missing(values)
    if bad.any():
        raise DataError(
            NAN_VALUES.format(column=column, count=int(bad.sum()), row=int(np.argmax(bad)))
        )


def _check_features_complete(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Every feature column with a missing cell, named in one error (most missing first), so
    that a raw table is mended in one pass rather than one column at a time."""
    found = []
    for column in columns:
        bad = _missing(frame[column])
        if bad.any():
            found.append((int(bad.sum()), column, int(np.argmax(bad))))
    if not found:
        return
    found.sort(key=lambda f: -f[0])
    if len(found) == 1:
        count, column, row = found[0]
        listing = f"column {column!r} has {count} missing/NaN/inf value(s) (first at row {row})"
    else:
        shown = ", ".join(f"{c!r} ({n}, first at row {r})" for n, c, r in found[:12])
        more = f" and {len(found) - 12} more" if len(found) > 12 else ""
        listing = f"{len(found)} feature columns have missing/NaN/inf values: {shown}{more}"
    raise DataError(NAN_FEATURES.format(
        listing=listing, which="the column" if len(found) == 1 else "those columns",
        names=",".join(c for _, c, _ in found)))


def concat(parts: Sequence[TabularData]) -> TabularData:
    """Stack datasets that share one schema."""
    if not parts:
        raise DataError("nothing to concatenate: no datasets given.")
    schema = parts[0].schema
    if any(p.schema != schema for p in parts):
        raise DataError("cannot concatenate datasets with different schemas.")
    return TabularData(
        schema=schema,
        features=pd.concat([p.features for p in parts], ignore_index=True),
        s=np.concatenate([p.s for p in parts]),
        y=np.concatenate([p.y for p in parts]),
    )
