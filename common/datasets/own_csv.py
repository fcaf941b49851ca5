"""A CSV file of your own (``--csv``): not a named dataset, so nothing about it is public until
its owner declares it.

Two ways to read one:

* **with a declared schema** (``--schema FILE``, :func:`read_schema`): the column kinds,
  category lists, bounds and integer flags come from that file, which the user wrote from
  domain knowledge; the rows are held to it (a value outside a declared category list or
  bound is refused, never clipped or added). Nothing in the schema depends on the rows, so
  it may be sent to the server and used by the DP generator without spending budget. The
  private orders require it (:class:`common.run_config.RunConfig` refuses them without one).
* **without one**: the schema is read from the rows (category lists, continuous vs
  categorical), and the roles of the columns come from the flags. One row with a rare
  category changes such a schema, so it discloses the rows: fine for the non-private orders,
  not for a differentially private release.

``fairsynth schema draft`` (:func:`draft_schema`, :func:`draft_text`) writes the schema read
from the rows, with each continuous column's bounds (its minimum and maximum rounded outward,
:func:`nice_bounds`), as a *draft*: a file that says, under the key :data:`DRAFT_KEY`, that it
was read from the data. :func:`read_schema` refuses it until the user has reviewed it and
deleted that key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import DataError
from common.schema import MISSING_TEXT, Column, Schema, TabularData, binarise, from_frame

logger = logging.getLogger(__name__)

#: The key that marks a drafted schema file as read from the rows (see the module docstring).
DRAFT_KEY = "draft"

DRAFT_NOTE = (
    "read from {file}: every category list and bound below comes from the rows and discloses "
    "them (bounds: each continuous column's minimum and maximum, rounded outward to a multiple "
    "of the power of ten below its range; integer: every value is a whole number). Review and "
    "widen them from domain knowledge, then delete this key"
)
DRAFT_LEFT = (
    "{schema} is still a draft: its {key!r} key says that its categories and bounds were read "
    "from the rows, so they disclose them. Review every category list and bound (widen them "
    "from domain knowledge), then delete the {key!r} key."
)
SCHEMA_MISSING = (
    "the schema file {schema} does not exist. Draft one with `fairsynth schema draft --csv "
    "FILE --sensitive COL --privileged V --label COL --favourable V --out {schema}`, review "
    "it, then pass it with --schema."
)
OUTSIDE_CATEGORIES = (
    "column {column!r} of {file} has {count} row(s) with value(s) {values} outside the "
    "categories that {schema} declares {categories}. Add them to the column's categories in "
    "{schema} (from domain knowledge, not from these rows), or remove those rows."
)
OUTSIDE_BOUNDS = (
    "column {column!r} of {file} has {count} row(s) outside the bounds [{lo:g}, {hi:g}] that "
    "{schema} declares (such as {example:g}). Widen the column's bounds in {schema} (from "
    "domain knowledge, not from these rows), or remove those rows."
)
IDENTIFIERS = (
    "{listing} of {file} hold{s} a different value in nearly every row: identifiers or free "
    "text (names, case numbers, timestamps), not features. A model cannot learn from them, and "
    "their categories would disclose the rows. Leave them out with --drop {names}."
)
MANY_CATEGORIES = (
    "column %r of %s has %d categories (%.0f rows each on average): each is a feature of its "
    "own, and a DP generator's noise drowns the rare ones. Consider merging them into fewer "
    "categories, or --drop %s."
)
#: A text column with more distinct values than this share of the rows (and more than
#: :data:`MIN_IDENTIFIER_VALUES`) is refused as an identifier; one with more than
#: :data:`MANY_CATEGORY_WARNING` categories is accepted with a warning.
IDENTIFIER_SHARE = 0.5
MIN_IDENTIFIER_VALUES = 20
MANY_CATEGORY_WARNING = 100
DECLARED_NOT_NUMERIC = (
    "column {column!r} of {file} is continuous in {schema} but holds {count} non-numeric "
    "value(s) such as {example!r} (row {row}). Clean or drop those rows, or declare the column "
    "categorical in {schema} with its list of categories."
)


def load_csv(
    path: str | os.PathLike,
    *,
    sensitive: str | None = None,
    privileged: str | None = None,
    label: str | None = None,
    favourable: str | None = None,
    drop: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name: str | None = None,
    schema: Schema | str | os.PathLike | None = None,
) -> TabularData:
    """Load any CSV, held to a declared ``schema`` when one is given.

    Parameters
    ----------
    path : the CSV file.
    sensitive, privileged, label, favourable : the roles of the columns (``--sensitive`` ...).
        Required without ``schema``; with one they may be left out (the schema names them),
        and when given they must agree with it.
    drop, categorical : without ``schema``, the columns to ignore and the columns that are
        categorical (any non-numeric column is too). With one, the schema decides; these may
        only repeat what it says (a dropped column it declares, or a column it declares
        continuous named categorical, is an error).
    name : the dataset's name without ``schema`` (default: the file's stem).
    schema : a declared :class:`Schema`, or the path of its JSON file (:func:`read_schema`).
        Columns of the file that it does not declare are ignored.

    Without ``schema``, columns named in ``categorical`` (and any non-numeric column) are
    categorical with the categories found in the file, all others continuous; bounds are left
    undeclared, so a DP generator must spend budget to learn them (it says so in its report).

    Raises
    ------
    DataError
        When the file cannot be read, a column is missing, or (with ``schema``) a value lies
        outside the declared categories or bounds or is not a number in a continuous column;
        the message names the column, the problem and the fix.
    """
    path = Path(path)
    frame = _read_frame(path)
    _check_named(frame, path, drop, categorical)
    if schema is not None:
        source = "the declared schema"
        if not isinstance(schema, Schema):
            source, schema = Path(schema).name, read_schema(schema)
        roles = {"sensitive": sensitive, "privileged": privileged, "label": label,
                 "favourable": favourable}
        return _load_declared(frame, path, schema, source, roles, drop, categorical)
    return from_frame(frame, _read_schema_from_rows(
        frame, path, sensitive=sensitive, privileged=privileged, label=label,
        favourable=favourable, drop=drop, categorical=categorical, name=name))


# --------------------------------------------------------------------------- declared schemas


def read_schema(path: str | os.PathLike) -> Schema:
    """A declared schema from its JSON file (:meth:`Schema.to_json`'s keys; indentation free).

    Raises
    ------
    DataError
        When the file is missing, is not JSON, still carries the draft key :data:`DRAFT_KEY`,
        or declares something no table can follow (no features, a feature declared twice or
        also the sensitive or label column, bounds that are not two increasing numbers, a
        category that is not a string or is listed twice).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(SCHEMA_MISSING.format(schema=path))
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the schema file {path} is not JSON ({exc}); write it as `fairsynth "
                        "schema draft` does.") from exc
    if isinstance(raw, dict) and DRAFT_KEY in raw:
        raise DataError(DRAFT_LEFT.format(schema=path.name, key=DRAFT_KEY))
    problem = _declaration_problem(raw)
    if problem:
        raise DataError(f"the schema file {path.name} {problem}; fix it there.")
    try:
        return Schema.from_json(text)
    except DataError as exc:
        raise DataError(f"the schema file {path.name}: {exc}") from exc


def _declaration_problem(raw: object) -> str | None:
    """What in a schema file's JSON no table can follow (None: nothing, or a shape that
    :meth:`Schema.from_json` names itself)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), list):
        return None
    if not raw["features"]:
        return "declares no feature columns"
    columns = [c for c in raw["features"] if isinstance(c, dict)]
    names = [c.get("name") for c in columns]
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        return f"declares the feature(s) {twice} more than once"
    roles = [n for n in names if n in (raw.get("sensitive"), raw.get("label"))]
    if roles:
        return f"declares the sensitive/label column(s) {roles} as features too"
    for col in columns:
        bounds, cats = col.get("bounds"), col.get("categories")
        if col.get("kind") == "continuous" and bounds is not None and not (
                isinstance(bounds, list) and len(bounds) == 2
                and all(_is_number(b) for b in bounds)):
            return f"gives column {col.get('name')!r} the bounds {bounds!r}; write [low, high]"
        if col.get("kind") == "categorical" and cats:
            if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
                return (f"lists the categories {cats!r} of column {col.get('name')!r}; write a "
                        "list of strings (\"1\", not 1)")
            if len(set(cats)) < len(cats):
                return f"lists a category of column {col.get('name')!r} twice"
    return None


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _load_declared(frame: pd.DataFrame, path: Path, schema: Schema, source: str,
                   roles: dict[str, str | None], drop: Sequence[str],
                   categorical: Sequence[str]) -> TabularData:
    """``frame`` held to the declared ``schema`` (see :func:`load_csv`)."""
    for role, given in roles.items():
        if given not in (None, "") and str(given).strip() != getattr(schema, role):
            raise DataError(
                f"--{role} {given!r} contradicts {source}, which declares the {role} "
                f"{'value' if role in ('privileged', 'favourable') else 'column'} "
                f"{getattr(schema, role)!r}; leave the flag out (the schema names it) or make "
                "the two agree."
            )
    declared = {c.name: c for c in schema.features}
    clash = [c for c in drop if c in declared]
    clash += [c for c in categorical if c in declared and declared[c].kind != "categorical"]
    if clash:
        raise DataError(f"--drop/--categorical name column(s) {clash} that {source} declares "
                        "otherwise; the schema decides: remove them from the flags, or change "
                        "the schema.")
    missing = [c for c in (*declared, schema.sensitive, schema.label) if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} has no column(s) {missing}, which {source} declares; its "
                        f"columns are {list(frame.columns)}. Fix the file or the schema.")
    where = {"file": path.name, "schema": source}
    for col in schema.features:
        values = frame[col.name]
        present = (values.notna() & ~values.astype(str).str.strip().isin(MISSING_TEXT))
        if col.kind == "continuous":  # missing cells: from_frame names them
            text = (pd.to_numeric(values, errors="coerce").isna() & present).to_numpy()
            if text.any():
                row = int(np.argmax(text))
                raise DataError(DECLARED_NOT_NUMERIC.format(
                    column=col.name, count=int(text.sum()), example=values.iloc[row], row=row,
                    **where))
        else:
            cells = values.astype(str).str.strip()
            outside = (~cells.isin(col.categories) & present).to_numpy()
            if outside.any():
                raise DataError(OUTSIDE_CATEGORIES.format(
                    column=col.name, count=int(outside.sum()),
                    values=sorted(set(cells[outside]))[:5],
                    categories=list(col.categories)[:20], **where))
    data = from_frame(frame, schema)
    for col in schema.continuous:
        if col.bounds is None:
            continue
        lo, hi = col.bounds
        values = data.features[col.name].to_numpy(dtype=np.float64)
        outside = (values < lo) | (values > hi)
        if outside.any():
            raise DataError(OUTSIDE_BOUNDS.format(
                column=col.name, count=int(outside.sum()), lo=lo, hi=hi,
                example=float(values[outside][0]), **where))
    return data


def _check_not_identifiers(frame: pd.DataFrame, path: Path, feats: Sequence[Column]) -> None:
    """Refuse text columns that are (nearly) unique per row; warn of very many categories and
    of a whole-number column with a different value in every row (an identifier, perhaps)."""
    n = len(frame)
    unique = [c.name for c in feats if c.kind == "categorical"
              and len(c.categories) > max(IDENTIFIER_SHARE * n, MIN_IDENTIFIER_VALUES)]
    if unique:
        listing = ", ".join(f"{c!r} ({frame[c].nunique()} values in {n} rows)" for c in unique)
        raise DataError(IDENTIFIERS.format(
            listing=f"column{'s' if len(unique) > 1 else ''} {listing}", file=path.name,
            s="" if len(unique) > 1 else "s", names=",".join(unique)))
    for col in feats:
        if col.kind == "categorical" and len(col.categories) > MANY_CATEGORY_WARNING:
            logger.warning(MANY_CATEGORIES, col.name, path.name, len(col.categories),
                           n / len(col.categories), col.name)
        elif col.kind == "continuous" and n >= 2 * MIN_IDENTIFIER_VALUES:
            values = pd.to_numeric(frame[col.name], errors="coerce").dropna()
            if (len(values) == n and values.is_unique
                    and bool(np.all(values == np.round(values)))):
                logger.warning("column %r of %s holds a different whole number in every row: "
                               "if it is an identifier, leave it out with --drop %s.",
                               col.name, path.name, col.name)


# --------------------------------------------------------------------------- drafts


def draft_schema(
    path: str | os.PathLike,
    *,
    sensitive: str | None,
    privileged: str | None,
    label: str | None,
    favourable: str | None,
    drop: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name: str | None = None,
) -> Schema:
    """The schema read from the rows of ``path`` (as :func:`load_csv` without a schema reads
    it), with every continuous column's bounds (:func:`nice_bounds` of its minimum and
    maximum) and integer flag (every value a whole number). A draft: it discloses the rows
    until a person has reviewed it (:func:`draft_text` writes it with the mark that says so).

    Raises
    ------
    DataError
        As :func:`load_csv` does: the file must load without a schema.
    """
    data = load_csv(path, sensitive=sensitive, privileged=privileged, label=label,
                    favourable=favourable, drop=drop, categorical=categorical, name=name)
    features = []
    for col in data.schema.features:
        if col.kind == "continuous":
            values = data.features[col.name].to_numpy(dtype=np.float64)
            col = dataclasses.replace(col, bounds=nice_bounds(values.min(), values.max()),
                                      integer=bool(np.all(values == np.round(values))))
        features.append(col)
    return dataclasses.replace(data.schema, features=tuple(features))


def draft_text(schema: Schema, source: str) -> str:
    """``schema`` as an indented JSON file, its first key :data:`DRAFT_KEY` saying that it was
    read from ``source`` (so :func:`read_schema` refuses it until that key is deleted)."""
    payload = {DRAFT_KEY: DRAFT_NOTE.format(file=source), **dataclasses.asdict(schema)}
    lines = []
    for key, value in payload.items():
        if key == "features":  # one column a line
            columns = ",\n".join(f"    {json.dumps(c, ensure_ascii=False)}" for c in value)
            lines.append(f'  "features": [\n{columns}\n  ]')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def nice_bounds(low: float, high: float) -> tuple[float, float]:
    """``[low, high]`` widened outward to multiples of the power of ten below its width
    (18–69 → 10–70, 0.12–0.97 → 0.1–1, −3.2–3.5 → −4–4); a single value ``v`` gets
    ``v ± 10^⌊log10 |v|⌋`` (``0 ± 1``)."""
    low, high = float(low), float(high)
    scale = high - low if high > low else max(abs(low), 1.0)
    step = 10.0 ** math.floor(math.log10(scale))
    lo, hi = math.floor(low / step), math.ceil(high / step)
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if _nice(lo, step) > low:  # a quotient rounded onto a whole number: one step further
        lo -= 1
    if _nice(hi, step) < high:
        hi += 1
    return _nice(lo, step), _nice(hi, step)


def _nice(k: int, step: float) -> float:
    """``k · step`` without the float noise of the product (0.30000000000000004 → 0.3)."""
    return float(f"{k * step:.12g}")


# --------------------------------------------------------------------------- schema from rows


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the path of a CSV file with --csv.")
    try:
        return pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}).") from exc


def _check_named(frame: pd.DataFrame, path: Path, drop: Sequence[str],
                 categorical: Sequence[str]) -> None:
    unknown = [c for c in [*drop, *categorical] if c not in frame.columns]
    if unknown:
        raise DataError(
            f"--drop/--categorical name column(s) {unknown} that {path.name} does not have; "
            f"its columns are {list(frame.columns)}."
        )


def _read_schema_from_rows(
    frame: pd.DataFrame, path: Path, *, sensitive: str | None, privileged: str | None,
    label: str | None, favourable: str | None, drop: Sequence[str],
    categorical: Sequence[str], name: str | None,
) -> Schema:
    """Every column but the sensitive, label and dropped ones is a feature (see
    :func:`load_csv`)."""
    for role, col in (("sensitive", sensitive), ("label", label)):
        if not col:
            raise DataError(f"name the {role} column of {path.name} with --{role} (or declare "
                            "it in a schema file, --schema).")
        if col not in frame.columns:
            raise DataError(
                f"the {role} column {col!r} is not in {path.name}; its columns are "
                f"{list(frame.columns)}. Fix --{role}."
            )
    for role, col, value, which in (("sensitive", sensitive, privileged, "privileged"),
                                    ("label", label, favourable, "favourable")):
        if value is None:  # raises: names the values and the flag to pass
            binarise(frame[col], role=role, column=col, positive=None, which=which, flag=which)
    feats = []
    for col in frame.columns:
        if col in (sensitive, label) or col in drop:
            continue
        numeric = pd.to_numeric(frame[col], errors="coerce")
        text = (numeric.isna() & frame[col].notna()).to_numpy()
        if col not in categorical and text.any() and text.mean() < 0.5 * frame[col].notna().mean():
            # Mostly numbers with some text: a typo or a missing-value marker, not categories.
            row = int(np.argmax(text))
            raise DataError(
                f"column {col!r} is numeric except for {int(text.sum())} value(s) such as "
                f"{frame[col].iloc[row]!r} (row {row}). Fix or drop those rows, or declare the "
                f"column categorical with --categorical {col}."
            )
        if col in categorical or text.any():
            cats = tuple(sorted(frame[col].dropna().astype(str).str.strip().unique()))
            feats.append(Column(col, kind="categorical", categories=cats))
        else:
            feats.append(Column(col))
    if not feats:
        raise DataError(f"{path.name} has no feature columns left after --drop.")
    _check_not_identifiers(frame, path, feats)
    return Schema(
        name=name or path.stem, features=tuple(feats), sensitive=sensitive,
        privileged=str(privileged), label=label, favourable=str(favourable),
    )
