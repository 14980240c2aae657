"""Train/val/test splits of sequences: seeded, stratified by class, or given by a column."""

from __future__ import annotations

import numpy as np

__all__ = ["split_indices", "split_from_labels"]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= f < 1.0):
            raise ValueError(f"{name} must lie in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (something must be left to train on), got "
            f"{val_fraction} + {test_fraction}"
        )


def split_indices(
    n: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    *,
    seed: int = 0,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)`` into sorted (train, val, test) index arrays.

    With ``stratify`` (one class id per item) each class is split on its own, so every split
    keeps the class proportions (up to rounding: per class, ``round(f * n_class)`` items go to
    val and to test, the rest to train). The same seed always gives the same split.
    """
    _check_fractions(val_fraction, test_fraction)
    if n <= 0:
        raise ValueError(f"cannot split {n} sequences")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if stratify is None else None
    if stratify is not None:
        stratify = np.asarray(stratify)
        if stratify.shape[0] != n:
            raise ValueError(f"stratify has {stratify.shape[0]} entries for {n} sequences")
        groups = [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    train, val, test = [], [], []
    for g in groups:
        g = g[rng.permutation(len(g))]
        n_val = int(round(val_fraction * len(g)))
        n_test = int(round(test_fraction * len(g)))
        if n_val + n_test >= len(g) and len(g) > 0:  # tiny class: keep at least one for training
            n_test = min(n_test, max(len(g) - 1 - n_val, 0))
            n_val = min(n_val, len(g) - 1 - n_test)
        val.append(g[:n_val])
        test.append(g[n_val:n_val + n_test])
        train.append(g[n_val + n_test:])
    out = tuple(np.sort(np.concatenate(x)).astype(np.int64) for x in (train, val, test))
    return out  # type: ignore[return-value]


def split_from_labels(split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays of the sequences marked ``train``, ``val`` and ``test``."""
    split = np.asarray(split, dtype=object)
    bad = ~np.isin(split, ["train", "val", "test"])
    if bad.any():
        raise ValueError(
            f"split labels must be 'train', 'val' or 'test'; got {split[bad][0]!r} at sequence "
            f"index {int(np.flatnonzero(bad)[0])}"
        )
    parts = tuple(np.flatnonzero(split == s).astype(np.int64) for s in ("train", "val", "test"))
    if len(parts[0]) == 0:
        raise ValueError("the split column assigns no sequence to 'train'")
    return parts  # type: ignore[return-value]
