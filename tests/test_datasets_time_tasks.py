"""Synthetic tasks whose labels need the times, and the summary features of the yardsticks."""

import numpy as np
import pytest

from eventssm.datasets import (
    EventTable,
    TimeDecayDataModule,
    TimeFrequencyDataModule,
    leaky_integral,
    make_decay_task,
    make_frequency_task,
)
from eventssm.datasets.features import (
    frequency_grid,
    gap_scales,
    lomb_scargle_peak,
    time_features,
    value_features,
)


def _same(a: EventTable, b: EventTable) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.times, b.times, strict=True)) and all(
        np.array_equal(x, y) for x, y in zip(a.values, b.values, strict=True)
    ) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("make", [make_frequency_task, make_decay_task])
def test_seeded_and_shaped(make):
    a, b, c = make(60, seed=1), make(60, seed=1), make(60, seed=2)
    assert _same(a, b) and not _same(a, c)
    assert a.num_channels == 1 and a.task == "classification"
    for t in a.times:
        assert t[0] == 0.0 and (np.diff(t) >= 0).all() and t.dtype == np.float64


def test_decay_label_is_the_leaky_integral_of_the_timed_impulses():
    tb = make_decay_task(300, decay=100.0, threshold=2.85, seed=0)
    x = np.array([leaky_integral(t, v[:, 0], 100.0) for t, v in zip(tb.times, tb.values)])
    np.testing.assert_array_equal(tb.labels, (x > 2.85).astype(np.int64))
    print("class-1 share", tb.labels.mean())
    assert 0.35 < tb.labels.mean() < 0.65  # the default threshold balances the classes
    # the same impulses at other times give other labels: the label depends on the times
    y = np.array([leaky_integral(2 * t, v[:, 0], 100.0) > 2.85 for t, v in
                  zip(tb.times, tb.values)])
    assert (y != tb.labels).mean() > 0.1
    # time unit: gaps of tens of units, not 1
    gaps = np.concatenate([np.diff(t) for t in tb.times])
    assert 20 < np.median(gaps) < 200


def test_leaky_integral_by_hand():
    # impulses 1, 2, 4 at t = 0, 10, 30 with decay 10: 1·e^-3 + 2·e^-2 + 4
    got = leaky_integral(np.array([0.0, 10.0, 30.0]), np.array([1.0, 2.0, 4.0]), 10.0)
    assert got == pytest.approx(np.exp(-3) + 2 * np.exp(-2) + 4)


def test_frequency_class_is_recovered_from_the_times():
    pytest.importorskip("scipy")
    tb = make_frequency_task(150, num_classes=3, freq_range=(10.0, 25.0), seed=0)
    edges = np.linspace(np.log(10.0), np.log(25.0), 4)
    freqs = np.exp(np.linspace(np.log(2.0), np.log(100.0), 600))
    pred = [np.searchsorted(edges, lomb_scargle_peak(t, v[:, 0], freqs)[0]) - 1
            for t, v in zip(tb.times, tb.values)]
    acc = np.mean(np.asarray(pred) == tb.labels)
    print("Lomb-Scargle bin accuracy", acc)
    assert acc > 0.9
    gaps = np.concatenate([np.diff(t) for t in tb.times])
    assert 0.002 < np.median(gaps) < 0.02  # time unit: milliseconds-like gaps


def test_generator_arguments_are_checked():
    with pytest.raises(ValueError, match="gap_range"):
        make_frequency_task(10, gap_range=(0.02, 0.002))
    with pytest.raises(ValueError, match="freq_range"):
        make_frequency_task(10, freq_range=(-1.0, 2.0))
    with pytest.raises(ValueError, match="min_len"):
        make_decay_task(10, min_len=5, max_len=4)
    with pytest.raises(ValueError, match="decay"):
        make_decay_task(10, decay=0.0)
    with pytest.raises(ValueError, match="gap_range"):
        TimeDecayDataModule(gap_range=(5.0,))


@pytest.mark.parametrize("cls", [TimeFrequencyDataModule, TimeDecayDataModule])
def test_datamodules_build_and_batch(cls):
    dm = cls(n_sequences=120, batch_size=16, seed=0, pack=False)  # padded (B, L, ...) checked
    dm.build()
    sizes = {k: len(v) for k, v in dm.split_index.items()}
    assert sum(sizes.values()) == 120 and sizes["val"] > 0 and sizes["test"] > 0
    assert dm.d_input == 1 and dm.num_classes == dm.table.num_classes >= 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["values"].shape[0] == 16 and batch["timestamps"].dtype.is_floating_point


def test_value_features_ignore_the_times_and_time_features_do_not():
    tb = make_decay_task(40, seed=3)
    warped = EventTable(tb.ids, [t ** 1.3 * 7.0 for t in tb.times], tb.values, labels=tb.labels,
                        channels=tb.channels, classes=tb.classes)
    a, names = value_features(tb)
    b, _ = value_features(warped)
    assert a.shape == (40, len(names))
    np.testing.assert_array_equal(a, b)
    scales = gap_scales(tb)
    ta, tnames = time_features(tb, scales, frequency_grid(tb, 50))
    tw, _ = time_features(warped, scales, frequency_grid(tb, 50))
    assert ta.shape == (40, len(tnames))
    assert not np.allclose(ta, tw, equal_nan=True)


def test_features_with_missing_values_and_marks():
    vals = [np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]], np.float32),
            np.array([[np.nan, np.nan]], np.float32)]
    tb = EventTable([0, 1], [np.array([0.0, 1.0, 3.0]), np.array([0.0])], vals,
                    [np.array([0, 1, 1]), np.array([1])], np.array([0, 1]), num_marks=2,
                    channels=["a", "b"], classes=[0, 1])
    X, names = value_features(tb)
    row = dict(zip(names, X[0], strict=True))
    assert row["length"] == 3 and row["a:mean"] == 1.5 and row["b:last"] == 4.0
    assert row["a:observed_share"] == pytest.approx(2 / 3) and row["mark1:share"] == pytest.approx(2 / 3)
    assert np.isnan(dict(zip(names, X[1], strict=True))["a:mean"])  # never observed
    T, tn = time_features(tb, [1.0])
    trow = dict(zip(tn, T[0], strict=True))
    assert trow["duration"] == 3.0 and trow["a:time_since_last"] == 2.0
    assert trow["b:decayed_sum@1"] == pytest.approx(3 * np.exp(-2) + 4)


@pytest.mark.slow
def test_yardsticks_separate_time_free_from_time_aware():
    """The point of the tasks: trees without the times stay near chance, with them near 1."""
    pytest.importorskip("sklearn")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "yardsticks", Path(__file__).resolve().parents[1] / "experiments" / "yardsticks.py")
    ys = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ys)
    for cls in (TimeFrequencyDataModule, TimeDecayDataModule):
        dm = cls(n_sequences=600, seed=0)
        dm.build()
        res = ys.yardsticks(dm, seeds=(0,), gru=False)
        free = res["time-free"]["test"][0]["acc"]
        timed = res["uses times"]["test"][0]["acc"]
        print(cls.__name__, free, timed)
        assert timed - free > 0.2
