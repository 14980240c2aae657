"""EventTable: loading long tables (DataFrame, CSV, Parquet) and every bad-input case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eventssm.datasets import EventDataModule, EventTable, Standardizer, split_indices


def long_frame(n_seq=6, seed=0):
    """A small long table: 3 to 6 rows per sequence, rows shuffled, two value columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_seq):
        n = 3 + s % 4
        t = np.sort(rng.uniform(0, 10, n)) + 100.0 * s
        for i in range(n):
            rows.append({"sid": f"s{s}", "t": t[i], "a": rng.normal(), "b": rng.normal(),
                         "y": "cat" if s % 2 else "dog"})
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)


KW = dict(id_col="sid", time_col="t", value_cols=["a", "b"], label_col="y")


def test_sorting_relative_times_and_labels():
    df = long_frame()
    tb = EventTable.from_frame(df, **KW)
    assert len(tb) == 6 and tb.classes == ["cat", "dog"] and tb.num_channels == 2
    for i, sid in enumerate(tb.ids):
        rows = df[df.sid == sid].sort_values("t")
        np.testing.assert_allclose(tb.times[i], rows.t.to_numpy() - rows.t.min())
        np.testing.assert_allclose(tb.values[i], rows[["a", "b"]].to_numpy(), rtol=1e-6)
        assert tb.classes[tb.labels[i]] == rows.y.iloc[0]
        assert tb.times[i].dtype == np.float64 and tb.times[i][0] == 0


