"""Event sequences from a long pandas table (one row per observation).

A long table has one row per observation with

* an id column (which sequence the row belongs to),
* a time column (datetimes, floats or ints),
* value columns (numeric; NaN means "not measured at this event") and/or a mark column
  (categorical event type),
* optionally a label column (one label per sequence, repeated on its rows or given on some of
  them) and a split column (``train``/``val``/``test`` per sequence).

:class:`EventTable` turns it into per-sequence arrays: times relative to the sequence's first
event in float64, in the data's own unit (datetimes in seconds; the model's ``time_scale`` sets
the unit the model sees), values
as float32 with NaN kept (the collate turns them into 0 plus an ``observed`` mask), marks as
int64 ids. Rows are ordered by time within each sequence (a stable sort keeps the table order of
ties). Every bad input raises ``ValueError`` naming the column and a few offending sequence ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eventssm.time import int_difference

__all__ = ["EventTable", "read_table", "TASKS"]

TASKS = ("classification", "regression", "none")
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _few(ids, k: int = 5) -> str:
    ids = list(dict.fromkeys(ids))  # unique, order kept
    shown = ", ".join(repr(i) for i in ids[:k])
    more = f" and {len(ids) - k} more" if len(ids) > k else ""
    return f"[{shown}{more}]"


def read_table(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame, or a ``.csv``/``.csv.gz``/``.parquet``/``.pq`` path read with pandas."""
    if isinstance(source, pd.DataFrame):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"source must be a pandas DataFrame or a path to a CSV/Parquet file, got "
            f"{type(source).__name__}"
        )
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source file {str(path)!r} does not exist")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    raise ValueError(
        f"source file {str(path)!r}: unknown extension; use .csv, .csv.gz, .tsv or .parquet"
    )


# an ISO time of day followed by a UTC offset or Z: the string is tz-aware
_ISO_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _check_one_tz_kind(s: pd.Series, name: str, ids: pd.Series) -> None:
    """Refuse a column mixing naive and tz-aware datetimes (objects or ISO strings): converting
    both to UTC would silently read the naive ones as UTC, shifting them by the offset."""
    v = s.dropna()
    if v.empty:
        return
    is_str = v.map(lambda x: isinstance(x, str))
    aware = pd.Series(False, index=v.index)
    if is_str.any():
        aware[is_str] = v[is_str].astype(str).str.strip().str.contains(_ISO_OFFSET, regex=True)
    dates = v[~is_str].map(lambda x: hasattr(x, "tzinfo"))
    if dates.any():
        d = v[~is_str][dates]
        aware[d.index] = d.map(lambda x: x.tzinfo is not None and x.tzinfo.utcoffset(x) is not None)
    datelike = is_str.copy()
    datelike[dates[dates].index] = True
    if not datelike.any():
        return
    # numeric strings are not dates; only the date-like values count
    looks_date = v[is_str].astype(str).str.contains(r"\d{4}-\d{2}-\d{2}", regex=True)
    datelike[is_str] = looks_date
    kinds = aware[datelike]
    if kinds.any() and not kinds.all():
        naive = kinds.index[~kinds.to_numpy()]
        raise ValueError(
            f"time column {name!r} mixes timezone-aware and naive datetimes (e.g. "
            f"{v[naive[0]]!r} has no timezone, in sequences {_few(ids[naive])}); give every time "
            "a timezone (or none), e.g. localize the naive ones first"
        )


