"""Records of experiment runs: averaging over seeds."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np


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
