"""Tabular rows as real vectors and back, for the deep generative fair steps (Fair4Free, FADM)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from common.errors import DataError
from common.schema import Schema, TabularData


@dataclasses.dataclass
class RowCodec:
    """Rows as vectors: standardised continuous columns (a constant column: scale 1), one-hot
    categories and, with ``label``, the label as one 0/1 entry (last)."""

    schema: Schema
    mean: np.ndarray
    std: np.ndarray
    label: bool = True

    @classmethod
    def fit(cls, data: TabularData, *, label: bool = True) -> RowCodec:
        cont = [c.name for c in data.schema.continuous]
        values = data.features[cont].to_numpy(dtype=np.float64)
        std = values.std(axis=0) if len(cont) else np.ones(0)
        return cls(data.schema, values.mean(axis=0) if len(cont) else np.zeros(0),
                   np.where(np.ptp(values, axis=0) > 0, std, 1.0) if len(cont) else std,
                   label)

    @property
    def blocks(self) -> list[tuple[str, str, slice]]:
        """``(name, kind, slice)`` of every column in the vector, the label last."""
        out, at = [], 0
        for c in self.schema.features:
            width = len(c.categories) if c.kind == "categorical" else 1
            out.append((c.name, c.kind, slice(at, at + width)))
            at += width
        if self.label:
            out.append(("__label__", "label", slice(at, at + 1)))
        return out

    @property
    def width(self) -> int:
        return self.blocks[-1][2].stop

    def encode(self, data: TabularData) -> np.ndarray:
        x = np.zeros((len(data), self.width))
        ci = 0
        for (name, kind, sl), col in zip(self.blocks, [*self.schema.features, None]):
            if kind == "label":
                x[:, sl.start] = data.y
            elif kind == "categorical":
                code = pd.Categorical(data.features[name].astype(str),
                                      categories=list(col.categories)).codes
                if (code < 0).any():
                    raise DataError(f"column {name!r} holds values outside its declared "
                                    f"categories {list(col.categories)}.")
                x[np.arange(len(data)), sl.start + code] = 1.0
            else:
                x[:, sl.start] = (data.features[name].to_numpy(np.float64) - self.mean[ci]) \
                    / self.std[ci]
                ci += 1
        return x

    def loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``x`` under the decoder's output (per row, summed over
        columns): unit-variance Gaussian for a continuous column, softmax for a categorical
        one, Bernoulli for the label."""
        total = out.new_zeros(len(out))
        for _, kind, sl in self.blocks:
            if kind == "categorical":
                total = total + F.cross_entropy(out[:, sl], x[:, sl].argmax(dim=1),
                                                reduction="none")
            elif kind == "label":
                total = total + F.binary_cross_entropy_with_logits(out[:, sl.start],
                                                                   x[:, sl.start],
                                                                   reduction="none")
            else:
                total = total + 0.5 * (out[:, sl.start] - x[:, sl.start]) ** 2
        return total

    def decode(self, out: np.ndarray, s: np.ndarray, rng: np.random.Generator | None = None,
               *, y: np.ndarray | None = None) -> TabularData:
        """Rows from a vector per row: continuous values (clipped to declared bounds); with
        ``rng``, categories and labels drawn from the softmax and sigmoid of their entries (a
        decoder's logits), without it the largest entry's category (a one-hot sample). ``y``:
        the labels, for a codec without a label entry."""
        columns, ci = {}, 0
        for (name, kind, sl), col in zip(self.blocks, [*self.schema.features, None]):
            if kind == "label":
                p = 1.0 / (1.0 + np.exp(-out[:, sl.start]))
                y = ((rng.random(len(out)) < p) if rng is not None else p > 0.5).astype(np.int8)
            elif kind == "categorical" and rng is None:
                columns[name] = np.asarray(col.categories, dtype=object)[
                    out[:, sl].argmax(axis=1)]
            elif kind == "categorical":
                logits = out[:, sl] - out[:, sl].max(axis=1, keepdims=True)
                prob = np.exp(logits)
                prob /= prob.sum(axis=1, keepdims=True)
                pick = (prob.cumsum(axis=1) < rng.random((len(out), 1))).sum(axis=1)
                columns[name] = np.asarray(col.categories, dtype=object)[
                    np.minimum(pick, prob.shape[1] - 1)]
            else:
                v = out[:, sl.start] * self.std[ci] + self.mean[ci]
                if col.bounds is not None:
                    v = np.clip(v, *col.bounds)
                if col.integer:
                    v = np.rint(v)
                columns[name] = v
                ci += 1
        features = pd.DataFrame(columns, columns=self.schema.feature_names)
        if y is None:
            raise ValueError("decode: a codec without a label entry needs y.")
        return TabularData(self.schema, features, s=s.astype(np.int8), y=np.asarray(y, np.int8))
