"""Lightning tasks: inert padding end to end, forecasting splice, checkpoint reload, DDP."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from eventssm import Asymmetric, Discretization, Scaled, Standard
from eventssm.datasets import (
    EventDataModule,
    PointProcessDataModule,
    SyntheticDataModule,
    collate_events,
)
from eventssm.tasks import (
    ByteLM,
    EncoderConfig,
    EventClassifier,
    EventRegressor,
    LMConfig,
    splice_queries,
)

TINY = dict(d_model=16, n_layers=1, d_state=4, expand=2, dropout=0.0)  # equalities below need no dropout


def rand_samples(n=4, C=2, marks=0, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        L_ = int(rng.integers(2, 12))
        v = rng.normal(size=(L_, C)).astype(np.float32)
        if nan:
            v[rng.random((L_, C)) < 0.3] = np.nan
        s = {"timestamps": np.cumsum(rng.exponential(size=L_)) - 0.0, "values": v,
             "target": np.int64(i % 2), "index": i}
        s["timestamps"] -= s["timestamps"][0]
        if marks:
            s["marks"] = rng.integers(0, marks, L_)
        out.append(s)
    return out


@pytest.mark.parametrize("disc", [Standard("zoh"), Asymmetric("mamba"), Scaled("bilinear")],
                         ids=repr)
@pytest.mark.parametrize("per_event", [False, True])
def test_padding_is_inert_end_to_end(disc, per_event):
    torch.manual_seed(0)
    model = EventClassifier(num_classes=3, d_input=2, num_marks=3, use_observed=True,
                            per_event=per_event,
                            backbone=EncoderConfig(**TINY, discretization=disc, pooling="time"))
    model.eval()
    samples = rand_samples(5, marks=3, nan=True)
    with torch.no_grad():
        batched = model(collate_events(samples, use_observed=True))
        for i, s in enumerate(samples):
            alone = model(collate_events([s], use_observed=True))[0]
            n = len(s["timestamps"])
            got = batched[i, :n] if per_event else batched[i]
            want = alone[:n] if per_event else alone
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and the outputs depend on the data (not a constant function)
    assert not torch.allclose(batched[0], batched[1])


def test_splice_queries_layout():
    s = [{"timestamps": np.array([0.0, 1.0, 2.0]), "values": np.ones((3, 1), np.float32),
          "query_times": np.array([2.5, 4.0]), "target": np.zeros((2, 1), np.float32)},
         {"timestamps": np.array([0.0]), "values": 2 * np.ones((1, 1), np.float32),
          "query_times": np.array([3.0]), "target": np.zeros((1, 1), np.float32)}]
    b = collate_events(s, use_observed=True)
    inp, pos = splice_queries(b)
    assert inp["lengths"].tolist() == [5, 2]
    assert pos.tolist()[0] == [3, 4] and pos[1, 0] == 1
    assert inp["timestamps"][0].tolist() == [0.0, 1.0, 2.0, 2.5, 4.0]
    assert inp["timestamps"][1].tolist() == [0.0, 3.0, 3.0, 3.0, 3.0]  # padding repeats
    assert inp["observed"][0, :, 0].tolist() == [True, True, True, False, False]
    assert inp["values"][1, :, 0].tolist() == [2.0, 0, 0, 0, 0]


def test_forecast_does_not_see_targets_and_is_batch_invariant():
    torch.manual_seed(0)
    m = EventRegressor(d_target=1, d_input=1, use_observed=True, backbone=EncoderConfig(**TINY))
    m.eval()
    dm = SyntheticDataModule(n_sequences=16, task="none", target="forecast", forecast_steps=3,
                             batch_size=4)
    dm.build()
    ds = dm.datasets["train"]
    b = collate_events([ds[i] for i in range(4)], use_observed=True)
    with torch.no_grad():
        y = m(b)
        b2 = dict(b, target=b["target"] + 100.0)
        torch.testing.assert_close(m(b2), y)  # targets never enter the input
        alone = m(collate_events([ds[2]], use_observed=True))
    assert y.shape == (4, 3, 1)
    torch.testing.assert_close(y[2], alone[0], rtol=1e-5, atol=1e-5)
    m2 = EventRegressor(d_target=1, d_input=1, use_observed=False, backbone=EncoderConfig(**TINY))
    with pytest.raises(ValueError, match="use_observed=True"):
        m2(b)


def _discretizations(model):
    return [m.discretization for m in model.modules()
            if isinstance(getattr(m, "discretization", None), Discretization)]


def fit_briefly(model, dm, steps=3, **kw):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=1, **kw)
    trainer.fit(model, dm)
    return trainer


@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Scaled("dirac"), "bilinear"], ids=str)
def test_checkpoint_reload_rebuilds_discretization(tmp_path, disc):
    dm = SyntheticDataModule(n_sequences=48, batch_size=8, min_len=5, max_len=15)
    model = EventClassifier(num_classes=dm.num_classes, d_input=dm.d_input,
                            backbone=EncoderConfig(**TINY, discretization=disc))
    trainer = fit_briefly(model, dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = EventClassifier.load_from_checkpoint(path)
    assert loaded.hparams.backbone.discretization == disc
    d0, d1 = _discretizations(model), _discretizations(loaded)
    assert d0 and d1 == d0
    want = disc if isinstance(disc, Discretization) else Asymmetric(disc)  # lrnnx string rule
    assert set(d1) == {want}
    model.eval()
    loaded.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys()


def test_bytelm_reload_and_sample(tmp_path):
    torch.manual_seed(0)
    m = ByteLM(backbone=LMConfig(d_model=16, n_layers=1, d_state=4,
                                 discretization=Asymmetric("zoh")))
    path = tmp_path / "lm.ckpt"
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(path)
    m2 = ByteLM.load_from_checkpoint(path)
    assert m2.hparams.backbone.discretization == Asymmetric("zoh")
    ids = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(m2(ids), m(ids), rtol=0, atol=0)
    a = m.sample("ab", max_new_tokens=5, temperature=1.0, seed=3)
    assert a == m2.sample("ab", max_new_tokens=5, temperature=1.0, seed=3)
    assert a.startswith("ab")
    assert m.sample(b"x", max_new_tokens=4, temperature=0).startswith("x")
    with pytest.raises(ValueError, match="at least one byte"):
        m.sample("")


def test_regressor_per_sequence_from_pandas_table():
    rng = np.random.default_rng(0)
    rows = [{"id": s, "time": t, "v": rng.normal(), "y": float(s)}
            for s in range(12) for t in np.sort(rng.uniform(0, 5, 4))]
    dm = EventDataModule(pd.DataFrame(rows), value_cols=["v"], label_col="y", task="regression",
                         batch_size=4)
    m = EventRegressor(d_target=dm.d_target, d_input=dm.d_input, backbone=EncoderConfig(**TINY))
    out = m(next(iter(dm.train_dataloader())))
    assert out.shape == (4, 1)


# ------------------------------------------------------------------ DDP (ddp_spawn in pytest)
def _run(devices, strategy, tmp_path, kind):
    L.seed_everything(0)
    backbone = EncoderConfig(**TINY, discretization=Asymmetric("zoh"))
    if kind == "sequence":
        dm = SyntheticDataModule(n_sequences=80, batch_size=8, min_len=5, max_len=15, seed=0)
        model = EventClassifier(num_classes=dm.num_classes, d_input=dm.d_input,
                                backbone=backbone, lr=1e-2, scheduler="constant")
    else:  # per-event targets: ranks hold different numbers of targets per step
        dm = PointProcessDataModule(n_sequences=60, horizon=15.0, max_events=100, batch_size=8,
                                    seed=0)
        model = EventClassifier(num_classes=dm.num_classes, num_marks=dm.num_marks,
                                per_event=True, backbone=backbone, lr=1e-2,
                                scheduler="constant")
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=devices, strategy=strategy,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    path = tmp_path / f"final-{kind}-{devices}.ckpt"
    trainer.save_checkpoint(path)
    # the last validation epoch of fit (ddp_spawn sends callback_metrics back to this process)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return path, metrics


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
@pytest.mark.parametrize("kind", ["sequence", "per_event"])
def test_ddp_spawn_matches_single_process(tmp_path, kind, fresh_ddp_port):
    p1, m1 = _run(1, "auto", tmp_path, kind)
    p2, m2 = _run(2, "ddp_spawn", tmp_path, kind)
    s1 = torch.load(p1, weights_only=False)["state_dict"]
    s2 = torch.load(p2, weights_only=False)["state_dict"]
    for k in s1:
        torch.testing.assert_close(s2[k], s1[k], rtol=1e-5, atol=1e-6, msg=k)
    print(m1, m2)
    assert m2["val/acc"] == pytest.approx(m1["val/acc"], abs=1e-6)
    assert m2["val/loss"] == pytest.approx(m1["val/loss"], rel=1e-5)
    assert m2["train/acc"] == pytest.approx(m1["train/acc"], abs=1e-6)