def _time_to_float(col: pd.Series, name: str, ids: pd.Series) -> tuple[np.ndarray, bool]:
    """Time column -> (numbers, is_nanoseconds).

    Datetimes and timedeltas come back as exact int64 nanoseconds (differenced in integers, then
    scaled to seconds), integers as int64, floats as float64.
    """
    s = col
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        _check_one_tz_kind(s, name, ids)
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum():
            s = num
        else:
            try:
                s = pd.to_datetime(s, format="ISO8601", utc=True)
            except (ValueError, TypeError) as err:
                bad = num.isna() & s.notna()
                raise ValueError(
                    f"time column {name!r} must hold datetimes, floats or ints; values like "
                    f"{s[bad].iloc[0]!r} are neither (sequence ids {_few(ids[bad])})"
                ) from err
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        nat = s.isna()
        if nat.any():
            raise ValueError(
                f"time column {name!r} has NaT (missing times) in sequences {_few(ids[nat])}"
            )
        return s.astype("datetime64[ns]").to_numpy().astype(np.int64), True
    if pd.api.types.is_timedelta64_dtype(s.dtype):
        nat = s.isna()
        if nat.any():
            raise ValueError(
                f"time column {name!r} has NaT (missing times) in sequences {_few(ids[nat])}"
            )
        return s.astype("timedelta64[ns]").to_numpy().astype(np.int64), True
    if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype):
        raise ValueError(
            f"time column {name!r} must hold datetimes, floats or ints, got dtype {s.dtype}"
        )
    arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"time column {name!r} has NaN/Inf times in sequences {_few(ids[bad])}"
        )
    if pd.api.types.is_unsigned_integer_dtype(s.dtype):
        # uint64 beyond 2^63 would wrap around as int64: shift by the smallest time first (exact
        # in uint64; gaps and order are unchanged), then the span must fit int64.
        u = s.to_numpy(dtype=np.uint64)
        span = u - u.min() if u.size else u
        if span.size and span.max() >= np.uint64(2**63):
            raise ValueError(f"time column {name!r}: uint64 times span 2^63 or more "
                             f"({int(u.min())} to {int(u.max())}), which int64 cannot hold")
        return span.astype(np.int64), False
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64), False
    return arr, False


def _rel_times(ts: np.ndarray) -> np.ndarray:
    """``ts - ts[0]`` as float64; int64 times (ns datetimes, ints) through
    :func:`eventssm.time.int_difference`: exact below 2^53, rounded once above, never wrapped
    around (numpy's int64 subtraction wraps silently for times 2^63 apart)."""
    if ts.dtype != np.int64:
        return (ts - ts[0]).astype(np.float64)
    t = torch.from_numpy(ts)
    return int_difference(t, t[:1].expand_as(t)).numpy()


@dataclass(frozen=True)
class _Rows:
    """The table's rows sorted by (sequence, time), stably (ties keep the table order).

    ``order`` indexes the table's rows; ``codes`` is each sorted row's sequence code; ``spans``
    the ``(start, end)`` of every sequence in the sorted rows; ``seq_ids`` the ids in that order;
    ``uniq`` the ids by code."""

    order: np.ndarray
    codes: np.ndarray
    starts: np.ndarray
    spans: list
    seq_ids: list
    uniq: object

    def one_per_sequence(self, values: np.ndarray) -> tuple[np.ndarray, list, list]:
        """Sorted-row ``values`` -> ``(first non-null value per sequence in seq_ids order, ids
        of sequences with no value, ids of sequences with two different values)``."""
        grp = pd.Series(values, index=self.codes).groupby(level=0)
        count = grp.nunique(dropna=True)
        first = grp.first().reindex(self.codes[self.starts]).to_numpy()
        return (first, self.ids_of(count.index[count.to_numpy() == 0]),
                self.ids_of(count.index[count.to_numpy() > 1]))

    def ids_of(self, codes) -> list:
        return [self.uniq[i] for i in codes]