def test_ties_keep_table_order():
    df = pd.DataFrame({"sid": [1, 1, 1], "t": [5, 5, 1], "a": [1.0, 2.0, 3.0], "y": [0, 0, 0]})
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", value_cols=["a"], label_col="y")
    np.testing.assert_array_equal(tb.values[0][:, 0], [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(tb.times[0], [0, 4, 4])


def test_datetimes_time_scale_and_precision():
    base = pd.Timestamp("2024-01-01 00:00:00")
    df = pd.DataFrame({
        "sid": ["a"] * 3 + ["b"] * 2,
        "t": [base, base + pd.Timedelta(hours=1), base + pd.Timedelta(hours=3, microseconds=1),
              base, base + pd.Timedelta(minutes=30)],
        "v": [1.0, 2.0, 3.0, 4.0, 5.0], "y": [0, 0, 0, 1, 1]})
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", value_cols=["v"], label_col="y")
    np.testing.assert_allclose(tb.times[0], [0.0, 3600.0, 3 * 3600 + 1e-6], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tb.times[1], [0.0, 1800.0])
    # ISO strings (as read from a CSV) and tz-aware datetimes work too.
    df2 = df.assign(t=df.t.dt.tz_localize("Europe/Paris").astype(str))
    tb2 = EventTable.from_frame(df2, id_col="sid", time_col="t", value_cols=["v"], label_col="y")
    np.testing.assert_allclose(tb2.times[0], tb.times[0], atol=1e-9)


def test_large_integer_times_are_exact():
    # epoch nanoseconds: float64 would lose the 1 ns differences
    t0 = 1_700_000_000_000_000_000
    df = pd.DataFrame({"sid": [0, 0, 0], "t": [t0, t0 + 1, t0 + 3], "v": [0.0, 1, 2], "y": [1] * 3})
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", value_cols=["v"], label_col="y")
    np.testing.assert_array_equal(tb.times[0], [0.0, 1.0, 3.0])


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_from_path(tmp_path, ext):
    df = long_frame()
    path = tmp_path / f"events.{ext}"
    df.to_csv(path, index=False) if ext == "csv" else df.to_parquet(path)
    a = EventTable.from_source(str(path), **KW)
    b = EventTable.from_frame(df, **KW)
    assert a.ids == b.ids
    for x, y in zip(a.values, b.values, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_nan_values_kept_for_observed_mask():
    df = long_frame()
    df.loc[0, "a"] = np.nan
    tb = EventTable.from_frame(df, **KW)
    assert tb.has_missing
    assert sum(np.isnan(v).sum() for v in tb.values) == 1


def test_marks_categorical_and_integer():
    df = pd.DataFrame({"sid": [0, 0, 1], "t": [0.0, 1, 0], "m": ["x", "z", "x"], "y": [0, 0, 1]})
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", mark_col="m", label_col="y")
    assert tb.num_marks == 2 and tb.values is None
    np.testing.assert_array_equal(tb.marks[0], [0, 1])
    df["m"] = [3, 0, 1]
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", mark_col="m", label_col="y")
    assert tb.num_marks == 4
    np.testing.assert_array_equal(tb.marks[0], [3, 0])


def test_regression_targets():
    df = long_frame().assign(r=lambda d: d.sid.str[1:].astype(float) * 2)
    tb = EventTable.from_frame(df, id_col="sid", time_col="t", value_cols=["a"], label_col="r",
                               task="regression")
    assert tb.labels.shape == (6, 1) and tb.labels.dtype == np.float32
    np.testing.assert_allclose(tb.labels[:, 0], [float(i[1:]) * 2 for i in tb.ids])


# ---------------------------------------------------------------------- bad input
def check_raises(df, match, ids=(), **kw):
    args = dict(KW)
    args.update(kw)
    with pytest.raises(ValueError, match=match) as e:
        EventTable.from_frame(df, **args)
    for i in ids:
        assert repr(i) in str(e.value), (i, str(e.value))
    return str(e.value)


def test_missing_columns():
    df = long_frame()
    check_raises(df, r"id_col.*'nope'.*not in the table", id_col="nope")
    check_raises(df, r"time_col.*'when'", time_col="when")
    check_raises(df, r"value_cols.*'c'", value_cols=["a", "c"])
    check_raises(df, r"label_col.*'lab'", label_col="lab")
    check_raises(df, r"mark_col.*'m'", mark_col="m")
    check_raises(df, r"split_col.*'fold'", split_col="fold")
    check_raises(df, r"needs label_col", label_col=None)


def test_non_numeric_value_column_names_sequences():
    df = long_frame()
    df["a"] = df["a"].astype(object)
    df.loc[df.sid == "s3", "a"] = "oops"
    msg = check_raises(df, r"value column 'a' is not numeric", ids=["s3"])
    assert "'oops'" in msg


def test_nan_and_nat_times():
    df = long_frame()
    df.loc[df.sid == "s2", "t"] = np.nan
    check_raises(df, r"time column 't' has NaN/Inf", ids=["s2"])
    df = long_frame()
    df["t"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df.t, unit="s")
    df.loc[df.sid == "s4", "t"] = pd.NaT
    check_raises(df, r"time column 't' has NaT", ids=["s4"])


def test_unparseable_and_bool_times():
    df = long_frame()
    df["t"] = df["t"].astype(object)
    df.loc[df.sid == "s1", "t"] = "yesterday"
    check_raises(df, r"time column 't' must hold datetimes, floats or ints", ids=["s1"])
    df = long_frame().assign(t=True)
    check_raises(df, r"time column 't'.*dtype bool")


def test_sequences_without_label_and_conflicting_labels():
    df = long_frame()
    df.loc[df.sid.isin(["s1", "s5"]), "y"] = None
    check_raises(df, r"label column 'y': sequences without a label", ids=["s1", "s5"])
    df = long_frame()
    df.loc[df.index[df.sid == "s2"][0], "y"] = "cow"
    check_raises(df, r"more than one label", ids=["s2"])
    # A label given on only some rows of a sequence is fine.
    df = long_frame()
    first = df.groupby("sid").head(1).index
    df.loc[~df.index.isin(first), "y"] = None
    tb = EventTable.from_frame(df, **KW)
    assert tb.classes == ["cat", "dog"]


def test_bad_regression_target_marks_and_ids():
    df = long_frame().assign(r="x")
    check_raises(df, r"label column 'r'.*finite numbers", ids=["s0"], label_col="r",
                 task="regression")
    df = pd.DataFrame({"sid": [0, 0], "t": [0.0, 1], "m": ["a", None], "y": [0, 0]})
    check_raises(df, r"mark column 'm' has missing marks", ids=[0], mark_col="m", value_cols=[],
                 time_col="t", id_col="sid")
    df = long_frame()
    df.loc[3, "sid"] = None
    check_raises(df, r"id column 'sid' has missing ids")


def test_other_bad_arguments():
    df = long_frame()
    # the unit is the model's: a table-level factor would multiply with it
    for scale in (0, 1 / 3600, 1.0):
        check_raises(df, r"takes no time_scale .*model's time_scale is the only factor",
                     time_scale=scale)
    check_raises(df, r"task must be one of", task="ranking")
    check_raises(df, r"needs value_cols, a mark_col", value_cols=[])
    check_raises(df.assign(a=np.inf), r"value column 'a' has Inf")
    with pytest.raises(ValueError, match="does not exist"):
        EventTable.from_source("/nonexistent/file.csv", **KW)
    with pytest.raises(ValueError, match="DataFrame or a path"):
        EventTable.from_source(42, **KW)
    with pytest.raises(ValueError, match="no rows"):
        EventTable.from_frame(df.iloc[:0], **KW)


def test_split_column():
    df = long_frame()
    fold = {"s0": "train", "s1": "train", "s2": "valid", "s3": "test", "s4": "TRAIN", "s5": "val"}
    df["fold"] = df.sid.map(fold)
    dm = EventDataModule(df, split_col="fold", **KW)
    dm.build()
    names = {k: sorted(dm.table.ids[i] for i in v) for k, v in dm.split_index.items()}
    assert names == {"train": ["s0", "s1", "s4"], "val": ["s2", "s5"], "test": ["s3"]}
    df.loc[df.index[df.sid == "s1"][0], "fold"] = "test"
    check_raises(df, r"split column 'fold'.*more than one split", ids=["s1"], split_col="fold")
    df["fold"] = "holdout"
    check_raises(df, r"split column 'fold' must hold train/val/test", split_col="fold")


def test_stratified_seeded_split():
    y = np.repeat(np.arange(3), [40, 20, 60])
    a = split_indices(len(y), 0.15, 0.15, seed=1, stratify=y)
    b = split_indices(len(y), 0.15, 0.15, seed=1, stratify=y)
    c = split_indices(len(y), 0.15, 0.15, seed=2, stratify=y)
    for x, z in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, z)
    assert not np.array_equal(a[0], c[0])
    tr, va, te = a
    assert len(np.intersect1d(tr, va)) == len(np.intersect1d(tr, te)) == 0
    assert len(tr) + len(va) + len(te) == len(y)
    for k, n in enumerate([40, 20, 60]):
        assert (y[va] == k).sum() == round(0.15 * n) == (y[te] == k).sum()
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.5, 0.1)
    with pytest.raises(ValueError, match="must be < 1"):
        split_indices(10, 0.5, 0.5)


def test_normalisation_uses_train_split_only():
    df = long_frame(n_seq=20)
    # make the non-train sequences wildly different: stats must not move
    dm = EventDataModule(df, seed=0, **KW)
    dm.build()
    tr = dm.split_index["train"]
    train_vals = np.concatenate([dm.table.values[i] for i in tr]).astype(np.float64)
    np.testing.assert_allclose(dm.scaler.mean, train_vals.mean(0), rtol=1e-6)
    np.testing.assert_allclose(dm.scaler.std, train_vals.std(0), rtol=1e-6)
    other = np.setdiff1d(np.arange(len(dm.table)), tr)
    df2 = df.copy()
    moved = df2.sid.isin([dm.table.ids[i] for i in other])
    df2.loc[moved, "a"] += 1000.0
    dm2 = EventDataModule(df2, seed=0, **KW)
    dm2.build()
    np.testing.assert_allclose(dm2.scaler.mean, dm.scaler.mean, rtol=1e-6)
    # a training sample comes out standardised
    x = dm.datasets["train"][0]["values"]
    np.testing.assert_allclose(x, (dm.datasets["train"].table.values[0] - dm.scaler.mean)
                               / dm.scaler.std, rtol=1e-5)


def test_standardizer_nan_and_constant_channels():
    s = Standardizer().fit([np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan]])])
    np.testing.assert_allclose(s.mean, [2.0, 5.0, 0.0])
    np.testing.assert_allclose(s.std, [1.0, 1.0, 1.0])
    out = s.transform(np.array([[np.nan, 5.0, 1.0]]))
    assert np.isnan(out[0, 0]) and out[0, 1] == 0
    with pytest.raises(ValueError, match="empty training split"):
        Standardizer().fit([])
