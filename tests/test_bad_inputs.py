"""Bad inputs found by a probe of the public API: each is refused with an error that names the
argument, what it got and what it expects (or, for the uint64 table, gives the right gaps)."""

import numpy as np
import pandas as pd
import pytest
import torch

from eventssm import EventEncoder, Mamba, MambaLM, timesteps_from_timestamps
from eventssm.time import check_time_scale


def test_mamba_step_with_gaps_of_the_wrong_shape():
    m = Mamba(8, d_state=4, discretization="zoh")
    cache = m.allocate_inference_cache(2)
    x = torch.randn(2, 1, 8)
    msg = r"integration_timesteps of one step must have shape \(2,\) or \(2, 1\).*\(2, 2\)"
    with pytest.raises(ValueError, match=msg):
        m.step(x, cache, integration_timesteps=torch.rand(2, 2))
    with pytest.raises(ValueError, match=r"timestamps of one step must have shape"):
        m.step(x, cache, timestamps=torch.rand(3))
    out, _ = m.step(x, cache, integration_timesteps=torch.rand(2, 1))  # (B, 1) and (B,) both work
    out2, _ = m.step(x, cache, integration_timesteps=torch.rand(2))
    assert out.shape == out2.shape == (2, 1, 8)


def test_lm_step_with_gaps_of_the_wrong_shape():
    lm = MambaLM(11, 8, d_state=4, n_layers=1, discretization="zoh")
    cache = lm.allocate_inference_cache(2)
    with pytest.raises(ValueError, match="integration_timesteps of one step"):
        lm.step(torch.tensor([1, 2]), cache, integration_timesteps=torch.rand(2, 3))


@pytest.mark.parametrize("with_lengths", [True, False])
def test_encoder_unbatched_values_with_batched_marks(with_lengths):
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, num_marks=3, d_state=4)
    values = torch.randn(7, 2)  # unbatched
    marks = torch.randint(0, 3, (2, 7))  # batched
    kw = dict(lengths=torch.tensor([7, 5])) if with_lengths else {}
    with pytest.raises(ValueError, match=r"values is unbatched \(7, 2\), so marks must be unbatched too.*\(2, 7\)"):
        enc(values, marks, **kw)
    # all unbatched works
    assert enc(values, marks[0]).shape == (8,)


def test_encoder_unbatched_with_batched_lengths():
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, d_state=4)
    with pytest.raises(ValueError, match="lengths must be unbatched too"):
        enc(torch.randn(7, 2), lengths=torch.tensor([7, 5]))


@pytest.mark.parametrize("scale", [np.float32(0.5), np.float64(2.0), np.int64(3), torch.tensor(0.25)])
def test_time_scale_accepts_numpy_and_tensor_scalars(scale):
    assert check_time_scale(scale) == pytest.approx(float(scale))
    gaps = timesteps_from_timestamps(torch.tensor([0.0, 1.0, 3.0]), time_scale=scale)
    assert torch.allclose(gaps, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64) * float(scale))
    assert Mamba(8, d_state=4, time_scale=scale).time_scale == pytest.approx(float(scale))
    enc = EventEncoder(d_model=8, n_layers=1, d_input=1, d_state=4, time_scale=scale)
    assert type(enc.time_scale) is float and type(enc.backbone.time_scale) is float


@pytest.mark.parametrize("scale", ["0.5", None, True, torch.tensor([1.0, 2.0])])
def test_time_scale_of_the_wrong_type_names_time_scale(scale):
    for build in (lambda: Mamba(8, d_state=4, time_scale=scale),
                  lambda: EventEncoder(d_model=8, n_layers=1, d_input=1, d_state=4, time_scale=scale),
                  lambda: timesteps_from_timestamps(torch.zeros(3), time_scale=scale)):
        with pytest.raises(ValueError, match="time_scale must be a positive finite real number"):
            build()


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), np.float32("nan")])
def test_time_scale_of_a_bad_value(scale):
    with pytest.raises(ValueError, match="time_scale must be a positive finite number"):
        Mamba(8, d_state=4, time_scale=scale)


def test_batch_size_larger_than_the_training_split_with_drop_last():
    from eventssm.datasets import EventDataModule

    rng = np.random.default_rng(0)
    rows = [dict(id=i, time=float(t), x=rng.normal(), label=i % 2) for i in range(20) for t in range(5)]
    dm = EventDataModule(pd.DataFrame(rows), value_cols=["x"], batch_size=64, drop_last=True)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"batch_size 64 is larger than the training split \(\d+ sequences\)"):
        dm.train_dataloader()
    dm = EventDataModule(pd.DataFrame(rows), value_cols=["x"], batch_size=64, drop_last=False)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 1


def test_uint64_times_across_2_63_in_a_table():
    from eventssm.datasets import EventTable

    t = pd.Series([2**63 - 4, 2**63, 2**63 + 8], dtype="uint64")
    df = pd.DataFrame({"id": [0, 0, 0], "time": t, "x": [1.0, 2.0, 3.0], "y": [0, 0, 0]})
    table = EventTable.from_frame(df, id_col="id", time_col="time", value_cols=["x"], label_col="y")
    print(table.times[0])
    np.testing.assert_array_equal(table.times[0], [0.0, 4.0, 12.0])
    wide = pd.Series([0, 2**63 + 1], dtype="uint64")
    df = pd.DataFrame({"id": [0, 0], "time": wide, "x": [1.0, 2.0], "y": [0, 0]})
    with pytest.raises(ValueError, match="uint64 times span 2\\^63 or more"):
        EventTable.from_frame(df, id_col="id", time_col="time", value_cols=["x"], label_col="y")


@pytest.mark.parametrize("values,marks,match", [
    (torch.randn(5), None, r"values must be \(B, L, C\) or unbatched \(L, C\), got shape \(5,\)"),
    (torch.randn(1, 2, 5, 3), None, r"values must be .*got shape \(1, 2, 5, 3\)"),
    (None, torch.zeros(1, 2, 5, dtype=torch.long), r"marks must be \(B, L\) or unbatched \(L,\)"),
])
def test_encoder_inputs_of_the_wrong_rank_name_the_argument(values, marks, match):
    enc = EventEncoder(d_input=3 if values is not None else 0, num_marks=4 if marks is not None else 0,
                       d_model=8, n_layers=1, d_state=4)
    with pytest.raises(ValueError, match=match):
        enc(values, marks)
