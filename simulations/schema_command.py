"""``fairsynth schema draft``: a draft of your own CSV's public schema, for you to review.

A private order on your own CSV needs its schema declared (``--schema FILE``): the column
kinds, category lists, continuous bounds and integer flags, written from domain knowledge,
since a schema read from the rows goes to the server and discloses them. ``schema draft``
writes the schema read from the rows as a starting point (:func:`common.datasets.draft_schema`:
bounds are each column's minimum and maximum rounded outward), marked under the key ``draft``
as read from the data; :func:`common.datasets.read_schema` refuses it until you have reviewed
it, widened what the rows give away, and deleted that key (docs/privacy.md, "Declared
schemas").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import datasets
from common.errors import ConfigError
from simulations import options

#: The settings that name a CSV and the roles of its columns.
CSV_SETTINGS = ("csv", "sensitive", "privileged", "label", "favourable", "drop", "categorical")


def register(sub) -> None:
    parser = sub.add_parser("schema", help="declare the public schema of your own CSV")
    schema_sub = parser.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    draft = schema_sub.add_parser(
        "draft", help="a draft schema read from a CSV's rows (it discloses them: review it)",
        description="Print (or write to --out) the schema of a CSV read from its rows, marked "
                    "as a draft. Review it, widen its category lists and bounds from domain "
                    "knowledge, delete its \"draft\" key, then pass it with --schema.")
    options.add_settings(draft, (), include=CSV_SETTINGS)
    draft.add_argument("--out", type=Path,
                       help="write the draft to this file (default: print it)")
    draft.add_argument("--force", action="store_true", help="replace an existing --out file")
    draft.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = options.run_config(args)
    missing = [f"--{k}" for k in ("csv", "sensitive", "label") if not getattr(config, k)]
    if missing:
        raise ConfigError(f"schema draft needs {' '.join(missing)}: the CSV file, its sensitive "
                          "column and its label column.")
    if args.out is not None and args.out.exists() and not args.force:
        raise ConfigError(f"{args.out} exists (perhaps a schema you have reviewed); pass another "
                          "--out, or --force to replace it.")
    names = config.name_list
    schema = datasets.draft_schema(
        config.csv, sensitive=config.sensitive, privileged=config.privileged or None,
        label=config.label, favourable=config.favourable or None, drop=names["drop"],
        categorical=names["categorical"])
    text = datasets.draft_text(schema, Path(config.csv).name)
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: a draft read from the rows of {config.csv}. Review its categories "
          "and bounds, widen them from domain knowledge, delete its \"draft\" key, then pass "
          f"--schema {args.out}.")
    return 0