def _columns(df, id_col, time_col, value_cols, mark_col, label_col, split_col, task):
    """``(value_cols, label_cols)`` resolved and checked against the table's columns."""
    label_cols = [] if label_col is None else (
        [label_col] if isinstance(label_col, str) else list(label_col)
    )
    if task != "none" and not label_cols:
        raise ValueError(f"task={task!r} needs label_col (the column holding the label)")
    if task == "classification" and len(label_cols) != 1:
        raise ValueError(f"classification takes one label_col, got {label_cols}")
    named = [id_col, time_col, *label_cols] + ([mark_col] if mark_col else []) + (
        [split_col] if split_col else []
    )
    if value_cols is None:
        value_cols = [] if mark_col else [c for c in df.columns if c not in named]
    value_cols = list(value_cols)
    for role, cols in [("id_col", [id_col]), ("time_col", [time_col]),
                       ("value_cols", value_cols), ("label_col", label_cols),
                       ("mark_col", [mark_col] if mark_col else []),
                       ("split_col", [split_col] if split_col else [])]:
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(
                f"{role}: column(s) {missing} not in the table; its columns are "
                f"{list(df.columns)}"
            )
    if not value_cols and not mark_col:
        raise ValueError("the table needs value_cols, a mark_col or both; got neither")
    if len(df) == 0:
        raise ValueError("the table has no rows")
    if df[id_col].isna().any():
        rows = list(np.nonzero(df[id_col].isna().to_numpy())[0][:5])
        raise ValueError(f"id column {id_col!r} has missing ids at rows {rows}")
    return value_cols, label_cols


def _parse_values(df, value_cols, ids_col) -> np.ndarray:
    """``(rows, C)`` float32 values; NaN stays (missing), non-numbers and Inf are errors."""
    cols = []
    for c in value_cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s.dtype):
            s = s.astype(np.float32)
        elif not pd.api.types.is_numeric_dtype(s.dtype):
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & s.notna()
            if bad.any():
                raise ValueError(
                    f"value column {c!r} is not numeric: e.g. {s[bad].iloc[0]!r} in "
                    f"sequences {_few(ids_col[bad])}"
                )
            s = num
        arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(arr).any():
            raise ValueError(
                f"value column {c!r} has Inf in sequences {_few(ids_col[np.isinf(arr)])}"
            )
        cols.append(arr)
    return np.stack(cols, axis=1).astype(np.float32)


def _parse_marks(s: pd.Series, mark_col: str, ids_col, num_marks):
    """``(ids per row, names or None, num_marks)``: non-negative integers are ids as they are,
    anything else is mapped to ids in sorted order."""
    if s.isna().any():
        raise ValueError(
            f"mark column {mark_col!r} has missing marks in sequences {_few(ids_col[s.isna()])}"
        )
    names = None
    if pd.api.types.is_integer_dtype(s.dtype) and s.min() >= 0:
        mk = s.to_numpy(dtype=np.int64)
        inferred = int(mk.max()) + 1
    else:
        cat = pd.Categorical(s)
        names = list(cat.categories)
        mk = np.asarray(cat.codes, dtype=np.int64)
        inferred = len(names)
    if num_marks is None:
        num_marks = inferred
    elif inferred > num_marks:
        raise ValueError(
            f"mark column {mark_col!r} has {inferred} event types but num_marks={num_marks}"
        )
    return mk, names, num_marks


def _sort_rows(ids_col: pd.Series, t: np.ndarray) -> _Rows:
    codes, uniq = pd.factorize(ids_col, sort=False)
    order = np.lexsort((t, codes))  # stable: ties in time keep the row order
    codes_s = codes[order]
    bounds = np.flatnonzero(np.diff(codes_s)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [len(order)]]).astype(np.int64)
    return _Rows(order, codes_s, starts, list(zip(starts.tolist(), ends.tolist())),
                 [uniq[codes_s[s]] for s in starts], uniq)


def _per_sequence(df: pd.DataFrame, col: str, rows: _Rows) -> np.ndarray:
    """The one value of column ``col`` per sequence (in ``rows.seq_ids`` order); a sequence
    with none or with two different values is an error."""
    first, missing, conflict = rows.one_per_sequence(df[col].iloc[rows.order].to_numpy())
    if missing:
        raise ValueError(f"label column {col!r}: sequences without a label: {_few(missing)}")
    if conflict:
        raise ValueError(f"label column {col!r}: sequences with more than one label: {_few(conflict)}")
    return first


