"""EventEncoder's recurrent inference: ``step`` and the ``EncoderCache`` against ``encode`` and
``forward`` on the same history (float64 oracle; float32 compared to the float64 model)."""

import copy
import dataclasses

import pytest
import torch

from eventssm import Additive, Asymmetric, EventEncoder, InferenceCache, Scaled, Standard
from eventssm.cache import _POOL_ROWS
from eventssm.packing import cu_seqlens_from_lengths, pack_sequences
from eventssm.running_pool import RunningPool
from tests.helpers import rel_err

# every coupling the tasks' configs use, each with another scheme, and lrnnx's string
DISCS = [Standard("mamba"), Asymmetric("zoh"), Scaled("bilinear"), Additive("dirac"), "mamba"]
DISC_IDS = ["standard-mamba", "asymmetric-zoh", "scaled-bilinear", "additive-dirac", "str-mamba"]
# (d_input, num_marks, use_observed)
INPUTS = {"values": (3, 0, False), "values-observed": (3, 0, True), "marks": (0, 5, False),
          "both": (3, 5, False), "both-observed": (3, 5, True)}
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
LENS = [9, 5, 1, 0]  # streams of different lengths, one without events


def _encoder(inputs, pooling, disc, time_scale=0.7, seed=0):
    d_input, num_marks, use_observed = INPUTS[inputs]
    torch.manual_seed(seed)
    return EventEncoder(d_model=16, n_layers=2, d_input=d_input, num_marks=num_marks, d_state=4,
                        discretization=copy.deepcopy(disc), pooling=pooling,
                        use_observed=use_observed, time_scale=time_scale,
                        backend="torch").double().eval()


