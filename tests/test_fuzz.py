"""Fuzzing the public surface (issue 15): every call returns finite results equal to the float64
reference (within the tolerance stated in tests/fuzz_targets.py) or raises ValueError/TypeError
naming the bad argument. The strategies and the property live in tests/fuzz_targets.py (shared
with experiments/fuzz_report.py, which runs more examples and prints the counts).

Default run: a few dozen derandomized examples per target (fast, the same every run); the
``slow`` test runs 300 per target. Below them, one test per failure that issue 15 listed.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from eventssm import Asymmetric, EventEncoder, Mamba, MambaLM, Scaled, selective_scan
from eventssm.time import timesteps_from_timestamps
from tests.fuzz_targets import TARGETS

FAST = settings(max_examples=30, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _fuzz(name, profile):
    if name == "EventTable.from_frame":
        pytest.importorskip("pandas")
    strategy, run = TARGETS[name]

    @profile
    @given(strategy())
    def check(case):
        run(case)  # raises FuzzFailure (an AssertionError) when the property fails

    check()


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz(name):
    _fuzz(name, FAST)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_many(name):
    _fuzz(name, SLOW)


# ------------------------------------------------------------ the failures issue 15 listed
def _mamba(**kw):
    torch.manual_seed(0)
    return Mamba(8, d_state=4, discretization=Asymmetric("zoh"), backend="torch", **kw)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.float64, torch.float16,
                                   torch.bfloat16])
def test_mamba_forward_and_step_refuse_wrong_dtypes(dtype):
    m = _mamba()
    x = torch.ones(2, 3, 8).to(dtype)
    with pytest.raises(ValueError, match="hidden_states"):
        m(x)
    with pytest.raises(ValueError, match="x "):
        m.step(x[:, 0], m.allocate_inference_cache(2))


def test_mamba_wrong_precision_ok_under_autocast():
    m = _mamba()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 3, 8).bfloat16())
    assert torch.isfinite(y).all()


def test_mamba_length_zero():
    m = _mamba()
    for kw in ({}, {"timestamps": torch.zeros(2, 0)}, {"integration_timesteps": torch.zeros(2, 0)}):
        cache = m.allocate_inference_cache(2)
        y = m(torch.randn(2, 0, 8), inference_cache=cache, **kw)
        assert y.shape == (2, 0, 8) and cache.seqlen_offset == 0


def test_step_cache_errors():
    m = _mamba()
    x = torch.randn(2, 8)
    with pytest.raises(TypeError, match="inference_cache"):
        m.step(x, None)
    with pytest.raises(ValueError, match="inference_cache.*batch 2"):
        m.step(x, m.allocate_inference_cache(3))
    with pytest.raises(ValueError, match="inference_cache"):
        m(x[:, None], inference_cache=m.allocate_inference_cache(1))
    other = Mamba(8, d_state=2)
    with pytest.raises(ValueError, match="inference_cache.ssm_state"):
        m.step(x, other.allocate_inference_cache(2))


@pytest.mark.parametrize("bad,err", [(-1, ValueError), (2.5, TypeError), ("2", TypeError), (True, TypeError)])
def test_allocate_inference_cache_batch_size(bad, err):
    with pytest.raises(err, match="batch_size"):
        _mamba().allocate_inference_cache(bad)


def test_inference_cache_integer_dtype_refused():
    m = _mamba()
    with pytest.raises(ValueError, match="dtype"):
        m.allocate_inference_cache(2, dtype=torch.int64)
    cache = m.allocate_inference_cache(2)
    cache.conv_state = cache.conv_state.long()  # a cache altered by hand
    with pytest.raises(ValueError, match="conv_state must be floating"):
        m.step(torch.randn(2, 8), cache)


def test_dt_rank_zero():
    with pytest.raises(ValueError, match="dt_rank"):
        Mamba(8, dt_rank=0)


def test_float_marks_and_complex_values():
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, num_marks=3)
    with pytest.raises(ValueError, match="marks must be an integer"):
        enc(torch.randn(2, 4, 2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="values must be real"):
        enc(torch.randn(2, 4, 2).to(torch.complex64), torch.ones(2, 4, dtype=torch.long))


def test_lm_step_and_generate_errors():
    lm = MambaLM(10, 8, n_layers=1)
    cache = lm.allocate_inference_cache(2)
    for tok in (torch.tensor([3, 10]), torch.tensor([-1, 3])):
        with pytest.raises(ValueError, match="token must lie in"):
            lm.step(tok, cache)
    with pytest.raises(ValueError, match="token must be an integer"):
        lm.step(torch.tensor([1.0, 2.0]), cache)
    with pytest.raises(TypeError, match="cache"):
        lm.step(torch.tensor([1, 2]), cache[:0])
    ids = torch.tensor([[1, 2]])
    for t in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            lm.generate(ids, 2, temperature=t)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(ids, -1)
    with pytest.raises(TypeError, match="top_k"):
        lm.generate(ids, 2, top_k=2.5)


def test_selective_scan_none_argument():
    b, L, D, N = 1, 3, 4, 2
    kw = dict(u=torch.randn(b, L, D), delta=torch.rand(b, L, D), A=-torch.rand(D, N),
              B=torch.randn(b, L, N), C=torch.randn(b, L, N))
    for name in ("u", "delta", "A", "B", "C"):
        with pytest.raises(ValueError, match=f"{name} must be a torch.Tensor"):
            selective_scan(**{**kw, name: None})


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_boolean_and_complex_gaps_refused(dtype):
    m = _mamba()
    with pytest.raises(ValueError, match="integration_timesteps"):
        m(torch.randn(2, 3, 8), integration_timesteps=torch.ones(2, 3, dtype=dtype))
    with pytest.raises(ValueError, match="integration_timesteps"):
        selective_scan(torch.randn(1, 3, 4), torch.rand(1, 3, 4), -torch.rand(4, 2), torch.randn(1, 3, 2),
                       torch.randn(1, 3, 2), integration_timesteps=torch.ones(1, 3, dtype=dtype),
                       rate=torch.ones(4), discretization=Asymmetric("zoh"))


def test_integer_timestamps_float_last_time_keep_the_fraction():
    gaps = timesteps_from_timestamps(torch.tensor([[5, 7]]), last_time=torch.tensor([4.5], dtype=torch.float64))
    print(gaps)
    assert gaps.tolist() == [[0.5, 2.0]]
    ns = 1_700_000_000_123_456_789
    gaps = timesteps_from_timestamps(torch.tensor([[ns]]), last_time=torch.tensor([float(ns - 1000) + 0.25],
                                                                               dtype=torch.float64))
    # float(ns - 1000) rounds to a multiple of 256: the gap is exact from that float
    exact = ns - int(float(ns - 1000) + 0.25) - (float(ns - 1000) + 0.25) % 1
    assert gaps.item() == exact


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_timestamps_near_their_range(dtype):
    info = torch.iinfo(dtype)
    t = torch.tensor([[info.min, info.min + 1, info.max - 1, info.max]], dtype=dtype)
    gaps = timesteps_from_timestamps(t)
    exact = [0.0, 1.0, float(info.max - 1 - (info.min + 1)), 1.0]
    print(dtype, gaps.tolist(), exact)
    assert gaps.tolist() == [exact]


def test_nan_inf_at_padding_does_not_leak():
    """Padded positions hold NaN (values, times) or Inf (gaps): pooled outputs and the carried
    state equal those of the sequence alone (the padding is replaced with where, not a product)."""
    torch.manual_seed(0)
    for pooling in ("last", "mean", "time"):
        enc = EventEncoder(d_model=8, n_layers=2, d_input=2, discretization=Scaled("zoh"), pooling=pooling)
        v = torch.randn(2, 5, 2)
        ts = torch.arange(5.0).expand(2, 5).clone()
        vp, tp = v.clone(), ts.clone()
        vp[0, 3:], tp[0, 3:] = math.nan, math.nan
        lengths = torch.tensor([3, 5])
        out = enc(vp, lengths=lengths, timestamps=tp)
        alone = enc(v[:1, :3], timestamps=ts[:1, :3])
        gaps = torch.ones(2, 5)
        gaps[0, 3:] = math.inf
        out_g = enc(vp, lengths=lengths, integration_timesteps=gaps)
        print(pooling, (out[0] - alone[0]).abs().max().item())
        assert torch.isfinite(out).all() and torch.isfinite(out_g).all()
        torch.testing.assert_close(out[0], alone[0], rtol=1e-5, atol=1e-6)
    m = _mamba()
    x = torch.randn(2, 5, 8)
    x[0, 3:] = math.nan
    cache = m.allocate_inference_cache(2)
    m(x, lengths=torch.tensor([3, 5]), timestamps=torch.arange(5.0).expand(2, 5), inference_cache=cache)
    ref = m.allocate_inference_cache(1)
    m(x[:1, :3], timestamps=torch.arange(3.0)[None], inference_cache=ref)
    assert torch.isfinite(cache.ssm_state).all() and torch.isfinite(cache.conv_state).all()
    torch.testing.assert_close(cache.ssm_state[:1], ref.ssm_state)


@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
def test_empty_sequence_pooled_output_is_zero_whatever_the_padding(pooling):
    torch.manual_seed(0)
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, pooling=pooling)
    lengths = torch.tensor([0, 4])
    a = enc(torch.randn(2, 4, 2), lengths=lengths, timestamps=torch.arange(4.0).expand(2, 4))
    b = enc(torch.randn(2, 4, 2) * 100, lengths=lengths, timestamps=torch.arange(4.0).expand(2, 4) * 7)
    assert torch.equal(a[0], torch.zeros(8)) and torch.equal(b[0], torch.zeros(8))
    assert enc(torch.randn(2, 0, 2)).shape == (2, 8)


def test_naive_and_aware_datetimes_mixed_in_one_column():
    pd = pytest.importorskip("pandas")
    from eventssm.datasets.table import EventTable

    tz = dt.timezone(dt.timedelta(hours=2))
    t0 = dt.datetime(2024, 1, 1, 12)
    for times in ([t0, t0.replace(tzinfo=tz) + dt.timedelta(hours=1)],
                  ["2024-01-01T12:00:00", "2024-01-01T13:00:00+02:00"]):
        df = pd.DataFrame({"id": [1, 1], "time": times, "x": [1.0, 2.0]})
        with pytest.raises(ValueError, match="time column 'time' mixes timezone-aware and naive"):
            EventTable.from_frame(df, value_cols=["x"], task="none")
    # all aware with different offsets is fine (converted to UTC)
    df = pd.DataFrame({"id": [1, 1], "time": ["2024-01-01T12:00:00+02:00", "2024-01-01T12:00:00+01:00"],
                       "x": [1.0, 2.0]})
    assert EventTable.from_frame(df, value_cols=["x"], task="none").times[0].tolist() == [0.0, 3600.0]


def test_table_int64_times_far_apart():
    pd = pytest.importorskip("pandas")
    from eventssm.datasets.table import EventTable

    lo, hi = -(2**63), 2**63 - 1
    df = pd.DataFrame({"id": [1, 1], "time": [lo, hi], "x": [1.0, 2.0]})
    times = EventTable.from_frame(df, value_cols=["x"], task="none").times[0]
    assert times.tolist() == [0.0, float(2**64 - 1)]


def test_streaming_nanosecond_timestamps_exact():
    """int64 nanoseconds since the epoch through a cache: prefill, then step. The cache keeps
    the last time as int64, so every next gap is exact (a float64 last time is off by up to
    128 ns at 1.7e18, which at this time unit moved the state by percents)."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, discretization=Asymmetric("zoh"), time_scale=1e-2, backend="torch").double()
    base = 1_700_000_000_123_456_789
    ts = base + torch.cumsum(torch.randint(1, 300, (2, 12)), 1)
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    full = m(x, timestamps=ts)
    cache = m.allocate_inference_cache(2)
    ys = [m(x[:, :5], timestamps=ts[:, :5], inference_cache=cache)]
    assert cache.last_time.dtype == torch.int64 and torch.equal(cache.last_time, ts[:, 4])
    ys.append(m(x[:, 5:8], timestamps=ts[:, 5:8], inference_cache=cache))
    for l in range(8, 12):
        ys.append(m.step(x[:, l], cache, timestamps=ts[:, l])[0])
    assert torch.equal(cache.last_time, ts[:, -1])
    err = (torch.cat(ys, 1) - full).abs().max().item()
    print("streamed vs one call, max abs difference:", err)
    assert err < 1e-12
    # the old float64 last time: the next gap is off
    lt64 = ts[:, 4].double()
    off = (ts[:, 5] - lt64.to(torch.int64)) - (ts[:, 5] - ts[:, 4])
    print("gap error of a float64 last time (ns):", off.tolist())