def _parse_labels(df, label_cols, rows: _Rows, task, classes):
    """``(labels, classes, target_names)``: class ids ``(n,)`` int64 or targets ``(n, k)``
    float32, or None without labels."""
    if not label_cols:
        return None, classes, []
    per_seq = [_per_sequence(df, c, rows) for c in label_cols]
    if task == "classification":
        raw = per_seq[0]
        if classes is None:
            try:
                classes = sorted(pd.unique(raw).tolist())
            except TypeError:
                classes = sorted(pd.unique(raw).tolist(), key=str)
        index = {c: i for i, c in enumerate(classes)}
        unknown = [rows.seq_ids[i] for i, r in enumerate(raw) if r not in index]
        if unknown:
            raise ValueError(
                f"label column {label_cols[0]!r}: labels not among classes={classes} in "
                f"sequences {_few(unknown)}"
            )
        return np.array([index[r] for r in raw], dtype=np.int64), classes, []
    if task != "regression":
        return None, classes, []
    cols = []
    for c, raw in zip(label_cols, per_seq, strict=True):
        num = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(num)
        if bad.any():
            raise ValueError(
                f"label column {c!r}: regression targets must be finite numbers; "
                f"bad in sequences {_few([rows.seq_ids[i] for i in np.flatnonzero(bad)])}"
            )
        cols.append(num)
    return np.stack(cols, axis=1).astype(np.float32), classes, label_cols


def _parse_split(s: pd.Series, split_col: str, rows: _Rows) -> np.ndarray:
    """Per-sequence ``train``/``val``/``test`` (object array, in ``rows.seq_ids`` order)."""
    s = s.iloc[rows.order]
    norm = s.map(lambda v: _SPLIT_NAMES.get(str(v).strip().lower()) if pd.notna(v) else None)
    bad = norm.isna().to_numpy()
    if bad.any():
        raise ValueError(
            f"split column {split_col!r} must hold train/val/test; got e.g. "
            f"{s[bad].iloc[0]!r} in sequences {_few(rows.ids_of(rows.codes[bad]))}"
        )
    first, _, conflict = rows.one_per_sequence(norm.to_numpy())  # no value is missing (above)
    if conflict:
        raise ValueError(
            f"split column {split_col!r}: sequences assigned to more than one split: {_few(conflict)}"
        )
    return first.astype(object)


