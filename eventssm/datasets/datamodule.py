"""LightningDataModule over an :class:`EventTable` (a pandas table, a CSV/Parquet path, or a
subclass's own loader), with splits, train-only normalisation and the §5 collate."""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from .augment import EventDropout, check_event_dropout
from .collate import EventCollator
from .gaps import check_time_scale, gap_statistics, resolve_time_scale
from .normalize import Standardizer
from .sampling import GlobalBatchSampler, ResumableDataLoader, ShardSampler
from .splits import split_from_labels, split_indices
from .table import EventTable, _few

__all__ = ["EventDataset", "EventDataModule", "TARGETS"]

TARGETS = ("label", "forecast", "next_event")


class EventDataset(Dataset):
    """Per-sequence samples of an :class:`EventTable` for :func:`collate_events`.

    Args:
        table: the sequences.
        target: ``"label"`` (the table's class id or regression targets), ``"forecast"`` (the
            last ``forecast_steps`` events become query times and their values the target; the
            history is what precedes them) or ``"next_event"`` (at each event, the next event's
            mark and the gap to it).
        scaler: value standardiser (fitted on the training split) or None.
        target_scaler: regression target standardiser or None.
        forecast_steps: number of final events to forecast (``target="forecast"``).
    """

    def __init__(self, table: EventTable, target: str = "label", scaler: Standardizer | None = None,
                 target_scaler: Standardizer | None = None, forecast_steps: int = 0):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.table = table
        self.target = target
        self.scaler = scaler
        self.target_scaler = target_scaler
        self.forecast_steps = int(forecast_steps)
        if target == "label" and table.labels is None:
            raise ValueError("target='label' needs a table with labels (give label_col)")
        if target == "forecast":
            if table.values is None:
                raise ValueError("target='forecast' needs value columns to forecast")
            if self.forecast_steps < 1:
                raise ValueError(f"forecast_steps must be >= 1, got {forecast_steps}")
            short = [table.ids[i] for i, n in enumerate(table.lengths())
                     if n <= self.forecast_steps]
            if short:
                raise ValueError(
                    f"forecast_steps={forecast_steps}: sequences with no history left (length <= "
                    f"forecast_steps): {_few(short)}"
                )
        if target == "next_event" and table.marks is None:
            raise ValueError("target='next_event' needs a mark column")

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        tb = self.table
        t = tb.times[i]
        s: dict[str, Any] = {"timestamps": t, "index": i}
        v = None
        if tb.values is not None:
            v = tb.values[i] if self.scaler is None else self.scaler.transform(tb.values[i])
            s["values"] = v
        if tb.marks is not None:
            s["marks"] = tb.marks[i]
        if self.target == "label":
            y = tb.labels[i]
            if self.target_scaler is not None:
                y = self.target_scaler.transform(np.atleast_1d(y)[None])[0]
            s["target"] = y
        elif self.target == "forecast":
            k = self.forecast_steps
            s["timestamps"] = t[:-k]
            s["values"] = v[:-k]
            if "marks" in s:
                s["marks"] = s["marks"][:-k]
            s["query_times"] = t[-k:]
            s["target"] = v[-k:]
        else:
            m = tb.marks[i]
            nxt = np.full(len(m), -100, dtype=np.int64)
            nxt[:-1] = m[1:]
            gap = np.zeros(len(m), dtype=np.float32)
            gap[:-1] = np.diff(t)
            s["target"] = nxt
            s["target_gap"] = gap
        return s


