"""timestamps -> integration timesteps."""

from fractions import Fraction

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


def _gap_oracle(seqs, time_scale):
    """Each sequence's own backward differences in float64 (numpy), 0 at its first step."""
    return [np.concatenate([[0.0], np.diff(np.asarray(s)).astype(np.float64)])[: len(s)] * time_scale
            for s in seqs]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.int64])
def test_padded_and_packed_gaps_follow_one_rule(dtype):
    """Right-padded (``lengths``) and packed (``cu_seqlens``) sequences get the same gaps: each
    sequence's backward differences, 0 at its first step, times the unit, compared with numpy's
    float64 ``diff`` per sequence (with an empty sequence, a single event and garbage padding)."""
    from eventssm.packing import cu_seqlens_from_lengths, packed_timesteps

    rng = np.random.default_rng(0)
    lens = [4, 1, 0, 6]
    big = 10**15 if dtype == torch.int64 else 1000  # int64: nanoseconds since the epoch
    seqs = [np.sort(rng.integers(0, 10**6, n)) + rng.integers(0, big) for n in lens]
    seqs = [torch.tensor(s).to(dtype).numpy() for s in seqs]  # the values the test passes
    want = _gap_oracle([s.astype(np.float64) if dtype != torch.int64 else s for s in seqs], 0.5)
    L = max(lens)
    padded = torch.full((len(lens), L), -7, dtype=dtype)  # padding may hold anything
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = torch.from_numpy(s)
    got_padded = timesteps_from_timestamps(padded, lengths=torch.tensor(lens), time_scale=0.5)
    packed = torch.from_numpy(np.concatenate(seqs))[None]
    got_packed = packed_timesteps(packed, cu_seqlens_from_lengths(torch.tensor(lens)), time_scale=0.5)
    want_padded = np.zeros((len(lens), L))
    for i, w in enumerate(want):
        want_padded[i, : len(w)] = w
    want_packed = np.concatenate(want)[None]
    err_padded = float(np.abs(got_padded.numpy() - want_padded).max())
    err_packed = float(np.abs(got_packed.numpy() - want_packed).max())
    print(dtype, "max |gap - numpy|: padded", err_padded, "packed", err_packed)
    assert got_padded.dtype == got_packed.dtype == torch.float64
    assert err_padded == 0.0 and err_packed == 0.0


def test_packed_gap_that_overflows_float64_names_its_packed_position():
    from eventssm.packing import packed_timesteps

    t = torch.tensor([[0.0, -1e308, 1e308]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"gap at packed position 2 overflows float64"):
        packed_timesteps(t, torch.tensor([0, 1, 3]))


def test_gaps_are_checked_with_one_device_read(monkeypatch):
    """Finite times, no decrease and finite gaps are checked together: one host read when all is
    well, padded or packed (each read waits for the device)."""
    from eventssm.packing import packed_timesteps
    from tests.helpers import count_device_reads

    t = torch.tensor([[0.0, 1.0, 3.0, 0.5, 2.0]], dtype=torch.float64)
    cu = torch.tensor([0, 3, 5])
    reads = count_device_reads(monkeypatch)
    timesteps_from_timestamps(t[:, :3], time_scale=0.5)
    print("padded reads:", reads)
    assert len(reads) == 1
    reads.clear()
    packed_timesteps(t, cu, time_scale=0.5)
    print("packed reads:", reads)
    assert len(reads) == 1


@pytest.mark.parametrize("packed", [False, True])
def test_time_scale_is_the_one_factor_on_every_gap(packed):
    """A block's time_scale applies to gaps however they come in (timestamps or the gaps
    themselves), in forward and step, padded and packed, as EventEncoder's does."""
    from eventssm import Asymmetric, Mamba

    torch.manual_seed(0)
    scale = 0.25
    kw = dict(d_state=4, discretization=Asymmetric("zoh"), backend="torch")
    scaled = Mamba(8, time_scale=scale, **kw).double()
    unit = Mamba(8, **kw).double()
    unit.load_state_dict(scaled.state_dict())
    x = torch.randn(1 if packed else 2, 9, 8, dtype=torch.float64)
    t = torch.cumsum(torch.rand(x.shape[:2], dtype=torch.float64), 1)
    tau = torch.cat([torch.zeros_like(t[:, :1]), t.diff(dim=1)], 1)
    extra = dict(cu_seqlens=torch.tensor([0, 4, 9])) if packed else {}
    if packed:
        tau[0, 4] = 0.0  # a sequence's first gap
    want = unit(x, integration_timesteps=tau * scale, **extra)
    got_gaps = scaled(x, integration_timesteps=tau, **extra)
    got_times = scaled(x, timestamps=t, **extra)
    err = max((got_gaps - want).abs().max().item(), (got_times - want).abs().max().item())
    print(f"max |Δ| = {err:.2e}")
    assert err < 1e-12
    if not packed:  # one recurrent step with its gap
        c1, c2 = scaled.allocate_inference_cache(2), unit.allocate_inference_cache(2)
        scaled(x[:, :5], integration_timesteps=tau[:, :5], inference_cache=c1)
        unit(x[:, :5], integration_timesteps=tau[:, :5] * scale, inference_cache=c2)
        y1, _ = scaled.step(x[:, 5], c1, integration_timesteps=tau[:, 5])
        y2, _ = unit.step(x[:, 5], c2, integration_timesteps=tau[:, 5] * scale)
        assert (y1 - y2).abs().max().item() < 1e-12


def test_last_time_and_uint64_checks_and_far_float_last_time():
    """The value checks that moved into the door's checks still fire; an integer time after a
    float last_time beyond int64's range still gets its gap (computed without a host read)."""
    t = torch.tensor([[3.0, 4.0]])
    with pytest.raises(ValueError, match=r"last_time must be finite"):
        timesteps_from_timestamps(t, last_time=torch.tensor([float("nan")]))
    big = torch.from_numpy(np.array([[2**63, 2**63 + 5]], dtype=np.uint64))
    with pytest.raises(ValueError, match=r"timestamps: uint64 times of 2\^63 or more"):
        timesteps_from_timestamps(big)
    with pytest.raises(ValueError, match=r"last_time: uint64 times of 2\^63 or more"):
        timesteps_from_timestamps(torch.tensor([[1, 2]]), last_time=big[:, 0])
    ints = torch.tensor([[2**62, 2**62 + 2**40]], dtype=torch.int64)
    for last in (-3.0e19, -0.5, 2.0**62 - 1.5):
        tau = timesteps_from_timestamps(ints, last_time=torch.tensor([last], dtype=torch.float64))
        want = float(2**62 - Fraction(last))
        print(f"last_time {last:.3g}: first gap {tau[0, 0].item():.17g} vs {want:.17g}")
        assert tau[0, 0].item() == pytest.approx(want, rel=1e-15)
        assert tau[0, 1].item() == 2.0**40
