"""Time units that take care of themselves: gap statistics, time_scale='auto', and the same model
whether the table's times are seconds, hours or nanosecond datetimes."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

lightning = pytest.importorskip("lightning")

from eventssm.datasets import EventDataModule, gap_statistics, resolve_time_scale  # noqa: E402
from eventssm.tasks import EncoderConfig, EventClassifier  # noqa: E402


def _table(n_seq=40, seed=0):
    """A small labelled table whose times are seconds (class = fast or slow sampling)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_seq):
        y = i % 2
        n = int(rng.integers(5, 12))
        t = np.cumsum(rng.exponential(30.0 if y else 300.0, n))
        for tj in t:
            rows.append((i, float(tj), float(rng.standard_normal()), y))
    return pd.DataFrame(rows, columns=["id", "time", "x", "label"])


def test_gap_statistics_and_auto_scale():
    times = [np.array([0.0, 1.0, 1.0, 4.0]), np.array([5.0]), np.array([0.0, 2.0])]
    st = gap_statistics(times)
    gaps = np.array([1.0, 0.0, 3.0, 2.0])
    print(st.report(resolve_time_scale("auto", st)))
    assert st.n_gaps == 4 and st.zero_share == pytest.approx(0.25)
    assert st.median == pytest.approx(np.median(gaps[gaps > 0]))
    assert resolve_time_scale("auto", st) == pytest.approx(1 / st.median)
    assert resolve_time_scale(0.5, st) == 0.5
    # nothing positive to measure: the unit stays as it is
    assert resolve_time_scale("auto", gap_statistics([np.array([1.0, 1.0])])) == 1.0
    for bad in ("hours", 0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="time_scale"):
            resolve_time_scale(bad, st)


def test_datamodule_reports_gaps_and_rejects_bad_time_scale():
    df = _table()
    dm = EventDataModule(df, value_cols=["x"], id_col="id", time_col="time", label_col="label")
    dm.build()
    train_times = [dm.table.times[i] for i in dm.split_index["train"]]
    expected = 1 / gap_statistics(train_times).median
    print("time_scale", dm.time_scale, "expected", expected)
    assert dm.time_scale == pytest.approx(expected)
    with pytest.raises(ValueError, match="time_scale"):
        EventDataModule(df, value_cols=["x"], time_scale="minutes")


def _fit_val_loss(df, seed=0):
    dm = EventDataModule(df, value_cols=["x"], id_col="id", time_col="time", label_col="label",
                         batch_size=8, seed=0)
    dm.build()
    lightning.seed_everything(seed)
    model = EventClassifier(num_classes=2, d_input=1, time_scale=dm.time_scale,
                            backbone=EncoderConfig(d_model=16, n_layers=1, d_state=4,
                                                   discretization="zoh"))
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"], dm.time_scale


def test_seconds_hours_and_nanosecond_datetimes_give_the_same_model():
    df = _table()
    hours = df.assign(time=df["time"] / 3600)
    stamps = df.assign(time=pd.Timestamp("2026-01-01") + pd.to_timedelta(df["time"], unit="s"))
    results = [_fit_val_loss(d) for d in (df, hours, stamps)]
    print("val loss / time_scale (s, h, datetime):", results)
    losses = [r[0] for r in results]
    assert results[1][1] == pytest.approx(results[0][1] * 3600, rel=1e-9)
    assert max(losses) - min(losses) < 1e-4 * max(1.0, abs(losses[0]))
    # a fixed unit instead of 'auto' does change the model: the test above is not vacuous
    dm = EventDataModule(hours, value_cols=["x"], time_scale=1.0)
    assert dm.time_scale == 1.0 != pytest.approx(results[1][1])


def test_encoder_scales_given_gaps_and_timestamps_alike():
    from eventssm import EventEncoder

    torch.manual_seed(0)
    enc = EventEncoder(d_model=8, n_layers=1, d_input=1, discretization="zoh", time_scale=0.25,
                       use_fast_path=False)
    v = torch.randn(2, 6, 1)
    t = torch.cumsum(torch.rand(2, 6, dtype=torch.float64), 1)
    t = t - t[:, :1]
    tau = torch.zeros_like(t)
    tau[:, 1:] = t[:, 1:] - t[:, :-1]
    a = enc(v, timestamps=t)
    b = enc(v, integration_timesteps=tau)
    print("max diff", (a - b).abs().max().item())
    torch.testing.assert_close(a, b)


def test_gap_beyond_float32_is_an_error_not_nan():
    """A float64 gap that overflows float32 (the scan's arithmetic) is refused by name."""
    from eventssm import Mamba

    torch.manual_seed(0)
    block = Mamba(8, discretization="bilinear", use_fast_path=False)
    x = torch.randn(1, 3, 8)
    tau = torch.tensor([[0.0, 1e39, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"integration_timesteps: the gap 1e\+39 at position \(0, 1\) exceeds"):
        block(x, integration_timesteps=tau)
    t = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    block_s = Mamba(8, discretization="bilinear", use_fast_path=False, time_scale=1e39)
    with pytest.raises(ValueError, match="timestamps: the gap .* exceeds"):
        block_s(x, timestamps=t)
    assert torch.isfinite(block(x, integration_timesteps=tau.clamp(max=1e30))).all()
