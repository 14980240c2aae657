"""EventStream (online inference) against the tasks' batch forward on the same histories.

Ten streams (keys of several types) receive events at their own moments, in pushes of one to
four events (a stream twice in one push takes the chunk path), the state growing past its first
allocation on the way; after every push the stream's answers are compared with the task's batch
forward (or log-likelihood pieces) on the padded histories so far: float64 within 1e-10, and a
float32 stream against the float64 model within 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch

from eventssm import Asymmetric
from eventssm.tasks import EncoderConfig, EventClassifier, EventRegressor, EventStream, EventTPP
from eventssm.time import timesteps_from_timestamps
from tests.helpers import rel_err

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
KEYS = ["a", 7, ("x", 1), "d", 3.5, "f", "g", "h", "i", "j"]  # 10 streams: past the first 8 rows
LENS = [9, 4, 1, 6, 12, 3, 7, 2, 5, 8]
BACKBONE = dict(d_model=16, n_layers=2, d_state=4, dropout=0.0, discretization=Asymmetric("zoh"))


def _events(K=3, C=0, tie=False, seed=0):
    """Every stream's events ``key -> list of (time, mark, values)``, each stream starting at its
    own moment, and their arrival order: all events sorted by time, cut into pushes of 1-4 events
    (``[[(key, i), ...], ...]``, ``i`` the event's index in its stream)."""
    g = torch.Generator().manual_seed(seed)
    streams, arrivals = {}, []
    for key, n in zip(KEYS, LENS):
        t = 3.0 * torch.rand(1, generator=g, dtype=torch.float64) + torch.cumsum(
            torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.05, 0)
        if tie and n > 3:
            t[2] = t[1]  # a gap of 0: taken, as in a batch
        marks = torch.randint(0, max(K, 1), (n,), generator=g)
        vals = torch.randn(n, C, generator=g, dtype=torch.float64)
        if C:
            vals[torch.rand(n, C, generator=g) < 0.3] = float("nan")  # missing: observed False
        streams[key] = [(float(t[i]), int(marks[i]), vals[i]) for i in range(n)]
        arrivals += [(float(t[i]), key, i) for i in range(n)]
    arrivals.sort(key=lambda a: a[0])
    order = [(key, i) for _, key, i in arrivals]
    pushes, j = [], 0
    while j < len(order):
        k = int(torch.randint(1, 5, (1,), generator=g))
        pushes.append(order[j:j + k])
        j += k
    # one push with the same stream twice, whatever the random cut gave
    assert any(len({key for key, _ in p}) < len(p) for p in pushes)
    return streams, pushes


def _push(stream, streams, push, model):
    ev = [streams[key][i] for key, i in push]
    kw = {}
    if model.encoder.num_marks:
        kw["marks"] = [m for _, m, _ in ev]
    if model.encoder.d_input:
        kw["values"] = torch.stack([v for _, _, v in ev])
    stream.push([key for key, _ in push], [t for t, _, _ in ev], **kw)


def _batch(streams, seen: dict, keys, K=0):
    """The §5 batch of each stream's first ``seen[key]`` events (right-padded, padding repeating
    the last time), with next-event targets."""
    n = [seen[k] for k in keys]
    B, L = len(keys), max(n)
    ts = torch.zeros(B, L, dtype=torch.float64)
    marks = torch.zeros(B, L, dtype=torch.long)
    C = streams[keys[0]][0][2].shape[0]
    vals = torch.zeros(B, L, C, dtype=torch.float64)
    for b, k in enumerate(keys):
        for i in range(L):
            t, m, v = streams[k][min(i, n[b] - 1)]
            ts[b, i] = t
            if i < n[b]:
                marks[b, i], vals[b, i] = m, v
    lengths = torch.tensor(n)
    mask = torch.arange(L)[None] < lengths[:, None]
    batch = {"timestamps": ts, "lengths": lengths, "mask": mask, "marks": marks,
             "integration_timesteps": timesteps_from_timestamps(ts, lengths=lengths)}
    if C:
        obs = torch.isfinite(vals) & mask[..., None]
        batch["values"], batch["observed"] = vals.nan_to_num(0.0).masked_fill(~obs, 0.0), obs
    # next-event targets: the next type and gap, -100 / 0 where there is none
    nxt = torch.cat([marks[:, 1:], torch.zeros(B, 1, dtype=torch.long)], 1)
    has_next = torch.arange(L)[None] < (lengths - 1)[:, None]
    batch["target"] = torch.where(has_next, nxt, -100)
    batch["target_gap"] = torch.cat([ts.diff(dim=1), torch.zeros(B, 1, dtype=torch.float64)], 1) * has_next
    return batch


def _report(name, errs, dtype):
    worst = max(errs) if errs else 0.0
    print(f"{name} {dtype}: max relative error {worst:.2e} over {len(errs)} comparisons")
    assert errs and worst <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("pooling,per_event", [("last", False), ("mean", False), ("time", False),
                                               ("mean", True)],
                         ids=["last", "mean", "time", "per-event"])
def test_classifier_stream_equals_batch_forward(pooling, per_event, dtype):
    torch.manual_seed(0)
    model64 = EventClassifier(num_classes=3, d_input=2, num_marks=4, use_observed=True,
                              per_event=per_event, time_scale=0.7,
                              backbone=EncoderConfig(**BACKBONE, pooling=pooling)).double().eval()
    streams, pushes = _events(K=4, C=2, tie=True)
    stream = EventStream(copy.deepcopy(model64).to(dtype))
    seen, errs = {}, []
    for push in pushes:
        _push(stream, streams, push, model64)
        for key, i in push:
            seen[key] = i + 1
        keys = list(seen)
        with torch.no_grad():
            ref = model64(_batch(streams, seen, keys)).softmax(-1)
        if per_event:
            ref = ref[torch.arange(len(keys)), torch.tensor([seen[k] for k in keys]) - 1]
        errs.append(rel_err(stream.predict(keys), ref))
    assert stream.cache.batch_size == 16 and len(stream) == len(KEYS)
    _report(f"classifier {pooling} per_event={per_event}", errs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_regressor_stream_prediction_and_forecast_equal_batch_forward(dtype):
    torch.manual_seed(1)
    model64 = EventRegressor(d_target=2, d_input=2, use_observed=True, time_scale=1.3,
                             backbone=EncoderConfig(**BACKBONE, pooling="time")).double().eval()
    streams, pushes = _events(K=0, C=2, seed=2)
    stream = EventStream(copy.deepcopy(model64).to(dtype))
    seen, errs, ferrs = {}, [], []
    for push in pushes:
        _push(stream, streams, push, model64)
        for key, i in push:
            seen[key] = i + 1
        keys = list(seen)
        batch = _batch(streams, seen, keys)
        last = batch["timestamps"][torch.arange(len(keys)), batch["lengths"] - 1]
        q = last[:, None] + torch.tensor([[0.0, 0.4, 1.1]], dtype=torch.float64)
        with torch.no_grad():
            ref = model64({k: v for k, v in batch.items() if k != "marks"})
            fref = model64({**{k: v for k, v in batch.items() if k != "marks"}, "query_times": q,
                            "query_mask": torch.ones(q.shape, dtype=torch.bool)})
        errs.append(rel_err(stream.predict(keys), ref))
        ferrs.append(rel_err(stream.forecast(keys, q), fref))
    assert stream.count(keys).tolist() == [seen[k] for k in keys]  # forecasts advance nothing
    _report("regressor", errs, dtype)
    _report("regressor forecast", ferrs, dtype)


def _tpp(head, dtype=torch.float64):
    torch.manual_seed(2)
    return EventTPP(num_marks=3, head=head, log_gap_stats=(-0.3, 1.1), time_scale=0.7,
                    backbone=EncoderConfig(**BACKBONE)).double().eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("head", ["mixture", "intensity"])
def test_tpp_stream_equals_batch_log_likelihood(head, dtype):
    """Before each push, the stream's density, intensity and survival at each arriving event
    (the first of its stream in the push) are the task's log-likelihood pieces of that event on
    the padded histories; after each push, the next event's prediction is the head's on the
    batch features; at the end the sampled futures are the task's step sampler's."""
    model64 = _tpp(head)
    streams, pushes = _events(K=3, seed=3)
    stream = EventStream(copy.deepcopy(model64).to(dtype))
    seen, at_event, perrs = {}, {}, []
    for push in pushes:
        for key, i in push:
            if key in stream and (key, i - 1) not in at_event and seen[key] == i:
                t, m, _ = streams[key][i]
                at_event[(key, i - 1)] = (stream.density([key], t)[0, m],
                                          stream.intensity([key], [t])[0, m],
                                          stream.survival([key], t)[0])
        _push(stream, streams, push, model64)
        for key, i in push:
            seen[key] = i + 1
        keys = list(seen)
        with torch.no_grad():
            batch = _batch(streams, seen, keys)
            h = model64(batch)[torch.arange(len(keys)), batch["lengths"] - 1]
            gap, probs = model64.head.predict(h)
        nxt = stream.next_event(keys)
        perrs += [rel_err(nxt["gap"], gap), rel_err(nxt["type_probs"], probs),
                  rel_err(nxt["time"], batch["timestamps"][torch.arange(len(keys)),
                                                           batch["lengths"] - 1] + gap)]
    _report(f"{head} next event", perrs, dtype)
    keys = list(seen)
    batch = _batch(streams, seen, keys)
    with torch.no_grad():
        time_ll, type_ll, _, scored = model64.log_likelihood(batch)
    index = {}  # (key, i) -> position among the scored events (row-major)
    for j, (b, i) in enumerate(scored.nonzero().tolist()):
        index[(keys[b], i)] = j
    dens, lam_s = [], []
    for (key, i), (d, lam, surv) in at_event.items():
        ref = (time_ll[index[(key, i)]] + type_ll[index[(key, i)]]).exp()
        dens.append(rel_err(d, ref))
        lam_s.append(rel_err(lam * surv, ref))  # λ_k(τ) S(τ) = p(τ, k)
    assert len(at_event) > 20
    _report(f"{head} density at the events", dens, dtype)
    _report(f"{head} intensity x survival at the events", lam_s, dtype)
    if dtype == torch.float64:  # the same draws: thinning acceptance is exact only in float64
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        got = stream.sample_futures(keys, horizon=2.0, n_samples=3, max_events=5, generator=g1)
        ref = model64.sample_futures(batch, horizon=2.0, n_samples=3, max_events=5, generator=g2,
                                     method="step")
        err = rel_err(got["times"], ref["times"])
        print(f"{head} sampled futures: max relative error of the times {err:.2e}, "
              f"{int(ref['mask'].sum())} events")
        assert torch.equal(got["mask"], ref["mask"]) and torch.equal(got["marks"], ref["marks"])
        assert err <= 1e-10 and int(ref["mask"].sum()) > 20
        assert stream.count(keys).tolist() == [seen[k] for k in keys]  # sampling advanced nothing


def test_integer_clock_equals_batch_forward():
    """Nanosecond int64 times (beyond float64's exact integers): gaps formed exactly."""
    torch.manual_seed(3)
    model = EventClassifier(num_classes=2, num_marks=3, time_scale=1e-9,
                            backbone=EncoderConfig(**BACKBONE)).double().eval()
    t0 = 1_700_000_000_123_456_789
    ts = {"a": [t0, t0 + 1, t0 + 2_000_000_001], "b": [t0 + 5, t0 + 900_000_000_000]}
    stream = EventStream(model, integer_times=True)
    stream.push(["a", "b", "a", "a", "b"], torch.tensor([ts["a"][0], ts["b"][0], ts["a"][1],
                                                        ts["a"][2], ts["b"][1]]),
                marks=[0, 1, 2, 0, 1])
    tau = torch.tensor([[0, 1, 2_000_000_000], [0, 899_999_999_995, 0]], dtype=torch.float64)
    batch = {"marks": torch.tensor([[0, 2, 0], [1, 1, 0]]), "integration_timesteps": tau,
             "lengths": torch.tensor([3, 2])}
    with torch.no_grad():
        ref = model(batch).softmax(-1)
    err = rel_err(stream.predict(["a", "b"]), ref)
    print("integer clock: max relative error", err)
    assert err <= 1e-10 and stream.last_time(["a"]).tolist() == [ts["a"][2]]


def test_dropped_stream_frees_its_row_for_a_fresh_one():
    model = _tpp("mixture")
    stream = EventStream(model, capacity=2)
    stream.push(["a", "b", "a"], [0.0, 0.5, 1.0], marks=[0, 1, 2])
    before = stream.next_event(["b"])["type_probs"]
    with pytest.raises(ValueError, match="full: capacity 2"):
        stream.push(["c"], [2.0], marks=[0])
    stream.drop(["a"])
    stream.push(["c", "c"], [2.0, 2.5], marks=[1, 0])
    assert stream.streams == ["b", "c"] and "a" not in stream
    fresh = EventStream(model)
    fresh.push(["c", "c"], [2.0, 2.5], marks=[1, 0])
    err = rel_err(stream.next_event(["c"])["type_probs"], fresh.next_event(["c"])["type_probs"])
    print("reused row vs a fresh stream", err)
    assert err == 0.0 and torch.equal(stream.next_event(["b"])["type_probs"], before)


def test_time_going_back_raises_naming_the_stream_and_changes_nothing():
    model = _tpp("intensity")
    stream = EventStream(model)
    stream.push(["a", ("x", 1)], [1.0, 2.0], marks=[0, 1])
    state = copy.deepcopy(stream.cache)
    cases = [
        ((["a"], [0.5], [0]), r"stream 'a': time 0.5 is before its latest event at 1.0"),
        ((["new", ("x", 1)], [9.0, 1.5], [0, 0]),
         r"stream \('x', 1\): time 1.5 is before its latest event at 2.0 \(event 1"),
        ((["b", "b"], [3.0, 2.0], [0, 0]), r"stream 'b': time 2.0 is before its previous event "
                                           r"in this push at 3.0"),
        ((["a"], [float("nan")], [0]), r"stream 'a': time nan is not finite"),
        ((["a", "c"], [2.0, 2.0], [1, 3]), r"stream 'c': mark 3 is outside \[0, 3\)"),
    ]
    for (ids, times, marks), msg in cases:
        with pytest.raises(ValueError, match=msg) as err:
            stream.push(ids, times, marks=marks)
        print(err.value)
    assert stream.streams == ["a", ("x", 1)]  # nothing created, nothing advanced
    for x, y in zip(torch.utils._pytree.tree_leaves(stream.cache.layers),
                    torch.utils._pytree.tree_leaves(state.layers)):
        assert not isinstance(x, torch.Tensor) or torch.equal(x, y)
    assert torch.equal(stream.cache.count, state.count)
    stream.push(["a"], [1.0], marks=[2])  # a tie is a gap of 0, as in a batch
    assert stream.count(["a"]).tolist() == [2]


def test_bad_arguments_are_named():
    model = _tpp("mixture")
    stream = EventStream(model)
    stream.push(["a"], [1.0], marks=[0])
    with pytest.raises(TypeError, match=r"for one stream pass \['a'\]"):
        stream.push("a", [2.0], marks=[0])
    with pytest.raises(TypeError, match=r"stream_ids\[0\] .* not hashable"):
        stream.push([["a"]], [2.0], marks=[0])
    with pytest.raises(ValueError, match=r"times must have shape \(2,\)"):
        stream.push(["a", "b"], [2.0], marks=[0, 0])
    with pytest.raises(ValueError, match="marks .* are required"):
        stream.push(["a"], [2.0])
    with pytest.raises(ValueError, match="takes no values"):
        stream.push(["a"], [2.0], marks=[0], values=[[1.0]])
    with pytest.raises(KeyError, match="no stream 'zz'"):
        stream.next_event(["zz"])
    with pytest.raises(ValueError, match=r"t: stream 'a' is asked about time 0.5, before its "
                                         r"latest event at 1.0"):
        stream.density(["a"], 0.5)
    with pytest.raises(TypeError, match="ask next_event"):
        stream.predict(["a"])
    with pytest.raises(TypeError, match="EventTPP, EventClassifier"):
        EventStream(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        EventStream(model, capacity=0)
    clf = EventStream(EventClassifier(num_classes=2, num_marks=2, backbone=EncoderConfig(**BACKBONE)))
    clf.push(["a"], [0.0], marks=[1])
    with pytest.raises(TypeError, match="needs an EventTPP.*ask predict"):
        clf.next_event(["a"])
    with pytest.raises(ValueError, match="integer_times=True"):
        EventStream(model, integer_times=True).push(["a"], [1.5], marks=[0])


@pytest.mark.slow  # compiles the step: about 40 s on 2 cores
def test_compiled_step_gives_the_eager_answers():
    model = _tpp("intensity")
    eager, compiled = EventStream(model), EventStream(model, compile=True)
    g = torch.Generator().manual_seed(3)
    t = {k: 0.0 for k in "abc"}
    for i in range(12):
        ids = ["a", "b", "c"] if i % 3 else ["b"]  # one stream, then three, at once
        times = []
        for k in ids:
            t[k] += float(torch.rand((), generator=g)) + 0.1
            times.append(t[k])
        marks = torch.randint(0, model.encoder.num_marks, (len(ids),), generator=g)
        eager.push(ids, times, marks=marks)
        compiled.push(ids, times, marks=marks)
    ids = ["a", "b", "c"]
    err = rel_err(compiled.pooled(ids), eager.pooled(ids))
    s = torch.tensor([t["a"] + 0.3, t["b"] + 1.0, t["c"] + 2.5], dtype=torch.float64)
    err_lam = rel_err(compiled.intensity(ids, s), eager.intensity(ids, s))
    print(f"compiled vs eager: pooled {err:.1e}, intensity {err_lam:.1e}")
    assert err < 1e-5 and err_lam < 1e-5
    with pytest.raises(TypeError, match="compile must be True or False"):
        EventStream(model, compile="yes")
