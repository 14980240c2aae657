"""Data sources: UEA files shipped with aeon, the drop protocol, synthetic data, bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eventssm.datasets import (
    ByteDataModule,
    PointProcessDataModule,
    SyntheticDataModule,
    UEADataModule,
    available_uea,
    drop_time_indices,
    load_uea,
    make_point_processes,
    make_sinusoids,
    simulate_hawkes,
    simulate_poisson,
    window_offsets,
)

pytest.importorskip("aeon")


def test_japanese_vowels_official_split():
    assert "JapaneseVowels" in available_uea()
    tb = load_uea("JapaneseVowels")
    assert len(tb) == 640 and tb.num_channels == 12 and tb.num_classes == 9
    assert (tb.split == "train").sum() == 270 and (tb.split == "test").sum() == 370
    lengths = tb.lengths()
    assert lengths.min() == 7 and lengths.max() == 29
    assert not tb.has_missing
    dm = UEADataModule("JapaneseVowels", val_fraction=0.15, seed=0)
    dm.build()
    tr, va, te = (dm.split_index[k] for k in ("train", "val", "test"))
    assert len(tr) + len(va) == 270 and len(te) == 370
    assert set(tb.split[te]) == {"test"} and set(tb.split[np.r_[tr, va]]) == {"train"}
    assert dm.num_classes == 9 and dm.d_input == 12 and dm.use_observed is False
    with pytest.raises(ValueError, match="not shipped with aeon"):
        load_uea("NoSuchSet")


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_drop_protocol(rate):
    full = load_uea("JapaneseVowels")
    a = drop_time_indices(full, rate, seed=1)
    b = drop_time_indices(full, rate, seed=1)
    c = drop_time_indices(full, rate, seed=2)
    for i in range(len(full)):
        L = len(full.times[i])
        kept = len(a.times[i])
        assert kept == L - min(int(round(rate * L)), L - 1)
        np.testing.assert_array_equal(a.times[i], b.times[i])
        # the kept rows are rows of the original, all channels together, times preserved
        orig_t = a.times[i] + full.times[i][np.flatnonzero(
            (full.values[i] == a.values[i][0]).all(1))[0]]
        rows = orig_t.astype(int)
        np.testing.assert_array_equal(full.values[i][rows], a.values[i])
    assert any(not np.array_equal(x, y) for x, y in zip(a.times, c.times, strict=True))
    dm = UEADataModule("JapaneseVowels", missing_rate=rate, seed=0, drop_seed=1)
    dm.build()
    sizes = {k: len(v) for k, v in dm.split_index.items()}
    assert sum(sizes.values()) == 640 and sizes["train"] == 448  # pooled 70/15/15
    # stratified: each class in val keeps its share
    y = dm.table.labels
    for k in range(9):
        assert abs((y[dm.split_index["val"]] == k).sum() - 0.15 * (y == k).sum()) <= 1
    batch = next(iter(dm.val_dataloader()))
    assert (batch["integration_timesteps"] > 1).any()  # gaps became irregular
    with pytest.raises(ValueError, match="missing_rate"):
        UEADataModule("JapaneseVowels", missing_rate=1.0)


def test_generic_uea_loader():
    tb = load_uea("BasicMotions", "train")
    assert tb.num_channels == 6 and len(tb) == 40 and tb.num_classes == 4


def test_synthetic_seeded_and_structured():
    a = make_sinusoids(20, seed=3)
    b = make_sinusoids(20, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.values, b.values, strict=True))
    assert not np.array_equal(make_sinusoids(20, seed=4).values[0], a.values[0])
    for t in a.times:
        assert t[0] == 0 and (np.diff(t) >= 0).all() and 20 <= len(t) <= 60
    dm = SyntheticDataModule(kind="spiral", n_sequences=64, task="regression", batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["values"].shape[-1] == 2 and batch["target"].shape == (8, 1)
    assert dm.d_target == 1
    # regression targets are standardised with training statistics
    y = dm.table.labels[dm.split_index["train"]]
    np.testing.assert_allclose(dm.target_scaler.mean, y.mean(0), rtol=1e-5)
    fc = SyntheticDataModule(n_sequences=32, task="none", target="forecast", forecast_steps=4,
                             batch_size=8, pack=False)  # the padded layout is checked below
    b = next(iter(fc.train_dataloader()))
    assert b["query_times"].shape == (8, 4) and b["target"].shape == (8, 4, 1)
    last = b["timestamps"].gather(1, (b["lengths"] - 1)[:, None])
    assert (b["query_times"] >= last).all()
    assert fc.use_observed and fc.d_target == 1
    with pytest.raises(ValueError, match="no history left"):
        SyntheticDataModule(n_sequences=8, task="none", target="forecast", forecast_steps=60,
                            min_len=5, max_len=10).build()


def test_poisson_rate_and_hawkes_clustering():
    rng = np.random.default_rng(0)
    t, m = simulate_poisson([1.0, 3.0], 2000.0, rng)
    assert abs(len(t) / 2000.0 - 4.0) < 0.2
    assert abs((m == 1).mean() - 0.75) < 0.03
    mu, alpha, beta = [0.3], [[0.6]], 2.0
    t, _ = simulate_hawkes(mu, alpha, beta, 5000.0, np.random.default_rng(1))
    # stationary rate of a univariate Hawkes process: mu / (1 - alpha)
    assert abs(len(t) / 5000.0 - 0.3 / 0.4) < 0.08
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() > 1.2  # clustered: more variable than Poisson (cv = 1)
    with pytest.raises(ValueError, match="spectral radius"):
        simulate_hawkes([0.1], [[1.2]], 1.0, 10.0, rng)


def test_point_process_next_event_targets():
    tb = make_point_processes(8, num_marks=3, seed=0)
    assert tb.num_marks == 3 and tb.values is None
    dm = PointProcessDataModule(n_sequences=40, num_marks=3, batch_size=8)
    b = next(iter(dm.train_dataloader()))
    assert dm.per_event and dm.num_classes == 3
    L = b["marks"].shape[1]
    for i in range(8):
        n = int(b["lengths"][i])
        assert b["target"][i, : n - 1].tolist() == b["marks"][i, 1:n].tolist()
        assert (b["target"][i, n - 1:] == -100).all()
        torch.testing.assert_close(b["target_gap"][i, : n - 1].double(),
                                   b["integration_timesteps"][i, 1:n], rtol=1e-6, atol=1e-6)
    assert L <= 128


def test_window_offsets_and_bytes(tmp_path):
    offs = list(window_offsets(1000, 64, 50, seed=0))
    assert len(offs) == 50 and min(offs) >= 0 and max(offs) <= 1000 - 64 - 1
    assert offs == list(window_offsets(1000, 64, 50, seed=0))
    assert offs != list(window_offsets(1000, 64, 50, seed=1))
    assert set(window_offsets(65, 64, 20)) == {0}
    with pytest.raises(ValueError, match="too short"):
        list(window_offsets(64, 64, 1))
    text = ("the quick brown fox jumps over the lazy dog. " * 40).encode()
    (tmp_path / "a.txt").write_bytes(text)
    dm = ByteDataModule(str(tmp_path / "*.txt"), window=32, train_windows=16, batch_size=4)
    b = next(iter(dm.train_dataloader()))
    assert b["input_ids"].shape == (4, 32) and b["input_ids"].dtype == torch.long
    assert (b["input_ids"][:, 1:] == b["target"][:, :-1]).all()
    with pytest.raises(ValueError, match="no file matches"):
        ByteDataModule(str(tmp_path / "*.md")).build()
