"""UEA/UCR sets shipped inside the ``aeon`` package (no downloads), and the irregular-sampling
protocol of Kidger et al. (Neural CDE, 2020).

``aeon`` installs a few archive sets as ``.ts`` files under ``aeon/datasets/data/<Name>/``
(JapaneseVowels, BasicMotions, GunPoint, ArrowHead, ItalyPowerDemand, OSULeaf, ...).
:func:`available_uea` lists those with both a TRAIN and a TEST file.

Time is the sample index (0, 1, 2, ...): the archive has no timestamps. The *drop protocol*
(``missing_rate`` > 0) pools train and test, removes for each series the same random fraction
of its time indices from all channels (the kept indices keep their original times, so the gaps
become irregular), and splits 70/15/15 stratified by class. Normalisation uses the training split
only (done by the DataModule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from .datamodule import EventDataModule
from .table import EventTable

__all__ = ["aeon_data_dir", "available_uea", "load_uea", "drop_time_indices", "UEADataModule"]


def aeon_data_dir() -> Path:
    """The folder of data files shipped with aeon."""
    try:
        import aeon
    except ImportError as err:  # pragma: no cover - aeon is in the data extra
        raise ImportError("UEA/UCR loading needs aeon: pip install 'eventssm[data]'") from err
    return Path(os.path.dirname(aeon.__file__)) / "datasets" / "data"


def available_uea() -> list[str]:
    """Names of the classification sets aeon ships with both ``_TRAIN.ts`` and ``_TEST.ts``."""
    root = aeon_data_dir()
    return sorted(
        d.name for d in root.iterdir()
        if (d / f"{d.name}_TRAIN.ts").exists() and (d / f"{d.name}_TEST.ts").exists()
    )


def _read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    from aeon.datasets import load_from_ts_file

    X, y = load_from_ts_file(str(path))
    series = [np.asarray(x, dtype=np.float64).T for x in X]  # (L, C) each
    return series, np.asarray(y)


def load_uea(name: str, split: Literal["train", "test", "all"] = "all") -> EventTable:
    """A shipped UEA/UCR set as an :class:`EventTable` (time = sample index).

    With ``split="all"`` the table holds both files and its ``split`` says which sequence came
    from which (``train``/``test``: the archive's official split).
    """
    names = available_uea()
    if name not in names:
        raise ValueError(f"UEA set {name!r} is not shipped with aeon; available: {names}")
    root = aeon_data_dir() / name
    parts = ["train", "test"] if split == "all" else [split]
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    series, labels, which = [], [], []
    for p in parts:
        s, y = _read_ts(root / f"{name}_{p.upper()}.ts")
        series += s
        labels.append(y)
        which += [p] * len(s)
    labels = np.concatenate(labels)
    try:
        classes = sorted(set(labels.tolist()), key=lambda c: (float(c), c))
    except ValueError:
        classes = sorted(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    values, times = [], []
    for x in series:
        # Trailing all-NaN rows are padding of unequal-length series in some files.
        keep = ~np.isnan(x).all(axis=1)
        last = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 1
        values.append(x[:last].astype(np.float32))
        times.append(np.arange(last, dtype=np.float64))
    ids = [f"{w}-{i}" for i, w in enumerate(which)]
    return EventTable(
        ids, times, values, None, np.array([index[c] for c in labels], dtype=np.int64),
        split=np.array(which, dtype=object),
        channels=[f"dim_{c}" for c in range(values[0].shape[1])],
        classes=classes, task="classification",
    )


def drop_time_indices(table: EventTable, rate: float, seed: int = 0) -> EventTable:
    """Drop the same random ``rate`` fraction of time indices from all channels of each series.

    Kept observations keep their times, so gaps become irregular; at least one index is kept
    per series. Seeded: the same ``seed`` drops the same indices.
    """
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"missing_rate must lie in [0, 1), got {rate!r}")
    rng = np.random.default_rng(seed)
    times, values = [], []
    for t, v in zip(table.times, table.values, strict=True):
        L = len(t)
        n_drop = min(int(round(rate * L)), L - 1)
        drop = rng.choice(L, size=n_drop, replace=False)
        keep = np.ones(L, dtype=bool)
        keep[drop] = False
        times.append(t[keep] - t[keep][0])
        values.append(v[keep])
    # Times restart at the first kept index (DESIGN §5: time since the sequence's first event).
    return EventTable(table.ids, times, values, None, table.labels, split=table.split,
                      channels=table.channels, classes=table.classes, task=table.task)


class UEADataModule(EventDataModule):
    """A UEA/UCR classification set shipped with aeon.

    Args:
        name: set name (see :func:`available_uea`), e.g. ``"JapaneseVowels"``.
        missing_rate: 0 keeps the archive as it is, with its official train/test split (the
            validation set is a stratified ``val_fraction`` of the official train split, carved
            by :meth:`EventDataModule.split_table` as for any train/test split column). A rate
            in (0, 1) applies the Kidger et al. (2020) protocol: pool train+test, drop that
            fraction of time indices per series (seeded by ``drop_seed``), split
            ``1 - val_fraction - test_fraction`` / ``val_fraction`` / ``test_fraction``
            stratified by class (seeded by ``seed``).
        drop_seed: seed of the dropped indices.
        **kwargs: :class:`EventDataModule` options (batch size, seed, fractions, ...).
    """

    def __init__(self, name: str = "JapaneseVowels", missing_rate: float = 0.0,
                 drop_seed: int = 0, **kwargs):
        kwargs.setdefault("task", "classification")
        super().__init__(None, **kwargs)
        if not (0.0 <= missing_rate < 1.0):
            raise ValueError(f"missing_rate must lie in [0, 1), got {missing_rate!r}")
        self.name = name
        self.missing_rate = missing_rate
        self.drop_seed = drop_seed

    def load_table(self) -> EventTable:
        table = load_uea(self.name, "all")
        if self.missing_rate > 0:
            table = drop_time_indices(table, self.missing_rate, seed=self.drop_seed)
            table.split = None  # pooled: the DataModule makes a stratified 70/15/15 split
        return table
