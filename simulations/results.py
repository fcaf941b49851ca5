"""Records of experiment runs: writing ``results.json`` and averaging over seeds."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def write_json(path: Path, payload) -> Path:
    """Write ``payload`` atomically (a temp file renamed into place: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


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
