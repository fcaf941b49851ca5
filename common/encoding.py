"""Numeric encoding for the linear model: ``x = [z, s, 1]``.

Continuous columns are standardised with the fitting party's own mean and standard deviation;
categorical columns are one-hot over the schema's public category list. The design matrix
appends the sensitive attribute and an intercept column, as in METHOD.md (§ Data and notation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.errors import ConfigError
from common.schema import Schema, TabularData


@dataclasses.dataclass(frozen=True)
class Encoder:
    """Standardise continuous columns, one-hot categorical ones.

    Use :meth:`fit` on one party's rows; the same encoder then maps any rows of the same
    schema, and :meth:`inverse` maps encoded continuous values back to original units.
    """

    schema: Schema
    mean: np.ndarray  # one entry per continuous column
    std: np.ndarray

    @classmethod
    def fit(cls, data: TabularData) -> Encoder:
        cont = [c.name for c in data.schema.continuous]
        values = (data.features[cont].to_numpy(dtype=np.float64) if cont
                  else np.empty((len(data), 0)))
        mean = values.mean(axis=0) if len(values) else np.zeros(len(cont))
        std = values.std(axis=0) if len(values) else np.ones(len(cont))
        varies = np.ptp(values, axis=0) > 0 if len(values) else np.zeros(len(cont), bool)
        std = np.where(varies, std, 1.0)  # a constant column stays constant (zero) after scaling
        return cls(schema=data.schema, mean=mean, std=std)

    @classmethod
    def from_bounds(cls, schema: Schema) -> Encoder:
        """Scaling from the schema's declared bounds alone (no rows read): each continuous
        column ``[lo, hi]`` maps onto ``[-1, 1]`` (centre ``(lo + hi)/2``, half-width
        ``(hi − lo)/2``). What a party may use when even the column moments are private."""
        missing = [c.name for c in schema.continuous if c.bounds is None]
        if missing:
            raise ConfigError(
                f"the schema declares no bounds for the continuous column(s) {missing}; a "
                "scaling that reads no rows needs them. Add \"bounds\": [low, high] to each in "
                "the declared schema (`fairsynth schema draft` proposes them).")
        lo = np.array([c.bounds[0] for c in schema.continuous], dtype=np.float64)
        hi = np.array([c.bounds[1] for c in schema.continuous], dtype=np.float64)
        return cls(schema=schema, mean=(lo + hi) / 2.0, std=(hi - lo) / 2.0)

    @property
    def blocks(self) -> list[tuple[str, slice]]:
        """Position of each feature's block in ``z`` (width 1, or the number of categories)."""
        out, start = [], 0
        for col in self.schema.features:
            width = 1 if col.kind == "continuous" else len(col.categories)
            out.append((col.name, slice(start, start + width)))
            start += width
        return out

    @property
    def n_z(self) -> int:
        """Width of ``z`` (the non-sensitive encoded features)."""
        return sum(1 if c.kind == "continuous" else len(c.categories) for c in self.schema.features)

    @property
    def continuous_mask(self) -> np.ndarray:
        """Boolean mask over ``z``: True where the entry encodes a continuous column."""
        mask = np.zeros(self.n_z, dtype=bool)
        for col, (_, sl) in zip(self.schema.features, self.blocks):
            mask[sl] = col.kind == "continuous"
        return mask

    def encode_z(self, data: TabularData) -> np.ndarray:
        """The ``N × n_z`` matrix ``z``."""
        z = np.empty((len(data), self.n_z))
        ci = 0
        for col, (_, sl) in zip(self.schema.features, self.blocks):
            values = data.features[col.name]
            if col.kind == "continuous":
                z[:, sl.start] = (values.to_numpy(dtype=np.float64) - self.mean[ci]) / self.std[ci]
                ci += 1
            else:
                idx = {c: i for i, c in enumerate(col.categories)}
                codes = values.map(idx).to_numpy(dtype=np.int64)
                block = np.zeros((len(data), sl.stop - sl.start))
                block[np.arange(len(data)), codes] = 1.0
                z[:, sl] = block
        return z

    def design(self, data: TabularData) -> np.ndarray:
        """The ``N × p`` design matrix ``[z, s, 1]``."""
        return design_matrix(self.encode_z(data), data.s)

    def z_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The declared bounds of each continuous column in ``z``'s units (``−∞, ∞`` for the
        one-hot entries and for columns declared without bounds)."""
        lo, hi = np.full(self.n_z, -np.inf), np.full(self.n_z, np.inf)
        ci = 0
        for col, (_, sl) in zip(self.schema.features, self.blocks):
            if col.kind != "continuous":
                continue
            if col.bounds is not None:
                lo[sl.start] = (col.bounds[0] - self.mean[ci]) / self.std[ci]
                hi[sl.start] = (col.bounds[1] - self.mean[ci]) / self.std[ci]
            ci += 1
        return lo, hi

    def decode_continuous(self, z: np.ndarray) -> np.ndarray:
        """Continuous entries of ``z`` back in original units (``N × n_continuous``)."""
        return z[:, self.continuous_mask] * self.std + self.mean


def design_matrix(z: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``[z, s, 1]``: the linear model's input."""
    n = len(z)
    return np.column_stack([z, np.asarray(s, dtype=np.float64), np.ones(n)])
