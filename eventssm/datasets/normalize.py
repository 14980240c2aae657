"""Per-channel standardisation whose statistics come from the training split only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Standardizer"]


class Standardizer:
    """``(x - mean) / std`` per channel, NaN-aware (missing observations are ignored).

    Fit it on the training sequences only, then apply it to every split. A channel that is
    constant (or never observed) in training gets ``std = 1`` (and ``mean = 0`` if never
    observed) rather than a division by zero.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, arrays: Sequence[np.ndarray]) -> Standardizer:
        """Fit on a list of ``(L_i, C)`` (or ``(C,)`` rows stacked) arrays."""
        if len(arrays) == 0:
            raise ValueError("cannot fit normalisation statistics on an empty training split")
        x = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1])
                            for a in arrays], axis=0)
        seen = np.isfinite(x)
        count = seen.sum(0)
        total = np.where(seen, x, 0.0).sum(0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        var = np.where(seen, (x - mean) ** 2, 0.0).sum(0)
        var = np.divide(var, count, out=np.zeros_like(var), where=count > 0)
        std = np.sqrt(var)
        self.mean = mean
        self.std = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise ValueError("Standardizer.transform called before fit")
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise ValueError("Standardizer.inverse called before fit")
        return (np.asarray(x, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def __repr__(self) -> str:
        return f"Standardizer(mean={self.mean}, std={self.std})"
