"""Fuzz targets shared by tests/test_fuzz.py and experiments/fuzz_report.py (issue 15).

Each target draws one call of a public entry point from hypothesis strategies (random shapes,
dtypes, lengths including 0 and 1, timestamp kinds, NaN/Inf in real and padded positions, and
at most one deliberately bad argument), makes the call and checks the property:

* the call returns, and its result equals the float64 reference within the stated tolerance
  (outputs at real steps; 0 at padding; the carried state), or
* it raises ``ValueError``/``TypeError`` whose message names the argument that was made bad.

A call with no bad argument must return. Data tensors (``u``, ``delta``, ``B``, ``C``, ``z``,
hidden states) are not scanned for NaN at real steps (that would cost a full read of every
activation): NaN/Inf there must propagate exactly where the float64 reference has it, and
nowhere else. Timing inputs (gaps, timestamps, lengths, rates) and an ``EventEncoder``'s values
are checked. NaN/Inf at padded positions must change nothing.

A target returns ``"ok"`` (returned and matched) or ``"error"`` (raised clearly) and raises
:class:`FuzzFailure` otherwise.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import strategies as st

from eventssm import (
    SCHEMES,
    Additive,
    Asymmetric,
    EventEncoder,
    Mamba,
    MambaLM,
    Scaled,
    Standard,
    selective_scan,
)
from eventssm.time import timesteps_from_timestamps

__all__ = ["TARGETS", "FuzzFailure"]

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BAD_DTYPES = [torch.int64, torch.int32, torch.bool, torch.complex64]
INTS = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
        torch.uint64]
# max-norm relative tolerance against the float64 reference, by the dtype the call computes in
TOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 3e-2, torch.bfloat16: 6e-2}
COUPLINGS = (Standard, Asymmetric, Scaled, Additive)


class FuzzFailure(AssertionError):
    """The property did not hold: a deep error, a vague error, or wrong/non-finite numbers."""


class _Expect:
    """What a drawn call may do: ``bad`` is the argument made bad (None: the call must return)."""

    def __init__(self):
        self.bad: str | None = None

    def fault(self, name: str):
        self.bad = name


def _call(expect: _Expect, fn):
    """Run ``fn``: ("returned", value) or ("error", exc); a deep error or an error on good input
    or a message not naming the bad argument is a FuzzFailure."""
    try:
        return "returned", fn()
    except (ValueError, TypeError) as e:
        if expect.bad is None:
            raise FuzzFailure(f"raised on valid input: {type(e).__name__}: {e}") from e
        names = expect.bad.split("|")
        if not any(n in str(e) for n in names):
            raise FuzzFailure(f"error does not name {expect.bad!r}: {type(e).__name__}: {e}") from e
        return "error", e
    except FuzzFailure:
        raise
    except Exception as e:  # noqa: BLE001 - any other exception is the failure we look for
        raise FuzzFailure(f"deep error ({'bad ' + expect.bad if expect.bad else 'valid input'}): "
                          f"{type(e).__name__}: {str(e)[:200]}") from e


def _compare(name: str, got: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """``got`` equals ``ref`` within ``tol`` (max-norm relative), non-finite exactly where ``ref``
    is non-finite, or where ``ref`` is beyond the range of ``got``'s dtype (a float16 output of
    1e5 is Inf: IEEE rounding, not a wrong number)."""
    if got.dtype != ref.dtype and got.is_floating_point():
        ref = ref.detach().to(got.dtype)  # out of range -> Inf, as the output must be
    got, ref = got.detach().to(torch.float64), ref.detach().to(torch.float64)
    if got.shape != ref.shape:
        raise FuzzFailure(f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    fin = torch.isfinite(ref)
    if not torch.equal(torch.isfinite(got), fin):
        raise FuzzFailure(f"{name}: non-finite at {int((torch.isfinite(got) != fin).sum())} positions "
                          f"where the float64 reference is {'finite' if bool(fin.all()) else 'not'}")
    if not bool(fin.any()):
        return
    scale = float(ref[fin].abs().max().clamp(min=1e-6))
    err = float((got[fin] - ref[fin]).abs().max()) / scale
    if err > tol:
        raise FuzzFailure(f"{name}: relative error {err:.2e} > {tol:.0e} against float64")


def _disc(draw):
    return draw(st.sampled_from(COUPLINGS))(scheme=draw(st.sampled_from(SCHEMES)))


def _rand(g, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# ----------------------------------------------------------------------------------- time
def _int_range(dtype):
    info = torch.iinfo(dtype)
    return info.min, info.max


def _draw_times(draw, L: int, batch: int):
    """Absolute times ``(batch, L)`` of a random kind and the exact values (Fractions/ints) as
    nested lists: integers of every width near either end of their range, floats, int64
    nanoseconds since the epoch."""
    kind = draw(st.sampled_from(["int", "float", "ns"]))
    if kind == "int":
        dtype = draw(st.sampled_from(INTS))
        lo, hi = _int_range(dtype)
        span = min(hi - lo, draw(st.sampled_from([3, 300, 2**20, 2**40, 2**62, 2**64])))
        rows = []
        for _ in range(batch):
            end = draw(st.sampled_from(["low", "high", "mid"]))
            start = lo if end == "low" else (hi - span if end == "high" else (lo + hi) // 2)
            start = max(lo, min(start, hi - span))
            xs = sorted(draw(st.lists(st.integers(0, span), min_size=L, max_size=L)))
            rows.append([start + x for x in xs])
        if dtype == torch.uint64:  # torch.tensor cannot take Python ints >= 2^63
            return torch.from_numpy(np.array(rows, dtype=np.uint64).reshape(batch, L)), rows
        return torch.tensor(rows, dtype=dtype).reshape(batch, L), rows
    if kind == "ns":
        base = 1_700_000_000_000_000_000
        rows = [[base + x for x in sorted(draw(st.lists(st.integers(0, 10**12), min_size=L, max_size=L)))]
                for _ in range(batch)]
        return torch.tensor(rows, dtype=torch.int64).reshape(batch, L), rows
    dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64]))
    mag = draw(st.sampled_from([1.0, 1e3, 1e9, 1e30]))
    rows = []
    for _ in range(batch):
        xs = sorted(draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=L, max_size=L)))
        rows.append([x * mag for x in xs])
    t = torch.tensor(rows, dtype=torch.float64).reshape(batch, L).to(dtype)
    if not bool(torch.isfinite(t).all()) or not bool((t[:, 1:] >= t[:, :-1]).all()):
        t = torch.tensor(rows, dtype=torch.float64).reshape(batch, L)  # fp16 overflow: use f64
    exact = [[Fraction(float(v)) if isinstance(v, float) else v for v in r] for r in t.tolist()]
    return t, exact


def _exact_gaps(exact, lengths, last_time=None, scale=1.0):
    """float64 gaps from exact times (Fractions): None when a real gap is negative."""
    out = []
    for b, row in enumerate(exact):
        n = len(row) if lengths is None else lengths[b]
        gaps = []
        for l in range(len(row)):
            if l >= n:
                gaps.append(0.0)
            elif l == 0:
                gaps.append(0.0 if last_time is None else Fraction(row[0]) - Fraction(last_time[b]))
            else:
                gaps.append(Fraction(row[l]) - Fraction(row[l - 1]))
        if any(isinstance(g, Fraction) and g < 0 for g in gaps):
            return None
        out.append([float(Fraction(g) * Fraction(scale)) for g in gaps])
    return torch.tensor(out, dtype=torch.float64)


@st.composite
def time_call(draw):
    """timesteps_from_timestamps on every timestamp kind, lengths, last_time and bad values."""
    L = draw(st.integers(0, 6))
    batch = draw(st.integers(1, 3))
    t, exact = _draw_times(draw, L, batch)
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, L), min_size=batch, max_size=batch)))
    last_time = None
    if L and draw(st.booleans()):
        lt_kind = draw(st.sampled_from(["same", "float"]))
        last_time = []
        for row in exact:
            first = row[0]
            back = draw(st.sampled_from([0, 1, 7]))
            if lt_kind == "float":
                last_time.append(float(first) - back - draw(st.sampled_from([0.0, 0.25, 0.5])))
            else:
                last_time.append(first - back if isinstance(first, int) else first)
        if lt_kind == "same" and not t.dtype.is_floating_point:
            lo, hi = _int_range(t.dtype)
            last_time = [max(lo, v) for v in last_time]
    if last_time is not None and not isinstance(last_time[0], (float, Fraction)):
        lt = torch.from_numpy(np.array(last_time, dtype=np.uint64 if t.dtype == torch.uint64 else np.int64))
    else:
        lt = None if last_time is None else torch.tensor(last_time, dtype=torch.float64)
    scale = draw(st.sampled_from([1.0, 1.0, 1e-9, 1 / 3600]))
    expect = _Expect()
    fault = draw(st.sampled_from(["none"] * 4 + ["nan_real", "nan_pad", "bool", "complex", "decrease",
                                                  "lengths", "scale"]))
    if fault == "nan_real" and t.dtype.is_floating_point and L:
        t = t.clone()
        i = draw(st.integers(0, L - 1))
        t[0, i] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        if lengths is None or i < lengths[0]:  # past the length it is padding, never read
            expect.fault("timestamps")
    elif fault == "nan_pad" and t.dtype.is_floating_point and lengths is not None and lengths[0] < L:
        t = t.clone()
        t[0, lengths[0]:] = math.nan
    elif fault == "bool":
        t = t.to(torch.bool) if t.dtype != torch.uint64 else t.view(torch.int64).to(torch.bool)
        expect.fault("timestamps")
    elif fault == "complex":
        t = torch.tensor(exact[0][:L] if L else [], dtype=torch.complex128)[None].expand(batch, L)
        expect.fault("timestamps")
    elif fault == "decrease" and L >= 2:
        # may stay valid when all times are equal; numpy: torch has no flip for uint16/32/64
        t = t.flip(1) if t.dtype.is_floating_point else torch.from_numpy(np.ascontiguousarray(t.numpy()[:, ::-1]))
        exact = [list(reversed(r)) for r in exact]
    elif fault == "lengths":
        lengths = [L + 1] * batch
        expect.fault("lengths")
    elif fault == "scale":
        scale = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
        expect.fault("time_scale")
    ref = None
    if expect.bad is None and t.dtype == torch.uint64 and any(v >= 2**63 for r in exact for v in r):
        expect.fault("timestamps")  # a documented limit: refused, not wrapped around
    if expect.bad is None:
        ref = _exact_gaps(exact, lengths, last_time, scale)
        if ref is None:  # a real gap < 0: the call must say so
            expect.fault("timestamps")
        elif not bool(torch.isfinite(ref).all()):
            expect.fault("timestamps")
    return dict(t=t, lengths=None if lengths is None else torch.tensor(lengths), last_time=lt,
                scale=scale, expect=expect, ref=ref)


def run_time(c) -> str:
    status, out = _call(c["expect"], lambda: timesteps_from_timestamps(
        c["t"], time_scale=c["scale"], last_time=c["last_time"], lengths=c["lengths"]))
    if status == "error":
        return "error"
    if c["expect"].bad is not None:
        raise FuzzFailure(f"returned on bad {c['expect'].bad} (dtype {c['t'].dtype})")
    if out.dtype != torch.float64:
        raise FuzzFailure(f"gaps in {out.dtype}, not float64")
    _compare(f"gaps ({c['t'].dtype})", out, c["ref"], 1e-15)
    return "ok"


# ----------------------------------------------------------------------------------- scan
@st.composite
def scan_call(draw):
    """selective_scan: random sizes, dtypes, options, discretizations and one bad argument."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    b, L, N = draw(st.integers(1, 3)), draw(st.integers(0, 6)), draw(st.integers(1, 3))
    G = draw(st.sampled_from([None, 1, 2]))
    D = draw(st.integers(1, 4)) * (G or 1)
    dtype = draw(st.sampled_from(FLOATS))
    disc = _disc(draw)
    bshape = (b, L, N) if G is None else (b, L, G, N)
    kw = dict(u=_rand(g, b, L, D, dtype=dtype), delta=_rand(g, b, L, D, dtype=dtype) * 0.5,
              A=-(torch.rand(D, N, generator=g, dtype=torch.float64) * 2 + 0.05).to(dtype),
              B=_rand(g, *bshape, dtype=dtype), C=_rand(g, *bshape, dtype=dtype))
    for name, shape in (("D", (D,)), ("delta_bias", (D,)), ("z", (b, L, D)), ("initial_state", (b, D, N))):
        if draw(st.booleans()):
            kw[name] = _rand(g, *shape, dtype=dtype)
    if draw(st.booleans()):
        tau_mag = draw(st.sampled_from([1e-3, 1.0, 100.0, 1e4]))
        kw["integration_timesteps"] = (torch.rand(b, L, generator=g, dtype=torch.float64) * tau_mag).to(dtype)
        kw["rate"] = (torch.rand(D, generator=g, dtype=torch.float64) + 0.1).to(dtype)
    opts = dict(delta_softplus=draw(st.booleans()), discretization=disc,
                return_last_state=draw(st.booleans()), backend=draw(st.sampled_from(["torch", "reference"])))
    if not opts["delta_softplus"]:
        kw["delta"] = kw["delta"].abs()
    expect = _Expect()
    fault = draw(st.sampled_from(["none"] * 5 + ["none_arg", "dtype", "shape", "tau", "rate", "nan_u"]))
    if fault == "none_arg":
        name = draw(st.sampled_from(["u", "delta", "A", "B", "C"]))
        kw[name] = None
        expect.fault(name)
    elif fault == "dtype":
        name = draw(st.sampled_from(sorted(kw)))
        kw[name] = kw[name].to(draw(st.sampled_from(BAD_DTYPES)))
        expect.fault(name)
    elif fault == "shape":
        name = draw(st.sampled_from(sorted(kw)))
        kw[name] = kw[name][..., None] if draw(st.booleans()) else torch.cat([kw[name], kw[name]], 0)
        expect.fault(name if name not in ("B", "C") else "B|C")
    elif fault == "tau" and "integration_timesteps" in kw and L:
        kw["integration_timesteps"] = kw["integration_timesteps"].clone()
        kw["integration_timesteps"][0, draw(st.integers(0, L - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -1.0]))
        expect.fault("integration_timesteps")
    elif fault == "rate" and "rate" in kw:
        kw["rate"] = kw["rate"].clone()
        kw["rate"][0] = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
        if disc.uses_rate:
            expect.fault("rate")
        else:
            expect.fault("rate")  # checked whatever the coupling: either outcome names it
    elif fault == "nan_u" and L:
        kw["u"] = kw["u"].clone()
        kw["u"][0, draw(st.integers(0, L - 1)), 0] = draw(st.sampled_from([math.nan, math.inf]))
    if disc.uses_rate and "integration_timesteps" in kw and expect.bad is None and kw.get("rate") is None:
        expect.fault("rate")
    return dict(kw=kw, opts=opts, dtype=dtype, expect=expect)


