"""Records of experiment runs: averaging over seeds, and the Markdown tables every command
prints and writes (``tables.md``), headed by the command line and commit that produced them."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from common.jsonio import write_json


def mean_over_seeds(records: Iterable[dict], keys: Sequence[str],
                    metrics: Sequence[str]) -> list[dict]:
    """Group ``records`` by ``keys``; mean and standard deviation of each metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    out = []
    for key, rows in groups.items():
        row = dict(zip(keys, key))
        row["n_seeds"] = len(rows)
        for m in metrics:
            values = [r[m] for r in rows if r.get(m) is not None and not math.isnan(r[m])]
            row[m] = float(np.mean(values)) if values else float("nan")
            row[m + "_std"] = float(np.std(values)) if values else float("nan")
        out.append(row)
    return out


@dataclasses.dataclass(frozen=True)
class Table:
    """One results table: a title, column names, and rows of already formatted cells."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def markdown(self) -> str:
        escape = lambda cell: str(cell).replace("|", r"\|")  # noqa: E731
        lines = [f"**{self.title}**", "",
                 "| " + " | ".join(escape(h) for h in self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


def _checkout() -> tuple[str, bool] | None:
    """The checkout's short HEAD hash and whether tracked files differ from it (None outside
    a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head, bool(dirty)


def commit() -> str:
    """What a results file records as its commit: the short hash (``+ uncommitted changes``
    when the tree differs from it), or ``unknown`` outside a git checkout."""
    checkout = _checkout()
    if checkout is None:
        return "unknown"
    return checkout[0] + (" + uncommitted changes" if checkout[1] else "")


def write_script_results(path: Path, payload: dict, args: argparse.Namespace) -> None:
    """Write a measuring script's JSON: ``payload`` with the commit (:func:`commit`) and the
    script's arguments, and say where it went."""
    write_json(path, {**payload, "commit": commit(),
                      "args": {k: str(v) for k, v in vars(args).items()}})
    print(f"wrote {path}")


def provenance(argv: Sequence[str]) -> str:
    """Which command and which commit produced a results file: ``fairsynth ARGS`` and the
    short hash of the checkout (``+ uncommitted changes`` when the tree differs from it), or
    ``unknown commit`` outside a git checkout."""
    checkout = _checkout()
    if checkout is None:
        where = "unknown commit"
    else:
        where = f"commit `{checkout[0]}`" + (" + uncommitted changes" if checkout[1] else "")
    command = "fairsynth " + " ".join(shlex.quote(a) for a in argv)
    return f"`{command}` on {where}"


def write_tables(path: Path, tables: Sequence[Table], *, argv: Sequence[str]) -> Path:
    """Write ``tables`` as a Markdown page headed by their provenance, print them, and return
    ``path``: the tables of docs/results.md are pasted from such pages, never typed."""
    page = "\n\n".join([f"Produced by {provenance(argv)}.", *(t.markdown() for t in tables)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page + "\n")
    print(page)
    return path