def _history(enc, lens=LENS, L=None, seed=1):
    """Right-padded events with garbage (NaN values, id -1) in the padding, which must not
    matter."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(lens), L or max(lens)
    lengths = torch.tensor(lens)
    mask = torch.arange(L)[None] < lengths[:, None]
    ev = {"lengths": lengths, "mask": mask,
          "timestamps": torch.cumsum(torch.rand(B, L, generator=g, dtype=torch.float64) * 2, 1) + 10.0}
    ev["timestamps"][:, 2] = ev["timestamps"][:, 1]  # a tie: a gap of 0
    if enc.d_input:
        v = torch.randn(B, L, enc.d_input, generator=g, dtype=torch.float64)
        ev["values"] = v.masked_fill(~mask[..., None], float("nan"))
        if enc.use_observed:
            ev["observed"] = torch.rand(B, L, enc.d_input, generator=g) > 0.3
    if enc.num_marks:
        ev["marks"] = torch.randint(0, enc.num_marks, (B, L), generator=g).masked_fill(~mask, -1)
    return ev


def _step_all(enc, ev, dtype, time="timestamps"):
    """Step through the history one event per stream at a time: ``(features (B, L, d),
    pooled after each step (B, L, d))``."""
    B, L = ev["mask"].shape
    cache = enc.allocate_inference_cache(B)
    feats, pooled = [], []
    for l in range(L):
        kw = {k: (ev[k][:, l].to(dtype) if k == "values" else ev[k][:, l])
              for k in ("values", "marks", "observed") if k in ev}
        if time == "timestamps":
            kw["timestamps"] = ev["timestamps"][:, l]
        elif time == "integration_timesteps":
            kw["integration_timesteps"] = ev["integration_timesteps"][:, l]
        f, p = enc.step(cache=cache, active=ev["mask"][:, l], **kw)
        feats.append(f)
        pooled.append(p)
    return torch.stack(feats, 1), torch.stack(pooled, 1), cache


def _reference(enc64, ev, time="timestamps"):
    """float64 ``encode`` over the whole history, and ``forward`` over every prefix."""
    B, L = ev["mask"].shape
    kw = {k: ev[k] for k in ("values", "marks", "observed") if k in ev}
    tkw = {} if time == "none" else {time: ev[time]}
    feats = enc64.encode(lengths=ev["lengths"], **kw, **tkw)
    pooled = [enc64(lengths=ev["lengths"].clamp(max=l + 1), **{k: v[:, :l + 1] for k, v in kw.items()},
                    **{k: v[:, :l + 1] for k, v in tkw.items()}) for l in range(L)]
    return feats, torch.stack(pooled, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("disc", DISCS, ids=DISC_IDS)
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
def test_step_equals_encode_and_forward(pooling, inputs, disc, dtype):
    enc64 = _encoder(inputs, pooling, disc)
    enc = copy.deepcopy(enc64).to(dtype)
    ev = _history(enc64)
    feats, pooled, cache = _step_all(enc, ev, dtype)
    ref_feats, ref_pooled = _reference(enc64, ev)
    e_feat, e_pool = rel_err(feats, ref_feats), rel_err(pooled, ref_pooled)
    # the whole history once more, packed: the same pooled features
    kw = {k: pack_sequences(ev[k], ev["lengths"]) for k in ("values", "marks", "observed") if k in ev}
    packed = enc64(timestamps=pack_sequences(ev["timestamps"], ev["lengths"]),
                   cu_seqlens=cu_seqlens_from_lengths(ev["lengths"]), **kw)
    e_packed = rel_err(pooled[:, -1], packed)
    print(f"{pooling} {inputs} {DISC_IDS[DISCS.index(disc)]} {dtype}: feature {e_feat:.2e}, "
          f"pooled {e_pool:.2e}, pooled vs packed forward {e_packed:.2e}")
    assert feats.dtype == dtype and (feats[~ev["mask"]] == 0).all()
    assert (pooled[3] == 0).all()  # a stream without events pools to 0
    assert cache.count.tolist() == LENS
    assert max(e_feat, e_pool, e_packed) < TOL[dtype]


@pytest.mark.parametrize("time", ["timestamps", "int64-timestamps", "integration_timesteps", "none"])
@pytest.mark.parametrize("pooling", ["time", "mean"])
def test_step_time_inputs(time, pooling):
    """Gaps from absolute times (float and integer), gaps passed as they are (a first gap that
    is not 0 included) and no times at all (standard mode), all with a time_scale."""
    enc = _encoder("both", pooling, Asymmetric("zoh"), time_scale=0.37)
    ev = _history(enc)
    if time == "int64-timestamps":
        ev["timestamps"] = (ev["timestamps"] * 1000).long()
        time = "timestamps"
    g = torch.Generator().manual_seed(5)
    ev["integration_timesteps"] = torch.rand(ev["mask"].shape, generator=g, dtype=torch.float64) * 3
    feats, pooled, cache = _step_all(enc, ev, torch.float64, time)
    ref_feats, ref_pooled = _reference(enc, ev, time)
    e_feat, e_pool = rel_err(feats, ref_feats), rel_err(pooled, ref_pooled)
    print(f"{time} {pooling}: feature {e_feat:.2e}, pooled {e_pool:.2e}")
    assert max(e_feat, e_pool) < 1e-10
    assert cache.time_input == time
    if time == "timestamps":
        assert cache.last_time.dtype == ev["timestamps"].dtype or cache.last_time.dtype == torch.float64
        assert torch.equal(cache.last_time[:3], ev["timestamps"][torch.arange(3), ev["lengths"][:3] - 1].to(
            cache.last_time.dtype))


@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
def test_chunked_prefill_then_step(pooling):
    """``encode`` with an ``inference_cache`` on a first chunk (a stream empty in it), steps, then
    ``forward`` on another chunk: the same features and pooled vector as one pass."""
    enc = _encoder("both", pooling, Scaled("zoh"))
    lens = [12, 7, 3, 9]
    ev = _history(enc, lens)
    full_feats = enc.encode(ev["values"], ev["marks"], timestamps=ev["timestamps"], lengths=ev["lengths"])
    full_pooled = enc(ev["values"], ev["marks"], timestamps=ev["timestamps"], lengths=ev["lengths"])
    cache = enc.allocate_inference_cache(4)
    first = torch.tensor([4, 0, 3, 4])  # stream 1 has no events in the first chunk
    chunk = lambda k, a, b: ev[k][:, a:b]
    f1 = enc.encode(chunk("values", 0, 4), chunk("marks", 0, 4), timestamps=chunk("timestamps", 0, 4),
                    lengths=first, inference_cache=cache)
    # stream 1 starts now, stream 2 is done: step events 4..5 of 0 and 3, 0..1 of stream 1
    rows = []
    for s in range(2):
        idx = torch.tensor([4 + s, s, 0, 4 + s])
        act = torch.tensor([True, True, False, True])
        pick = lambda k, idx=idx: ev[k][torch.arange(4), idx]
        f, p = enc.step(pick("values"), pick("marks"), cache=cache, timestamps=pick("timestamps"),
                        active=act)
        rows.append((idx, act, f))
    # the rest of each stream in one padded chunk
    start = torch.tensor([6, 2, 3, 6])
    n = torch.tensor(lens) - start
    L2 = int(n.max())
    gather = torch.clamp(start[:, None] + torch.arange(L2)[None], max=max(lens) - 1)
    take = lambda k: ev[k][torch.arange(4)[:, None], gather]
    pooled = enc(take("values"), take("marks"), timestamps=take("timestamps"), lengths=n,
                 inference_cache=cache)
    errs = [rel_err(f1, full_feats[:, :4].masked_fill(~(torch.arange(4)[None] < first[:, None])[..., None], 0))]
    for idx, act, f in rows:
        ref = full_feats[torch.arange(4), idx].masked_fill(~act[:, None], 0)
        errs.append(rel_err(f, ref))
    errs.append(rel_err(pooled, full_pooled))
    print(pooling, "prefill / steps / pooled after a second chunk:", [f"{e:.1e}" for e in errs])
    assert max(errs) < 1e-10
    assert cache.count.tolist() == lens


@torch.no_grad()
def test_inactive_streams_are_untouched():
    """An inactive stream's inputs are never read (NaN, an out-of-range mark, a time before its
    last one) and its state, pooling and time stay as they were."""
    enc = _encoder("both", "time", Asymmetric("zoh"))
    ev = _history(enc, [5, 5])
    cache = enc.allocate_inference_cache(2)
    for l in range(3):
        enc.step(ev["values"][:, l], ev["marks"][:, l], cache=cache, timestamps=ev["timestamps"][:, l])
    before = copy.deepcopy(cache)
    act = torch.tensor([True, False])
    vals = ev["values"][:, 3].clone()
    vals[1] = float("nan")
    f, p = enc.step(vals, torch.tensor([int(ev["marks"][0, 3]), 99]), cache=cache,
                    timestamps=torch.tensor([float(ev["timestamps"][0, 3]), -1e9], dtype=torch.float64),
                    active=act)
    assert (f[1] == 0).all()
    for c0, c1 in zip(before.layers, cache.layers):
        assert torch.equal(c0.conv_state[1], c1.conv_state[1]) and torch.equal(c0.ssm_state[1], c1.ssm_state[1])
    assert torch.equal(before.pool.value()[1], p[1]) and cache.count.tolist() == [4, 3]
    assert cache.last_time[1] == before.last_time[1]


def test_step_errors():
    enc = _encoder("both", "mean", Asymmetric("zoh"))
    cache = enc.allocate_inference_cache(2)
    v, m, t = torch.randn(2, 3, dtype=torch.float64), torch.tensor([0, 1]), torch.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="cache must be an EncoderCache"):
        enc.step(v, m, cache=[], timestamps=t)
    with pytest.raises(ValueError, match="cache.layers"):
        enc.step(v[:1], m[:1], cache=cache, timestamps=t[:1])
    with pytest.raises(ValueError, match="values must have shape"):
        enc.step(v[:, None], m, cache=cache, timestamps=t)
    with pytest.raises(ValueError, match="marks must have shape"):
        enc.step(v, m[:, None], cache=cache, timestamps=t)
    with pytest.raises(ValueError, match="marks must lie in"):
        enc.step(v, torch.tensor([0, 5]), cache=cache, timestamps=t)
    with pytest.raises(ValueError, match="active must be a bool tensor"):
        enc.step(v, m, cache=cache, timestamps=t, active=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="timestamps of one step"):
        enc.step(v, m, cache=cache, timestamps=torch.ones(3))
    enc.step(v, m, cache=cache, timestamps=t)
    with pytest.raises(ValueError, match="earlier than last_time"):
        enc.step(v, m, cache=cache, timestamps=torch.tensor([1.5, 1.0]))
    with pytest.raises(ValueError, match="came with timestamps"):
        enc.step(v, m, cache=cache, integration_timesteps=t)
    with pytest.raises(ValueError, match="integer times but the cache holds float"):
        enc.step(v, m, cache=cache, timestamps=torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="pools 'mean'"):
        _encoder("both", "last", Asymmetric("zoh")).step(v, m, cache=cache, timestamps=t)
    with pytest.raises(ValueError, match="not supported with cu_seqlens"):
        enc.encode(v[None], m[None, :], timestamps=t[None], cu_seqlens=torch.tensor([0, 2]),
                   inference_cache=enc.allocate_inference_cache(1))
    assert cache.count.tolist() == [1, 1]  # the refused calls absorbed nothing


def _leaves(cache):
    """Every tensor of an EncoderCache, named."""
    out = {"last_time": cache.last_time, "pool.count": cache.pool.count}
    for f in ("last", "total", "weighted", "weight"):
        out[f"pool.{f}"] = getattr(cache.pool, f)
    for i, c in enumerate(cache.layers):
        out[f"layers[{i}].conv_state"], out[f"layers[{i}].ssm_state"] = c.conv_state, c.ssm_state
    return out


@torch.no_grad()
def test_cache_rows_select_put_extended_clear():
    """Advancing a selected copy of some streams and putting it back equals stepping those
    streams in place (the others inactive); extended rows and cleared rows are streams without
    events: stepping them equals stepping a fresh cache. (Within round-off, not bit for bit: a
    matmul over another number of rows may round differently.)"""
    enc = _encoder("both", "time", Asymmetric("zoh"))
    ev = _history(enc, lens=[4, 3, 5, 2])
    _, _, cache = _step_all(enc, ev, torch.float64)
    g = torch.Generator().manual_seed(3)
    v, m = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.tensor([1, 0, 4, 2])
    t = torch.full((4,), 30.0, dtype=torch.float64)
    rows = torch.tensor([2, 0])
    in_place = copy.deepcopy(cache)
    enc.step(v, m, cache=in_place, timestamps=t, active=torch.tensor([True, False, True, False]))
    sub = cache.select(rows)
    enc.step(v[rows], m[rows], cache=sub, timestamps=t[rows])
    cache.put(rows, sub)
    errs = {name: rel_err(x, _leaves(in_place)[name]) for name, x in _leaves(cache).items()}
    print("selected, stepped and put back vs stepped in place:", errs)
    assert max(errs.values()) <= TOL[torch.float64]
    big = cache.extended(6)
    big.clear(torch.tensor([1]))
    assert big.count.tolist() == [5, 0, 6, 2, 0, 0]
    fresh = enc.allocate_inference_cache(3)
    enc.step(v[:3], m[:3], cache=fresh, timestamps=t[:3])
    part = big.select(torch.tensor([1, 4, 5]))
    enc.step(v[:3], m[:3], cache=part, timestamps=t[:3])
    errs = {name: rel_err(x, _leaves(fresh)[name]) for name, x in _leaves(part).items()}
    print("extended and cleared rows vs a fresh cache:", errs)
    assert max(errs.values()) <= TOL[torch.float64]
    with pytest.raises(ValueError, match="at least the cache's 6 streams"):
        big.extended(5)
    # the row operations name the fields they move: a new per-stream field must be added there
    assert {f.name for f in dataclasses.fields(RunningPool)} == {"how", *_POOL_ROWS}
    assert {f.name for f in dataclasses.fields(InferenceCache)} == {
        "conv_state", "ssm_state", "last_time", "seqlen_offset"}
