"""timestamps -> integration timesteps."""

import numpy as np
import pytest
import torch

from eventssm.time import check_timesteps, length_mask, timesteps_from_timestamps


def test_backward_differences_float64():
    t = torch.tensor([[1.7e9, 1.7e9 + 0.25, 1.7e9 + 1.0]], dtype=torch.float64)
    tau = timesteps_from_timestamps(t)
    assert tau.dtype == torch.float64
    assert tau.tolist() == [[0.0, 0.25, 0.75]]


def test_int64_nanoseconds_exact():
    base = np.datetime64("2026-01-01T00:00:00", "ns").astype(np.int64)
    t = torch.tensor([[base, base + 1, base + 3_000_000_000]])
    tau = timesteps_from_timestamps(t, time_scale=1e-9)
    print(tau)
    assert torch.allclose(tau, torch.tensor([[0.0, 1e-9, 2.999999999]], dtype=torch.float64), rtol=1e-12, atol=0)


def test_last_time_time_scale_lengths_and_unbatched():
    t = torch.tensor([[10.0, 12.0, 15.0, 15.0], [1.0, 4.0, 0.0, 0.0]])
    tau = timesteps_from_timestamps(t, time_scale=0.5, last_time=torch.tensor([9.0, 0.0]),
                                    lengths=torch.tensor([4, 2]))
    assert tau.tolist() == [[0.5, 1.0, 1.5, 0.0], [0.5, 1.5, 0.0, 0.0]]
    assert timesteps_from_timestamps(torch.tensor([0.0, 2.0])).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([[0.0, 2.0, 1.0]]), r"non-decreasing; decreases at position \(0, 2\)"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), r"finite.*\(0, 1\)"),
    (torch.tensor([[0.0, float("inf")]]), "finite"),
    (torch.zeros(2, 2, 2), "shape"),
    (torch.tensor([[True, False]]), "real float or integer"),
])
def test_bad_timestamps(bad, match):
    with pytest.raises(ValueError, match="timestamps") as e:
        timesteps_from_timestamps(bad)
    assert e.match(match)


def test_bad_time_scale_last_time_lengths():
    t = torch.tensor([[1.0, 2.0]])
    for s in (0, -1.0, float("nan"), "hours"):
        with pytest.raises(ValueError, match="time_scale"):
            timesteps_from_timestamps(t, time_scale=s)
    with pytest.raises(ValueError, match="last_time"):
        timesteps_from_timestamps(t, last_time=torch.tensor([5.0]))
    with pytest.raises(ValueError, match="lengths"):
        timesteps_from_timestamps(t, lengths=torch.tensor([3]))
    # padding is not validated (it may hold anything)
    tau = timesteps_from_timestamps(torch.tensor([[1.0, 2.0, 0.0, float("nan")]]), lengths=torch.tensor([2]))
    assert tau.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_check_timesteps_and_length_mask():
    with pytest.raises(ValueError, match=r"integration_timesteps must be >= 0.*\(1, 0\)"):
        check_timesteps(torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="finite"):
        check_timesteps(torch.tensor([[0.0, float("nan")]]))
    assert length_mask(torch.tensor([0, 2]), 3).tolist() == [[False] * 3, [True, True, False]]
    with pytest.raises(ValueError, match=r"lengths\[0\] = 4"):
        length_mask(torch.tensor([4]), 3)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_narrow_integer_timestamps_do_not_wrap(dtype):
    """Differences of narrow integer times are taken in int64: no wrap-around, no overflow."""
    info = torch.iinfo(dtype)
    t = torch.tensor([info.min, info.min + 1, info.max - 1, info.max], dtype=dtype)
    tau = timesteps_from_timestamps(t)
    expected = torch.tensor([0, 1, info.max - 1 - (info.min + 1), 1], dtype=torch.float64)
    print(dtype, tau.tolist())
    torch.testing.assert_close(tau, expected)
    with pytest.raises(ValueError, match="non-decreasing"):
        timesteps_from_timestamps(t.flip(0))