class EventDataModule(L.LightningDataModule):
    """Event sequences from a long table, split and normalised, as §5 batches.

    Args:
        source: a pandas DataFrame or a path to a CSV/Parquet file (long format); subclasses
            that generate or load their own data leave it None and override :meth:`load_table`.
        id_col, time_col, value_cols, mark_col, label_col, split_col: see
            :meth:`EventTable.from_frame`. Times are kept in the table's own unit (datetimes in
            seconds).
        time_scale: the model's time unit, as the factor taking the data's gaps to it:
            ``"auto"`` (default) measures the gaps of the training split and maps the median
            positive gap to 1 (:mod:`eventssm.datasets.gaps`), so seconds, hours or nanosecond
            datetimes give the same model; a number fixes it (``1/3600``: seconds -> hours).
            It is not applied to the batches: the CLI links it to the task's ``time_scale``, the
            one place gaps are scaled. :attr:`gap_stats` reports the measured gaps.
        task: ``"classification"`` or ``"regression"`` (of the label), or ``"none"``.
        target: what to predict; see :class:`EventDataset`.
        forecast_steps: events to forecast per sequence when ``target="forecast"``.
        val_fraction, test_fraction, seed: random split by sequence (stratified by class for
            classification) when the table has no split column. With a split column that has
            no ``val`` rows (e.g. only ``train``/``test``), a stratified ``val_fraction`` of its
            ``train`` sequences becomes the validation set (seeded by ``seed``).
        normalize: standardise values per channel with training-split statistics.
        normalize_target: standardise regression targets with training-split statistics
            (metrics are then in standard units; :meth:`denormalize_target` undoes it).
        use_observed: give the model the ``observed`` mask (None: when any value is missing).
        batch_size: the *global* batch size (divided among processes under DDP, so that any
            number of processes takes the same optimisation steps). None (the default) adapts it
            to the training split: 32, or ``n_train // 8`` (at least 4) when that is smaller, so
            that a table of a few dozen sequences still takes about 8 optimisation steps per
            epoch; rounded up to a multiple of the number of processes. See
            :meth:`train_batch_size`.
        eval_batch_size: batch size for val/test/predict (default: the training batch size).
        num_workers: DataLoader workers.
        pack: ``"auto"`` (default): a batch comes packed (``cu_seqlens``, no padding; see
            :func:`~eventssm.datasets.pack_batch`) when at least a quarter of its padded form would
            be padding (:data:`~eventssm.datasets.collate.AUTO_PACK_PADDING`), padded otherwise;
            ``True``: always packed; ``False``: always padded. Every task gives the same losses
            and metrics on both forms. ``predict_dataloader`` stays padded under ``"auto"`` so
            that per-event predictions keep their ``(B, L, ...)`` layout.
        drop_last: drop the last incomplete training batch. None (the default) drops it only
            when the training split holds at least 10 full batches, so that at most a tenth of
            the sequences (a different random few every epoch) waits for the next epoch; a
            smaller training split keeps every sequence in every epoch.
        event_dropout: training-time augmentation for ``target="label"``: every time a training
            sequence is drawn, this fraction of its events is dropped at random (the kept ones
            keep their timestamps; see :mod:`eventssm.datasets.augment`). 0 (the default)
            trains on whole sequences; validation and test always see them whole.
    """

    def __init__(
        self,
        source: str | os.PathLike | pd.DataFrame | None = None,
        *,
        id_col: str = "id",
        time_col: str = "time",
        value_cols: list[str] | None = None,
        mark_col: str | None = None,
        label_col: str | list[str] | None = "label",
        split_col: str | None = None,
        task: Literal["classification", "regression", "none"] = "classification",
        target: Literal["label", "forecast", "next_event"] = "label",
        forecast_steps: int = 0,
        time_scale: float | Literal["auto"] = "auto",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        normalize: bool = True,
        normalize_target: bool = True,
        use_observed: bool | None = None,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pack: bool | Literal["auto"] = "auto",
        drop_last: bool | None = None,
        event_dropout: float = 0.0,
    ):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        for name, bs in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {bs!r}")
        self.source = source
        self.table_kwargs = dict(
            id_col=id_col, time_col=time_col, value_cols=value_cols, mark_col=mark_col,
            label_col=label_col if task != "none" else None, split_col=split_col, task=task,
        )
        self._time_scale = check_time_scale(time_scale)
        self.task = task
        self.target = target
        self.forecast_steps = forecast_steps
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.normalize = normalize
        self.normalize_target = normalize_target
        self._use_observed = use_observed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        if pack not in (True, False, "auto"):
            raise ValueError(f"pack must be true, false or 'auto', got {pack!r}")
        self.pack = pack
        self.drop_last = drop_last
        self.event_dropout = check_event_dropout(event_dropout)
        if self.event_dropout and target != "label":
            raise ValueError(
                f"event_dropout needs target='label' (a sequence-level target), got target={target!r}")
        self._built = False

    # ------------------------------------------------------------------ data
    def load_table(self) -> EventTable:
        """The whole table (all splits). Subclasses override this to load or generate data."""
        if self.source is None:
            raise ValueError("EventDataModule needs source= (a DataFrame or a CSV/Parquet path)")
        return EventTable.from_source(self.source, **self.table_kwargs)

    def split_table(self, table: EventTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of train/val/test sequences: the table's split column or a seeded split."""
        if table.split is not None:
            tr, va, te = split_from_labels(table.split)
            if len(va) == 0 and self.val_fraction > 0:
                # A train/test column (as most archives ship): carve val out of train.
                strat = table.labels[tr] if table.task == "classification" else None
                keep, val, _ = split_indices(len(tr), self.val_fraction, 0.0, seed=self.seed,
                                             stratify=strat)
                tr, va = tr[keep], tr[val]
            return tr, va, te
        strat = table.labels if table.task == "classification" else None
        return split_indices(len(table), self.val_fraction, self.test_fraction, seed=self.seed,
                             stratify=strat)

    def build(self) -> None:
        """Load, split and fit normalisation (idempotent; called by the properties and setup)."""
        if self._built:
            return
        table = self.load_table()
        if self.target == "label" and table.labels is None:
            raise ValueError("target='label' needs labels; give label_col or choose another target")
        tr, va, te = self.split_table(table)
        self.table = table
        self.split_index = {"train": tr, "val": va, "test": te}
        self.scaler = None
        if self.normalize and table.values is not None:
            train_vals = [table.values[i] for i in tr]
            self.scaler = Standardizer().fit(train_vals)
        self.target_scaler = None
        if self.normalize_target and table.task == "regression" and self.target == "label":
            self.target_scaler = Standardizer().fit([table.labels[tr]])
        self.gap_stats = gap_statistics([table.times[i] for i in tr])
        self._resolved_time_scale = resolve_time_scale(self._time_scale, self.gap_stats)
        rank_zero_info(self.gap_stats.report(self._resolved_time_scale))
        self.datasets = {
            name: EventDataset(table.subset(idx), self.target, self.scaler, self.target_scaler,
                               self.forecast_steps)
            for name, idx in self.split_index.items()
        }
        self._built = True

    def setup(self, stage: str | None = None) -> None:
        self.build()

    # ------------------------------------------------------------------ what the model needs
    @property
    def d_input(self) -> int:
        """Number of value channels (without the observed mask)."""
        self.build()
        return self.table.num_channels

    @property
    def num_marks(self) -> int:
        self.build()
        return self.table.num_marks

    @property
    def num_classes(self) -> int:
        """Classes of the label, or event types for ``target="next_event"``."""
        self.build()
        return self.table.num_marks if self.target == "next_event" else self.table.num_classes

    @property
    def d_target(self) -> int:
        """Regression outputs per sequence, or channels forecast per query time."""
        self.build()
        if self.target == "forecast":
            return self.table.num_channels
        if self.table.task == "regression":
            return self.table.labels.shape[1]
        return 0

    @property
    def use_observed(self) -> bool:
        self.build()
        if self._use_observed is None:
            return self.table.has_missing or self.target == "forecast"
        return bool(self._use_observed)

    @property
    def time_scale(self) -> float:
        """Factor from the data's gaps to the model's time unit (resolved from ``"auto"`` with the
        training split's median gap); linked to the task's ``time_scale`` by the CLI."""
        self.build()
        return self._resolved_time_scale

    @property
    def per_event(self) -> bool:
        return self.target == "next_event"

    def denormalize_target(self, y: np.ndarray) -> np.ndarray:
        """Regression predictions in standard units -> the label column's units."""
        self.build()
        return np.asarray(y) if self.target_scaler is None else self.target_scaler.inverse(y)

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_batch_size(self, world: int | None = None) -> int:
        """The global training batch size: ``batch_size``, or the adaptive default (see the
        class docstring) for ``world`` processes (default: the attached trainer's)."""
        world = self._world()[0] if world is None else int(world)
        if self.batch_size is not None:
            return self.batch_size
        self.build()
        n = len(self.split_index["train"])
        bs = min(32, max(4, n // 8))
        return -(-bs // world) * world

    def train_drop_last(self, world: int | None = None) -> bool:
        """Whether the last incomplete training batch is dropped (see ``drop_last``)."""
        if self.drop_last is not None:
            return bool(self.drop_last)
        self.build()
        return len(self.split_index["train"]) >= 10 * self.train_batch_size(world)

    def _loader(self, split: str, train: bool, predict: bool = False) -> DataLoader:
        self.build()
        ds = self.datasets[split]
        if len(ds) == 0:
            if self.table.split is None:
                hint = f"set {split}_fraction > 0"
            elif split == "val":
                hint = "give the split column 'val' rows, or set val_fraction > 0 to carve it from train"
            else:
                hint = f"the split column has no {split!r} rows"
            raise ValueError(f"the {split} split is empty: {hint}")
        world, rank = self._world()
        pack = False if predict and self.pack == "auto" else self.pack
        collate = EventCollator(use_observed=self.use_observed, pack=pack)
        batch_size = self.train_batch_size(world)
        if train and self.train_drop_last(world) and len(ds) < batch_size:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training split ({len(ds)} sequences) and "
                "drop_last=True drops every batch: an epoch would train on nothing. Use a batch_size "
                f"of at most {len(ds)}, or drop_last=False")
        if train:
            augment = self.event_dropout > 0
            sampler = GlobalBatchSampler(ds, batch_size, world, rank, shuffle=True,
                                         seed=self.seed, drop_last=self.train_drop_last(world),
                                         tag_epoch=augment)
            if augment:
                ds = EventDropout(ds, self.event_dropout, seed=self.seed)
            bs = batch_size // world
        else:
            sampler = ShardSampler(ds, world, rank)
            bs = max(1, (self.eval_batch_size or batch_size) // world)
        # The training loader records its place in the epoch in checkpoints (exact resume).
        make = ResumableDataLoader if train else DataLoader
        return make(ds, batch_size=bs, sampler=sampler, collate_fn=collate,
                    num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False, predict=True)