def run_scan(c) -> str:
    kw, opts, expect = c["kw"], c["opts"], c["expect"]
    status, out = _call(expect, lambda: selective_scan(**kw, **opts))
    if status == "error":
        return "error"
    if expect.bad is not None and expect.bad != "rate":
        raise FuzzFailure(f"returned on bad {expect.bad}")
    ref = selective_scan(**{k: v.double() for k, v in kw.items()},
                         **{**opts, "backend": "reference"})
    outs = out if opts["return_last_state"] else (out,)
    refs = ref if opts["return_last_state"] else (ref,)
    if outs[0].dtype != c["dtype"]:
        raise FuzzFailure(f"y in {outs[0].dtype}, input {c['dtype']}")
    for name, o, r in zip(("y", "last state"), outs, refs):
        _compare(name, o, r, TOL[c["dtype"]])
    return "ok"


# ----------------------------------------------------------------------------------- Mamba
def _f64(module):
    m = copy.deepcopy(module).double()
    m.backend = "reference"
    return m


@st.composite
def mamba_call(draw):
    """Mamba.forward (with or without lengths, timestamps/gaps, a cache) and step."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    d_model = draw(st.integers(1, 6))
    mdtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.bfloat16]))
    disc = _disc(draw) if draw(st.booleans()) else draw(st.sampled_from(SCHEMES))
    m = Mamba(d_model, d_state=draw(st.integers(1, 4)), d_conv=draw(st.integers(1, 4)),
              expand=draw(st.integers(1, 2)), discretization=disc, backend="torch").to(mdtype)
    b, L = draw(st.integers(1, 3)), draw(st.integers(0, 6))
    x = _rand(g, b, L, d_model, dtype=mdtype)
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, L), min_size=b, max_size=b)))
    times = draw(st.sampled_from(["none", "timestamps", "gaps"]))
    kw, exact = {}, None
    if times == "timestamps":
        t, exact = _draw_times(draw, L, b)
        kw["timestamps"] = t
    elif times == "gaps":
        kw["integration_timesteps"] = torch.rand(b, L, generator=g, dtype=torch.float64) * draw(
            st.sampled_from([1e-2, 1.0, 1e3]))
    mode = draw(st.sampled_from(["forward", "forward", "cache", "step"]))
    if mode == "step" and (lengths is not None or times == "gaps" or L == 0):
        mode = "cache"  # the stepping loop passes timestamps only
    expect = _Expect()
    if exact is not None and kw["timestamps"].dtype == torch.uint64 and any(v >= 2**63 for r in exact for v in r):
        expect.fault("timestamps")  # a documented limit: refused, not wrapped around
    fault = draw(st.sampled_from(["none"] * 5 + ["dtype", "precision", "shape", "gap_dtype", "tau",
                                                  "lengths", "cache", "nan_pad", "nan_real"]))
    cache_fault = None
    if fault == "dtype":
        x = x.to(draw(st.sampled_from(BAD_DTYPES)))
        expect.fault("hidden_states|x")
    elif fault == "precision":
        x = x.to(draw(st.sampled_from([d for d in FLOATS if d != mdtype])))
        expect.fault("hidden_states|x")
    elif fault == "shape":
        x = x[..., None]
        mode = "forward"  # sliced per step, (B, L, d, 1) would give valid (B, 1, d) steps
        expect.fault("hidden_states|x")
    elif fault == "gap_dtype" and times == "gaps":
        bad_dtype = draw(st.sampled_from([torch.bool, torch.complex64]))
        kw["integration_timesteps"] = kw["integration_timesteps"].to(bad_dtype)
        expect.fault("integration_timesteps")
    elif fault == "tau" and times == "gaps" and L and (lengths is None or lengths[0] > 0):
        kw["integration_timesteps"] = kw["integration_timesteps"].clone()
        kw["integration_timesteps"][0, 0] = draw(st.sampled_from([math.nan, math.inf, -1.0]))
        expect.fault("integration_timesteps")
    elif fault == "lengths":
        lengths = [L + 1] * b if draw(st.booleans()) else [-1] * b
        mode = "cache" if mode == "step" else mode
        expect.fault("lengths")
    elif fault == "cache" and mode != "forward" and L:
        cache_fault = draw(st.sampled_from(["none", "batch", "int"] if mode == "step" else ["batch", "int"]))
        expect.fault("inference_cache" if cache_fault != "int" else "dtype")
    elif fault in ("nan_pad", "nan_real") and L:
        x = x.clone()
        if fault == "nan_pad" and lengths is not None and lengths[0] < L:
            x[0, lengths[0]:] = math.nan
            if times == "timestamps" and kw["timestamps"].dtype.is_floating_point:
                kw["timestamps"] = kw["timestamps"].clone()
                kw["timestamps"][0, lengths[0]:] = math.nan
            if times == "gaps":
                kw["integration_timesteps"][0, lengths[0]:] = math.inf
        elif fault == "nan_real":
            x[0, 0, 0] = math.nan
    return dict(m=m, x=x, kw=kw, lengths=lengths, mode=mode, expect=expect, exact=exact,
                cache_fault=cache_fault, mdtype=mdtype, b=b, L=L)


def _ref_rows(m64, x, kw, lengths, exact):
    """float64 reference: each sequence alone, cropped to its length (what padding must not
    change); returns per-row outputs (n_b, d_model) and last states (D, N)."""
    ys, hs = [], []
    for i in range(x.shape[0]):
        n = x.shape[1] if lengths is None else lengths[i]
        xi = x[i:i + 1, :n].double()
        ki = {}
        if "timestamps" in kw:
            gaps = _exact_gaps([exact[i][:n]], None)
            if gaps is None:
                return None
            ki["integration_timesteps"] = gaps  # the model applies its time_scale to them
        elif "integration_timesteps" in kw:
            ki["integration_timesteps"] = kw["integration_timesteps"][i:i + 1, :n].double()
        cache = m64.allocate_inference_cache(1)
        y = m64(xi, inference_cache=cache, **ki) if n else xi.new_zeros(1, 0, x.shape[-1])
        ys.append(y[0])
        hs.append(cache.ssm_state[0])
    return ys, hs


def run_mamba(c) -> str:
    m, x, kw, lengths, expect = c["m"], c["x"], c["kw"], c["lengths"], c["expect"]
    lt = None if lengths is None else torch.tensor(lengths)
    cache = None
    if c["mode"] != "forward":
        cf = c["cache_fault"]
        if cf == "int":
            status, _ = _call(expect, lambda: m.allocate_inference_cache(x.shape[0], dtype=torch.int64))
            return status if status == "error" else _fail("integer cache dtype accepted")
        cache = None if cf == "none" else m.allocate_inference_cache(x.shape[0] + (cf == "batch"))
    if c["mode"] == "step":
        def stepwise():
            ys = []
            for l in range(x.shape[1]):
                sk = {} if "timestamps" not in kw else {"timestamps": kw["timestamps"][:, l]}
                ys.append(m.step(x[:, l], cache, **sk)[0])
            return torch.cat(ys, 1) if ys else x.new_zeros(x.shape[0], 0, x.shape[-1])
        status, y = _call(expect, stepwise)
    else:
        status, y = _call(expect, lambda: m(x, lengths=lt, inference_cache=cache, **kw))
    if status == "error":
        return "error"
    if expect.bad is not None:
        raise FuzzFailure(f"returned on bad {expect.bad}")
    ref = _ref_rows(_f64(m), x, kw, lengths, c["exact"])
    if ref is None:
        raise FuzzFailure("returned on decreasing timestamps")
    ys, hs = ref
    tol = TOL[c["mdtype"]] * (10 if c["mdtype"] != torch.float64 else 1)
    for i, (yr, hr) in enumerate(zip(ys, hs)):
        n = yr.shape[0]
        _compare(f"row {i} output", y[i, :n], yr, tol)
        if n < y.shape[1] and bool((y[i, n:] != 0).any()):
            raise FuzzFailure(f"row {i}: padded outputs are not 0")
        if cache is not None:
            _compare(f"row {i} carried state", cache.ssm_state[i], hr, tol)
    return "ok"


def _fail(msg):
    raise FuzzFailure(msg)


# ----------------------------------------------------------------------------------- encoder
@st.composite
def encoder_call(draw):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    d_input, num_marks = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    if d_input == 0 and num_marks == 0:
        d_input = 1
    # d_model >= 2: RMSNorm over one feature is a sign function, where any rounding near 0 flips
    # the output (ill-conditioned, not wrong)
    enc = EventEncoder(d_model=draw(st.integers(2, 6)), n_layers=draw(st.integers(1, 2)), d_input=d_input,
                       num_marks=num_marks, d_state=draw(st.integers(1, 3)),
                       discretization=_disc(draw), pooling=draw(st.sampled_from(["last", "mean", "time"])),
                       time_features=draw(st.booleans()), backend="torch")
    enc.eval()
    b, L = draw(st.integers(1, 3)), draw(st.integers(0, 5))
    vdtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]))
    values = None if d_input == 0 else _rand(g, b, L, d_input).mul(3).to(vdtype)
    marks = None if num_marks == 0 else torch.randint(0, num_marks, (b, L), generator=g)
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, L), min_size=b, max_size=b)))
    kw, exact = {}, None
    if draw(st.booleans()):
        t, exact = _draw_times(draw, L, b)
        if t.dtype != torch.uint64:
            kw["timestamps"] = t
    expect = _Expect()
    fault = draw(st.sampled_from(["none"] * 4 + ["float_marks", "complex", "nan_real", "nan_pad",
                                                  "mark_range", "mark_pad"]))
    if fault == "float_marks" and marks is not None:
        marks = marks.float()
        expect.fault("marks")
    elif fault == "complex" and values is not None:
        values = values.to(torch.complex64)
        expect.fault("values")
    elif fault == "nan_real" and values is not None and L and (lengths is None or lengths[0] > 0):
        values = values.double().clone()
        values[0, 0, 0] = math.nan
        expect.fault("values")
    elif fault == "nan_pad" and lengths is not None and lengths[0] < L and values is not None:
        values = values.double().clone()
        values[0, lengths[0]:] = draw(st.sampled_from([math.nan, math.inf]))
    elif fault == "mark_range" and marks is not None and L and (lengths is None or lengths[0] > 0):
        marks = marks.clone()
        marks[0, 0] = num_marks
        expect.fault("marks")
    elif fault == "mark_pad" and marks is not None and lengths is not None and lengths[0] < L:
        marks = marks.clone()
        marks[0, lengths[0]:] = -1
    return dict(enc=enc, values=values, marks=marks, lengths=lengths, kw=kw, exact=exact, expect=expect)


def run_encoder(c) -> str:
    enc, values, marks, lengths, kw, expect = (c[k] for k in ("enc", "values", "marks", "lengths", "kw", "expect"))
    lt = None if lengths is None else torch.tensor(lengths)
    status, out = _call(expect, lambda: enc(values, marks, lengths=lt, **kw))
    if status == "error":
        return "error"
    if expect.bad is not None:
        raise FuzzFailure(f"returned on bad {expect.bad}")
    e64 = copy.deepcopy(enc).double()
    for layer in e64.backbone.layers:
        layer.mixer.backend = "reference"
    ref_sample = values if values is not None else marks
    for i in range(ref_sample.shape[0]):
        n = ref_sample.shape[1] if lengths is None else lengths[i]
        if n == 0:
            if bool((out[i] != 0).any()):
                raise FuzzFailure(f"row {i}: an empty sequence pools to {out[i].tolist()}, not 0")
            continue
        ki = {}
        if "timestamps" in kw:
            gaps = _exact_gaps([c["exact"][i][:n]], None)
            if gaps is None:
                raise FuzzFailure("returned on decreasing timestamps")
            ki["integration_timesteps"] = gaps
        r = e64(None if values is None else values[i:i + 1, :n].double(),
                None if marks is None else marks[i:i + 1, :n], **ki)
        # 3e-2: two float32 blocks with RMSNorm over <= 6 features, fed gaps up to 1e30, are
        # ill-conditioned (the float32 result moves by 1e-3..2e-2 with the thread count); a
        # leak or a wrong rule is off by O(1)
        _compare(f"row {i} pooled", out[i], r[0], 3e-2)
    return "ok"


# ----------------------------------------------------------------------------------- LM
@st.composite
def lm_call(draw):
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    V = draw(st.integers(1, 12))
    # d_model >= 2: see encoder_call
    lm = MambaLM(V, draw(st.integers(2, 6)), d_state=draw(st.integers(1, 3)), n_layers=draw(st.integers(1, 2)),
                 discretization=_disc(draw), backend="torch")
    b, L = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    ids = torch.randint(0, V, (b, L), generator=g)
    mode = draw(st.sampled_from(["forward", "step", "generate"]))
    gen = dict(max_new_tokens=draw(st.integers(0, 3)), temperature=draw(st.sampled_from([0.0, 0.0, 0.7, 1.0])),
               top_k=draw(st.sampled_from([None, 1, 3])))
    expect = _Expect()
    fault = draw(st.sampled_from(["none"] * 4 + ["ids_range", "ids_float", "temperature", "max_new", "top_k",
                                                  "cache"]))
    if fault == "ids_range":
        ids = ids.clone()
        ids[0, -1] = draw(st.sampled_from([V, -1, V + 100]))
        expect.fault("input_ids|token")
    elif fault == "ids_float":
        ids = ids.float()
        expect.fault("input_ids|token")
    elif fault == "temperature" and mode == "generate":
        gen["temperature"] = draw(st.sampled_from([math.nan, -1.0, math.inf]))
        expect.fault("temperature")
    elif fault == "max_new" and mode == "generate":
        gen["max_new_tokens"] = draw(st.sampled_from([-1, 2.5, "2"]))
        expect.fault("max_new_tokens")
    elif fault == "top_k" and mode == "generate":
        gen["top_k"] = draw(st.sampled_from([0, 2.5]))
        expect.fault("top_k")
    elif fault == "cache" and mode == "step":
        expect.fault("cache")
    return dict(lm=lm, ids=ids, mode=mode, gen=gen, expect=expect, V=V)


def run_lm(c) -> str:
    lm, ids, mode, expect = c["lm"], c["ids"], c["mode"], c["expect"]
    lm64 = copy.deepcopy(lm).double()
    for layer in lm64.backbone.layers:
        layer.mixer.backend = "reference"
    if mode == "forward":
        status, out = _call(expect, lambda: lm(ids))
        if status == "error":
            return "error"
        _fail_if_bad(expect)
        _compare("logits", out, lm64(ids), 1e-3)
        return "ok"
    if mode == "step":
        def stepwise():
            cache = lm.allocate_inference_cache(ids.shape[0] + (expect.bad == "cache"))
            return torch.stack([lm.step(ids[:, l], cache) for l in range(ids.shape[1])], 1)
        status, out = _call(expect, stepwise)
        if status == "error":
            return "error"
        _fail_if_bad(expect)
        _compare("step logits vs forward", out, lm64(ids), 1e-3)
        return "ok"
    gen = c["gen"]
    g = torch.Generator().manual_seed(0)
    status, out = _call(expect, lambda: lm.generate(ids, generator=g, **gen))
    if status == "error":
        return "error"
    _fail_if_bad(expect)
    L = ids.shape[1]
    if out.shape != (ids.shape[0], L + gen["max_new_tokens"]) or not torch.equal(out[:, :L], ids):
        raise FuzzFailure(f"generate returned shape {tuple(out.shape)} or changed the prompt")
    if out.numel() and bool((out.min() < 0) | (out.max() >= c["V"])):
        raise FuzzFailure("generated ids outside the vocabulary")
    if gen["temperature"] == 0 and gen["max_new_tokens"]:
        logits = lm64(out)[:, L - 1:-1]  # the logits each new token was picked from
        picked = logits.gather(-1, out[:, L:, None])[..., 0]
        if bool((logits.max(-1).values - picked > 1e-4 * logits.abs().max().clamp(min=1)).any()):
            raise FuzzFailure("greedy generate picked a token that is not the argmax of the float64 logits")
    return "ok"


def _fail_if_bad(expect):
    if expect.bad is not None:
        raise FuzzFailure(f"returned on bad {expect.bad}")


# ----------------------------------------------------------------------------------- table
@st.composite
def table_call(draw):
    """EventTable.from_frame on time columns of every kind: ints near their range, floats,
    naive/aware/mixed datetimes, ISO strings, NaN; the exact relative times are the reference."""
    import pandas as pd

    n_seq = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["int64", "int32", "uint8", "float", "naive", "aware", "mixed", "iso",
                                 "iso_mixed", "ns_int"]))
    rows, exact = [], {}
    expect = _Expect()
    for i in range(n_seq):
        L = draw(st.integers(1, 4))
        if kind in ("int64", "int32", "uint8", "ns_int"):
            dtype = {"int64": np.int64, "int32": np.int32, "uint8": np.uint8, "ns_int": np.int64}[kind]
            info = np.iinfo(dtype)
            if kind == "ns_int":
                lo, hi = 1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + 10**12
            else:
                end = draw(st.sampled_from(["low", "high"]))
                span = min(int(info.max) - int(info.min), draw(st.sampled_from([10, 2**40, 2**63])))
                lo = int(info.min) if end == "low" else int(info.max) - span
                hi = lo + span
            vals = draw(st.lists(st.one_of(st.just(lo), st.just(hi), st.integers(lo, hi)), min_size=L,
                                 max_size=L))
            times = [dtype(v) for v in vals]
            exact[i] = [Fraction(v) for v in vals]
        elif kind == "float":
            vals = draw(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=L, max_size=L))
            times, exact[i] = vals, [Fraction(v) for v in vals]
        else:
            base = dt.datetime(2024, 3, 1, 12, 0, 0)
            secs = draw(st.lists(st.integers(0, 10**6), min_size=L, max_size=L))
            micros = draw(st.lists(st.integers(0, 999_999), min_size=L, max_size=L))
            stamps = [base + dt.timedelta(seconds=s, microseconds=u) for s, u in zip(secs, micros)]
            exact[i] = [Fraction(s) + Fraction(u, 10**6) for s, u in zip(secs, micros)]
            tz = dt.timezone(dt.timedelta(hours=2))
            if kind == "naive":
                times = stamps
            elif kind == "aware":
                times = [s.replace(tzinfo=tz) for s in stamps]
                exact[i] = [e for e in exact[i]]  # same offset everywhere: same differences
            elif kind == "mixed":
                times = [s.replace(tzinfo=tz) if j % 2 else s for j, s in enumerate(stamps)]
            elif kind == "iso":
                times = [s.isoformat() for s in stamps]
            else:
                times = [s.isoformat() + ("+02:00" if j % 2 else "") for j, s in enumerate(stamps)]
        for t in times:
            rows.append({"id": f"s{i}", "time": t, "x": 1.0})
    if kind in ("mixed", "iso_mixed"):
        # naive and aware times in one column only when the table really holds both
        col = [r["time"] for r in rows]
        aware = [(getattr(t, "tzinfo", None) is not None) if not isinstance(t, str) else t.endswith("+02:00")
                 for t in col]
        if any(aware) and not all(aware):
            expect.fault("time")
    df = pd.DataFrame(rows)
    if kind == "float" and draw(st.booleans()):
        df.loc[draw(st.integers(0, len(df) - 1)), "time"] = draw(st.sampled_from([math.nan, math.inf]))
        expect.fault("time")
    return dict(df=df, exact=exact, expect=expect, kind=kind)


def run_table(c) -> str:
    from eventssm.datasets.table import EventTable

    status, tab = _call(c["expect"], lambda: EventTable.from_frame(
        c["df"], value_cols=["x"], task="none"))
    if status == "error":
        return "error"
    _fail_if_bad(c["expect"])
    ns = c["kind"] in ("naive", "aware", "mixed", "iso", "iso_mixed")
    for sid, times in zip(tab.ids, tab.times):
        ex = sorted(c["exact"][int(sid[1:])])
        ref = np.array([float(e - ex[0]) for e in ex])
        got = np.asarray(times, dtype=np.float64)
        tol = 1e-15 if not ns else 1e-15 + 2e-16 * 0  # ns -> s is one more rounding
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300)
        if got.shape != ref.shape or err > 4 * 2.0**-52 + tol:
            raise FuzzFailure(f"{c['kind']} times of {sid}: {got.tolist()} != exact {ref.tolist()} "
                              f"(relative error {err:.1e})")
    return "ok"


TARGETS = {
    "selective_scan": (scan_call, run_scan),
    "Mamba (forward/cache/step)": (mamba_call, run_mamba),
    "EventEncoder": (encoder_call, run_encoder),
    "MambaLM (forward/step/generate)": (lm_call, run_lm),
    "timesteps_from_timestamps": (time_call, run_time),
    "EventTable.from_frame": (table_call, run_table),
}