class EventTable:
    """A set of event sequences: per-sequence times, values, marks and a label.

    Args:
        ids: one id per sequence.
        times: per sequence, ``(L,)`` times relative to the first event (float64, already
            scaled), non-decreasing, starting at 0.
        values: per sequence, ``(L, C)`` float32 values, NaN where not observed; or None.
        marks: per sequence, ``(L,)`` int64 event type ids in ``[0, num_marks)``; or None.
        labels: ``(n,)`` int64 class ids, ``(n, k)`` float32 targets, or None.
        split: ``(n,)`` array of ``"train"|"val"|"test"`` or None.
        channels: names of the value channels.
        classes: original label of each class id (classification).
        num_marks: number of event types (0 when there are no marks).
        task: ``"classification"``, ``"regression"`` or ``"none"``.

    Use :meth:`from_frame` (or :meth:`from_source`) to build one from a long table.
    """

    def __init__(
        self,
        ids: Sequence,
        times: Sequence[np.ndarray],
        values: Sequence[np.ndarray] | None = None,
        marks: Sequence[np.ndarray] | None = None,
        labels: np.ndarray | None = None,
        *,
        split: np.ndarray | None = None,
        channels: Sequence[str] = (),
        classes: Sequence | None = None,
        num_marks: int = 0,
        task: str = "classification",
        target_names: Sequence[str] = (),
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        n = len(ids)
        if len(times) != n:
            raise ValueError(f"times has {len(times)} sequences but ids has {n}")
        if values is None and marks is None:
            raise ValueError("an EventTable needs values, marks or both; got neither")
        self.ids = list(ids)
        self.times = [np.asarray(t, dtype=np.float64) for t in times]
        for i, t in enumerate(self.times):
            if t.ndim != 1 or len(t) == 0:
                raise ValueError(f"times of sequence {self.ids[i]!r} must be a non-empty 1-d array")
            if not np.isfinite(t).all() or (np.diff(t) < 0).any():
                raise ValueError(
                    f"times of sequence {self.ids[i]!r} must be finite and non-decreasing"
                )
        self.values = None
        if values is not None:
            if len(values) != n:
                raise ValueError(f"values has {len(values)} sequences but ids has {n}")
            self.values = [np.asarray(v, dtype=np.float32) for v in values]
            for i, v in enumerate(self.values):
                if v.ndim != 2 or v.shape[0] != len(self.times[i]):
                    raise ValueError(
                        f"values of sequence {self.ids[i]!r} must have shape "
                        f"({len(self.times[i])}, C), got {v.shape}"
                    )
                if np.isinf(v).any():
                    raise ValueError(f"values of sequence {self.ids[i]!r} contain Inf")
            widths = {v.shape[1] for v in self.values}
            if len(widths) > 1:
                raise ValueError(f"all sequences must have the same channels, got widths {widths}")
        self.marks = None
        if marks is not None:
            if len(marks) != n:
                raise ValueError(f"marks has {len(marks)} sequences but ids has {n}")
            self.marks = [np.asarray(m, dtype=np.int64) for m in marks]
            for i, m in enumerate(self.marks):
                if m.shape != self.times[i].shape:
                    raise ValueError(f"marks of sequence {self.ids[i]!r} must match its times")
                if len(m) and (m.min() < 0 or m.max() >= num_marks):
                    raise ValueError(
                        f"marks of sequence {self.ids[i]!r} must lie in [0, num_marks={num_marks})"
                    )
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"labels has {len(self.labels)} entries but ids has {n}")
        self.split = None if split is None else np.asarray(split, dtype=object)
        self.channels = list(channels) or (
            [f"x{i}" for i in range(self.values[0].shape[1])] if self.values else []
        )
        self.classes = list(classes) if classes is not None else None
        self.num_marks = int(num_marks)
        self.task = task
        self.target_names = list(target_names)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_source(cls, source: str | os.PathLike | pd.DataFrame, **kwargs) -> EventTable:
        """:meth:`from_frame` on a DataFrame or a CSV/Parquet path."""
        return cls.from_frame(read_table(source), **kwargs)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        id_col: str = "id",
        time_col: str = "time",
        value_cols: Sequence[str] | None = None,
        mark_col: str | None = None,
        label_col: str | Sequence[str] | None = None,
        split_col: str | None = None,
        task: str = "classification",
        time_scale: None = None,
        classes: Sequence | None = None,
        num_marks: int | None = None,
    ) -> EventTable:
        """Parse a long DataFrame.

        Args:
            df: one row per observation.
            id_col, time_col: sequence id and time columns. Datetime (and timedelta) times are
                converted to seconds; numbers are used as they are. The table keeps this
                native unit: the model's ``time_scale`` is the one factor applied to gaps.
            value_cols: numeric value columns; ``None`` takes every column not named elsewhere
                (when there is no mark column), ``[]`` means marks only.
            mark_col: categorical event-type column (any dtype; non-negative integers are used
                as ids directly, anything else is mapped to ids in sorted order).
            label_col: per-sequence label (classification) or target column(s) (regression).
            split_col: per-sequence ``train``/``val``/``test`` assignment.
            task: ``"classification"``, ``"regression"`` or ``"none"`` (no label).
            time_scale: not accepted (a ``ValueError`` says where the unit goes): the time
                unit is the model's ``time_scale`` (``EventClassifier(time_scale=...)``,
                ``--model.time_scale``), or ``EventDataModule(time_scale=...)``, whose value the
                CLI links to the model.
            classes: the class labels in id order (default: sorted unique labels).
            num_marks: number of event types (default: inferred).
        """
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if time_scale is not None:
            raise ValueError(
                f"EventTable.from_frame takes no time_scale (got {time_scale!r}): tables keep the "
                "data's native unit (numbers as given, datetimes in seconds), and the model's "
                "time_scale is the only factor applied to gaps. Pass it to the task "
                "(EventClassifier(time_scale=...), --model.time_scale) or to "
                "EventDataModule(time_scale=...), which the CLI links to the task.")
        value_cols, label_cols = _columns(df, id_col, time_col, value_cols, mark_col, label_col,
                                          split_col, task)
        ids_col = df[id_col]
        t, is_ns = _time_to_float(df[time_col], time_col, ids_col)
        vals = _parse_values(df, value_cols, ids_col) if value_cols else None
        mk, mark_names, num_marks = (_parse_marks(df[mark_col], mark_col, ids_col, num_marks)
                                     if mark_col else (None, None, num_marks))
        rows = _sort_rows(ids_col, t)
        scale = 1e-9 if is_ns else 1.0
        t_sorted = t[rows.order]
        times = [_rel_times(t_sorted[a:b]) * scale for a, b in rows.spans]
        values = None if vals is None else [vals[rows.order[a:b]] for a, b in rows.spans]
        marks = None if mk is None else [mk[rows.order[a:b]] for a, b in rows.spans]
        labels, classes, target_names = _parse_labels(df, label_cols, rows, task, classes)
        split = _parse_split(df[split_col], split_col, rows) if split_col else None
        table = cls(
            rows.seq_ids, times, values, marks, labels, split=split, channels=value_cols,
            classes=classes if task == "classification" else None,
            num_marks=num_marks or 0, task=task, target_names=target_names,
        )
        table.mark_names = mark_names
        return table

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_channels(self) -> int:
        return 0 if self.values is None else self.values[0].shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def has_missing(self) -> bool:
        return self.values is not None and any(np.isnan(v).any() for v in self.values)

    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.times], dtype=np.int64)

    def subset(self, index: Sequence[int] | np.ndarray) -> EventTable:
        """The sequences at ``index`` (a new table sharing the arrays)."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda xs: None if xs is None else [xs[i] for i in index]
        sub = EventTable(
            [self.ids[i] for i in index], pick(self.times), pick(self.values), pick(self.marks),
            None if self.labels is None else self.labels[index],
            split=None if self.split is None else self.split[index], channels=self.channels,
            classes=self.classes, num_marks=self.num_marks, task=self.task,
            target_names=self.target_names,
        )
        sub.mark_names = getattr(self, "mark_names", None)
        return sub

    def to_frame(self) -> pd.DataFrame:
        """Back to a long DataFrame (times relative to each sequence's first event)."""
        parts = []
        for i, sid in enumerate(self.ids):
            d = {"id": sid, "time": self.times[i]}
            if self.values is not None:
                for c, name in enumerate(self.channels):
                    d[name] = self.values[i][:, c]
            if self.marks is not None:
                d["mark"] = self.marks[i]
            if self.labels is not None:
                if self.task == "classification":
                    d["label"] = self.classes[int(self.labels[i])]
                else:
                    for k, name in enumerate(self.target_names or ["target"]):
                        d[name] = float(np.atleast_1d(self.labels[i])[k])
            if self.split is not None:
                d["split"] = self.split[i]
            parts.append(pd.DataFrame(d))
        return pd.concat(parts, ignore_index=True)

    def __repr__(self) -> str:
        return (
            f"EventTable({len(self)} sequences, task={self.task!r}, channels={self.num_channels}, "
            f"num_marks={self.num_marks}, num_classes={self.num_classes})"
        )
