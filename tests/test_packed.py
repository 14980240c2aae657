"""Packed batches (``cu_seqlens``) vs right-padded ones, from the Mamba block to every task.

The padded batch of the same sequences is the oracle: the padded path is itself tested against
the float64 reference scan and against each sequence alone (tests/test_mamba.py,
tests/test_tasks.py). Everything here runs in float64 so that "equal" means equal to rounding,
except the Triton kernels' section at the end (float32 and bf16, on the interpreter and CUDA).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from eventssm import Asymmetric, EventEncoder, Mamba, MambaLM, Scaled, Standard
from eventssm.checks import ValueChecks
from eventssm.datasets import (
    EventCollator,
    PointProcessDataModule,
    SyntheticDataModule,
    collate_events,
    pack_batch,
    unpack_batch,
)
from eventssm.datasets.collate import AUTO_PACK_PADDING, padding_share
from eventssm.packing import (
    check_cu_seqlens,
    cu_seqlens_from_lengths,
    pack_sequences,
    packed_timesteps,
    segment_pool,
    unpack_sequences,
)
from eventssm.tasks import EncoderConfig, EventClassifier, EventRegressor, EventTPP, splice_queries
from tests.helpers import DEVICES, count_calls, spy_value_checks

DISCS = [Asymmetric("zoh"), Scaled("mamba"), Standard("bilinear"), "mamba"]
DISC_IDS = ["asym-zoh", "scaled-mamba", "std-bilinear", "str-mamba"]
TINY = dict(d_model=16, n_layers=2, d_state=4, expand=2, dropout=0.0)  # padded = packed needs no dropout
LENS = [5, 1, 9, 3]  # a length-1 sequence among others


def _err(a, b) -> float:
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


def _close(name, got, want, tol=1e-10):
    err = _err(got, want)
    print(f"{name}: max |packed - padded| = {err:.3g}")
    assert err <= tol * max(1.0, float(want.detach().abs().max()) if want.numel() else 1.0), name


def _times(B, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, L, generator=g, dtype=torch.float64) * 2).cumsum(1)


# ------------------------------------------------------------------ the block and the stacks
@pytest.mark.parametrize("disc", DISCS, ids=DISC_IDS)
@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("time_input", ["timestamps", "integration_timesteps"])
def test_mamba_packed_equals_padded(disc, backend, time_input):
    """Outputs at real steps and every gradient (input, gaps, parameters) agree."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, discretization=disc, backend=backend).double()
    lens = torch.tensor(LENS)
    B, L = len(LENS), max(LENS)
    X = torch.randn(B, L, 8, dtype=torch.float64)
    ts = _times(B, L)
    tau = torch.rand(B, L, dtype=torch.float64) * 3
    t_in = ts if time_input == "timestamps" else tau
    cu = cu_seqlens_from_lengths(lens)
    Xp = pack_sequences(X, lens).requires_grad_()
    Tp = pack_sequences(t_in, lens).requires_grad_(time_input != "timestamps")
    X.requires_grad_()
    t_in.requires_grad_(time_input != "timestamps")
    Y = m(X, lengths=lens, **{time_input: t_in})
    Yp = m(Xp, cu_seqlens=cu, **{time_input: Tp})
    _close("y", Yp, pack_sequences(Y, lens))
    G = torch.randn_like(Yp)
    params = list(m.parameters())
    wrt_p = [Xp] + ([Tp] if Tp.requires_grad else []) + params
    wrt = [X] + ([t_in] if t_in.requires_grad else []) + params
    gp = torch.autograd.grad((Yp * G).sum(), wrt_p, allow_unused=True)
    gpad = torch.autograd.grad((pack_sequences(Y, lens) * G).sum(), wrt, allow_unused=True)
    _close("dx", gp[0], pack_sequences(gpad[0], lens))
    if Tp.requires_grad and gpad[1] is not None:  # a Standard coupling does not read τ
        _close("dtau", gp[1], pack_sequences(gpad[1], lens))
    for (name, _), a, b in zip(m.named_parameters(), gp[-len(params):], gpad[-len(params):]):
        _close(f"d{name}", a, b)


def test_packed_sequences_do_not_see_each_other():
    """Each packed sequence gives what it gives alone (the conv and the scan restart)."""
    torch.manual_seed(1)
    m = MambaLM(32, 16, d_state=4, n_layers=2).double()
    docs = [torch.randint(0, 32, (n,)) for n in (7, 1, 12)]
    cu = cu_seqlens_from_lengths(torch.tensor([len(d) for d in docs]))
    packed = m(torch.cat(docs)[None], cu_seqlens=cu)
    for i, d in enumerate(docs):
        _close(f"doc {i}", packed[0, cu[i]:cu[i + 1]], m(d))


@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
@pytest.mark.parametrize("disc", DISCS[:3], ids=DISC_IDS[:3])
def test_encoder_packed_equals_padded(pooling, disc):
    torch.manual_seed(2)
    enc = EventEncoder(16, 2, d_input=3, num_marks=4, discretization=disc, pooling=pooling,
                       use_observed=True, time_scale=0.7).double()
    lens = torch.tensor(LENS)
    B, L = len(LENS), max(LENS)
    V = torch.randn(B, L, 3, dtype=torch.float64)
    M = torch.randint(0, 4, (B, L))
    O = torch.rand(B, L, 3) > 0.3
    ts = _times(B, L, seed=3)
    cu = cu_seqlens_from_lengths(lens)
    pk = lambda x: pack_sequences(x, lens)
    f = enc(V, M, timestamps=ts, lengths=lens, observed=O)
    fp = enc(pk(V), pk(M), timestamps=pk(ts), observed=pk(O), cu_seqlens=cu)
    assert fp.shape == (B, 16)
    _close("pooled", fp, f)
    e = enc.encode(V, M, timestamps=ts, lengths=lens, observed=O)
    ep = enc.encode(pk(V), pk(M), timestamps=pk(ts), observed=pk(O), cu_seqlens=cu)
    _close("per event", ep, pk(e))
    G = torch.randn_like(f)
    g = torch.autograd.grad((f * G).sum(), list(enc.parameters()))
    gp = torch.autograd.grad((fp * G).sum(), list(enc.parameters()))
    for (name, _), a, b in zip(enc.named_parameters(), gp, g):
        _close(f"d{name}", a, b)


def test_segment_pool_matches_pool_with_an_empty_sequence():
    """Length 0 is handled: an empty sequence pools to 0 in both forms."""
    from eventssm.models import pool

    lens = torch.tensor([3, 0, 4])
    h = torch.randn(3, 4, 5, dtype=torch.float64)
    tau = torch.rand(3, 4, dtype=torch.float64)
    mask = torch.arange(4)[None] < lens[:, None]
    tau = tau * mask
    cu = cu_seqlens_from_lengths(lens)
    for how in ("last", "mean", "time"):
        want = pool(h, how, mask, tau)
        got = segment_pool(pack_sequences(h, lens), how, cu, pack_sequences(tau, lens))
        _close(how, got, want)
        assert (got[1] == 0).all()


def test_encoder_with_an_empty_packed_sequence():
    enc = EventEncoder(8, 1, d_input=2).double()
    lens = torch.tensor([3, 0, 2])
    V = torch.randn(3, 3, 2, dtype=torch.float64)
    ts = _times(3, 3)
    pk = lambda x: pack_sequences(x, lens)
    fp = enc(pk(V), timestamps=pk(ts), cu_seqlens=cu_seqlens_from_lengths(lens))
    f = enc(V, timestamps=ts, lengths=lens)
    _close("pooled", fp, f)
    assert (fp[1] == 0).all()


# ------------------------------------------------------------------ validation at the door
def test_packed_validation_errors():
    m = Mamba(8)
    x = torch.randn(1, 6, 8)
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    with pytest.raises(ValueError, match="end at the packed length 6"):
        m(x, cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.int32))
    with pytest.raises(ValueError, match="decreases at index 2"):
        m(x, cu_seqlens=torch.tensor([0, 4, 2, 6], dtype=torch.int32))
    with pytest.raises(ValueError, match="int32 or int64"):
        m(x, cu_seqlens=cu.float())
    with pytest.raises(ValueError, match="batch == 1"):
        m(torch.randn(2, 3, 8), cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths .* or cu_seqlens"):
        m(x, lengths=torch.tensor([6]), cu_seqlens=cu)
    with pytest.raises(ValueError, match="inference_cache"):
        m(x, inference_cache=m.allocate_inference_cache(1), cu_seqlens=cu)
    with pytest.raises(ValueError, match=r"shape \(1, 6\)"):
        m(x, integration_timesteps=torch.rand(1, 5), cu_seqlens=cu)
    with pytest.raises(ValueError, match="must be >= 0"):
        m(x, integration_timesteps=-torch.rand(1, 6), cu_seqlens=cu)
    # each sequence has its own clock: times may drop at a boundary, not inside a sequence
    ok = torch.tensor([[0.0, 5.0, 0.0, 1.0, 1.0, 9.0]])
    m(x, timestamps=ok, cu_seqlens=cu)
    with pytest.raises(ValueError, match="sequence 1 decreases at packed position 4"):
        m(x, timestamps=torch.tensor([[0.0, 5.0, 0.0, 3.0, 1.0, 9.0]]), cu_seqlens=cu)
    with pytest.raises(ValueError, match="finite"):
        m(x, timestamps=torch.tensor([[0.0, 5.0, 0.0, float("nan"), 1.0, 9.0]]), cu_seqlens=cu)
    with pytest.raises(ValueError, match="cu_seqlens"):
        check_cu_seqlens([0, 6], 6, 1, ValueChecks())


def test_packed_inputs_are_validated_once(monkeypatch):
    """The encoder checks cu_seqlens, the gaps and the values at its door (one run of its value
    checks), not again in every layer."""
    import eventssm.packing as packing

    calls = count_calls(monkeypatch, packing, "check_cu_seqlens")
    seen = spy_value_checks(monkeypatch)
    enc = EventEncoder(8, 3, d_input=2)
    lens = torch.tensor([4, 2, 5])
    V, ts = torch.randn(3, 5, 2), _times(3, 5)
    enc(pack_sequences(V, lens), timestamps=pack_sequences(ts, lens),
        cu_seqlens=cu_seqlens_from_lengths(lens))
    print("value checks:", seen["runs"])
    assert calls == [1]
    assert seen["runs"] == [["cu_seqlens", "timestamps", "timestamps in torch.float32", "values"]]


def test_packed_timesteps_within_sequences():
    t = torch.tensor([[3, 5, 0, 2, 2, 7]], dtype=torch.int64)
    cu = torch.tensor([0, 2, 2, 6])  # with an empty sequence in the middle
    got = packed_timesteps(t, cu, time_scale=0.5)
    assert got.dtype == torch.float64
    assert got.tolist() == [[0.0, 1.0, 0.0, 1.0, 0.0, 2.5]]


# ------------------------------------------------------------------ collate: pack and unpack
def _samples(lens, C=2, marks=3, seed=0, next_event=False):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lens):
        t = np.cumsum(rng.exponential(size=n))
        v = rng.normal(size=(n, C)).astype(np.float32)
        v[rng.random((n, C)) < 0.2] = np.nan
        s = {"timestamps": t - t[0], "values": v, "marks": rng.integers(0, marks, n), "index": i}
        if next_event:
            s["target"] = np.r_[rng.integers(0, marks, n - 1), -100]
            s["target_gap"] = np.r_[rng.exponential(size=n - 1), 0.0].astype(np.float32)
        else:
            s["target"] = np.int64(i % 2)
        out.append(s)
    return out


@pytest.mark.parametrize("next_event", [False, True])
def test_pack_batch_round_trip(next_event):
    b = collate_events(_samples([4, 1, 6], next_event=next_event), use_observed=True)
    p = pack_batch(b)
    assert p["cu_seqlens"].tolist() == [0, 4, 5, 11]
    assert p["values"].shape == (1, 11, 2) and p["mask"].all()
    u = unpack_batch(p)
    assert set(u) == set(b)
    for k in b:
        assert u[k].shape == b[k].shape and u[k].dtype == b[k].dtype, k
        assert torch.equal(u[k], b[k]), k


def test_collate_refuses_an_empty_sequence_and_packs_a_single_event():
    with pytest.raises(ValueError, match="empty sequence"):
        collate_events(_samples([3, 1]) + [{"timestamps": np.zeros(0), "values": np.zeros((0, 2)),
                                            "marks": np.zeros(0, np.int64), "target": np.int64(0),
                                            "index": 2}])
    p = pack_batch(collate_events(_samples([1])))
    assert p["cu_seqlens"].tolist() == [0, 1] and p["integration_timesteps"].tolist() == [[0.0]]


def test_unpack_sequences_inverts_pack_sequences():
    lens = torch.tensor([2, 0, 3])
    x = torch.randn(3, 3, 4)
    x = x * (torch.arange(3)[None] < lens[:, None])[..., None]
    back = unpack_sequences(pack_sequences(x, lens), cu_seqlens_from_lengths(lens))
    assert torch.equal(back, x)


def test_auto_collator_packs_uneven_batches_only():
    even, uneven = _samples([5, 5, 4]), _samples([12, 1, 2, 3])
    assert padding_share([5, 5, 4]) < AUTO_PACK_PADDING < padding_share([12, 1, 2, 3])
    auto = EventCollator(pack="auto")
    assert "cu_seqlens" not in auto(even) and "cu_seqlens" in auto(uneven)
    assert "cu_seqlens" in EventCollator(pack=True)(even)
    assert "cu_seqlens" not in EventCollator(pack=False)(uneven)
    with pytest.raises(ValueError, match="pack must be"):
        EventCollator(pack="yes")


# ------------------------------------------------------------------ every task
def _metrics(model) -> dict:
    import torchmetrics

    return {n: m.compute() for n, m in model.named_modules()
            if isinstance(m, torchmetrics.Metric) and m.update_count}


def _task_equal(model, batch, tol=1e-9):
    """Training loss, its gradient and the validation metrics agree on the two forms."""
    model = model.double()
    out = {}
    for form, b in (("padded", batch), ("packed", pack_batch(batch))):
        mdl = copy.deepcopy(model)
        b = {k: v.double() if torch.is_tensor(v) and v.dtype == torch.float32 else v
             for k, v in b.items()}
        loss = mdl.training_step(b, 0)
        grads = torch.autograd.grad(loss, [p for p in mdl.parameters() if p.requires_grad],
                                    allow_unused=True)
        with torch.no_grad():
            mdl.validation_step(b, 0)
        out[form] = (loss.detach(), grads, _metrics(mdl))
    (lp, gp, mp), (lk, gk, mk) = out["padded"], out["packed"]
    _close("loss", lk, lp, tol)
    for (name, _), a, b in zip(model.named_parameters(), gk, gp):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        _close(f"d{name}", a, b, tol)
    assert mp.keys() == mk.keys() and mp
    for k in mp:
        _close(k, torch.as_tensor(mk[k]).double(), torch.as_tensor(mp[k]).double(), tol)


@pytest.fixture(autouse=True)
def _quiet_lightning(monkeypatch):
    # self.log without a Trainer warns once per call; the tests call the steps directly
    import lightning as L

    monkeypatch.setattr(L.LightningModule, "log", lambda self, *a, **k: None)


@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
def test_classifier_packed_equals_padded(pooling):
    torch.manual_seed(0)
    m = EventClassifier(num_classes=2, d_input=2, num_marks=3, use_observed=True,
                        backbone=EncoderConfig(**TINY, discretization=Asymmetric("zoh"),
                                               pooling=pooling))
    _task_equal(m, collate_events(_samples([6, 1, 9, 3]), use_observed=True))


def test_per_event_classifier_packed_equals_padded():
    torch.manual_seed(0)
    m = EventClassifier(num_classes=3, d_input=2, num_marks=3, use_observed=True, per_event=True,
                        backbone=EncoderConfig(**TINY, discretization=Scaled("zoh")))
    _task_equal(m, collate_events(_samples([6, 1, 9, 3], next_event=True), use_observed=True))


def test_regressor_packed_equals_padded():
    torch.manual_seed(0)
    m = EventRegressor(d_target=1, d_input=2, num_marks=3, use_observed=True,
                       backbone=EncoderConfig(**TINY, pooling="time"))
    samples = _samples([6, 1, 9, 3])
    for i, s in enumerate(samples):
        s["target"] = np.array([0.3 * i - 0.5], np.float32)
    _task_equal(m, collate_events(samples, use_observed=True))


def test_forecaster_packed_equals_padded():
    torch.manual_seed(0)
    dm = SyntheticDataModule(n_sequences=16, task="none", target="forecast", forecast_steps=3,
                             min_len=2, max_len=12, batch_size=4)
    dm.build()
    ds = dm.datasets["train"]
    samples = [ds[i] for i in range(5)]
    samples[1] = dict(samples[1], query_times=samples[1]["query_times"][:1],
                      target=samples[1]["target"][:1])  # fewer queries than the others
    batch = collate_events(samples, use_observed=True)
    m = EventRegressor(d_target=dm.d_target, d_input=dm.d_input, use_observed=True,
                       backbone=EncoderConfig(**TINY, discretization=Asymmetric("zoh")))
    _task_equal(m, batch)
    # the spliced packed sequences are the padded spliced ones, packed
    from eventssm.tasks import splice_queries_packed

    inp, pos = splice_queries(batch)
    inp_p, pos_p = splice_queries_packed(pack_batch(batch))
    assert torch.equal(inp_p["cu_seqlens"].long(), cu_seqlens_from_lengths(inp["lengths"]).long())
    for k in ("timestamps", "integration_timesteps", "values", "observed"):
        assert torch.equal(inp_p[k], pack_sequences(inp[k], inp["lengths"])), k
    qm = batch["query_mask"]
    flat = (inp_p["cu_seqlens"][:-1].long()[:, None] + pos)[qm]
    assert torch.equal(pos_p[qm], flat)


@pytest.mark.parametrize("head", ["mixture", "intensity", "state"])
def test_tpp_packed_equals_padded(head):
    torch.manual_seed(0)
    dm = PointProcessDataModule(n_sequences=12, horizon=8.0, max_events=40, batch_size=4,
                                target="next_event", seed=0)
    dm.build()
    ds = dm.datasets["train"]
    batch = collate_events([ds[i] for i in range(4)])
    assert padding_share(batch["lengths"]) > 0
    m = EventTPP(num_marks=dm.num_marks, head=head, n_quad=4, n_panels=2,
                 backbone=EncoderConfig(**TINY, discretization=Asymmetric("zoh")))
    _task_equal(m, batch)
    # sampling the next event and whole futures: the same draws from either form
    m = m.double().eval()
    outs = []
    for b in (batch, pack_batch(batch)):
        g = torch.Generator().manual_seed(5)
        outs.append(m.sample_futures(b, horizon=2.0, n_samples=2, max_events=4, generator=g))
    for k in ("times", "marks", "mask"):
        assert torch.equal(outs[0][k], outs[1][k]), k


def test_bytelm_packed_documents():
    from eventssm.tasks import ByteLM, LMConfig

    torch.manual_seed(0)
    m = ByteLM(LMConfig(d_model=16, n_layers=1, d_state=4)).double()
    docs = [torch.randint(0, 256, (n,)) for n in (6, 2, 9)]
    cu = cu_seqlens_from_lengths(torch.tensor([len(d) for d in docs]))
    logits = m(torch.cat(docs)[None], cu)
    for i, d in enumerate(docs):
        _close(f"doc {i}", logits[0, cu[i]:cu[i + 1]], m(d[None])[0])


def test_datamodule_pack_auto_default_and_packed_training():
    """The DataModules pack by default when it saves work; a short fit runs on such batches."""
    import lightning as L

    dm = SyntheticDataModule(n_sequences=48, batch_size=8, min_len=3, max_len=30, seed=0)
    assert dm.pack == "auto"
    batches = list(dm.train_dataloader())
    assert any("cu_seqlens" in b for b in batches)
    assert all("cu_seqlens" not in b for b in dm.predict_dataloader())  # predictions: padded
    model = EventClassifier(num_classes=dm.num_classes, d_input=dm.d_input,
                            backbone=EncoderConfig(**TINY))
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=2)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3


# ------------------------------------------------------------------ on the Triton kernels
# The conv and scan kernels take ``cu_seqlens`` natively; on both kernel devices (tests/helpers.py):
# the interpreter on the CPU and CUDA.
KERNEL_LENS = [5, 1, 19, 3]  # longer than the interpreter's 16-step chunks, and a single event


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Scaled("mamba"), Standard("bilinear")],
                         ids=["asym-zoh", "scaled-mamba", "std-bilinear"])
@pytest.mark.parametrize("device", DEVICES)
def test_mamba_triton_packed_equals_torch_padded(device, disc):
    """A Mamba block on the Triton path on a packed batch against the torch path on the padded
    batch of the same sequences: outputs and every parameter's gradient (fp32)."""
    torch.manual_seed(0)
    ref = Mamba(8, d_state=4, discretization=disc, backend="torch")
    fast = Mamba(8, d_state=4, discretization=disc, backend="triton")
    fast.load_state_dict(ref.state_dict())
    ref, fast = ref.to(device), fast.to(device)
    lens = torch.tensor(KERNEL_LENS, device=device)
    B, L = len(KERNEL_LENS), max(KERNEL_LENS)
    X = torch.randn(B, L, 8).to(device)
    ts = (torch.rand(B, L, dtype=torch.float64) * 2).cumsum(1).to(device)
    cu = cu_seqlens_from_lengths(lens)
    Y = ref(X, lengths=lens, timestamps=ts)
    Yp = fast(pack_sequences(X, lens), timestamps=pack_sequences(ts, lens), cu_seqlens=cu)
    err = _rel(Yp, pack_sequences(Y, lens))
    print(f"y: rel err {err:.2e}")
    assert err < 1e-4
    G = torch.randn(Yp.shape).to(device)
    g_ref = torch.autograd.grad((pack_sequences(Y, lens) * G).sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad((Yp * G).sum(), list(fast.parameters()))
    for (name, _), a, b in zip(ref.named_parameters(), g_fast, g_ref):
        err = _rel(a, b)
        print(f"d{name}: rel err {err:.2e}")
        assert err < 1e-4, name


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_triton_packed_equals_torch_padded(device):
    """An event encoder (time pooling) on the Triton path on a packed batch against the torch
    path on the padded batch: the pooled features."""
    torch.manual_seed(1)
    ref = EventEncoder(8, 1, d_input=2, d_state=4, discretization=Asymmetric("zoh"),
                       pooling="time", backend="torch")
    fast = EventEncoder(8, 1, d_input=2, d_state=4, discretization=Asymmetric("zoh"),
                        pooling="time", backend="triton")
    fast.load_state_dict(ref.state_dict())
    ref, fast = ref.to(device), fast.to(device)
    lens = torch.tensor(KERNEL_LENS, device=device)
    V = torch.randn(len(KERNEL_LENS), max(KERNEL_LENS), 2).to(device)
    ts = (torch.rand(len(KERNEL_LENS), max(KERNEL_LENS), dtype=torch.float64) * 2).cumsum(1).to(device)
    f = ref(V, timestamps=ts, lengths=lens)
    fp = fast(pack_sequences(V, lens), timestamps=pack_sequences(ts, lens),
              cu_seqlens=cu_seqlens_from_lengths(lens))
    err = _rel(fp, f)
    print(f"pooled: rel err {err:.2e}")
    assert err < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_encoder_packed_on_cuda_equals_padded(dtype):
    """The Triton conv and scan on a packed batch (``cu_seqlens``) against the same kernels on
    the padded batch, pooled features and every gradient (bf16 only here: the interpreter
    computes it wrongly)."""
    torch.manual_seed(0)
    enc = EventEncoder(64, 2, d_input=3, discretization=Asymmetric("zoh"), pooling="time").cuda()
    lens = torch.tensor([37, 1, 300, 129, 64], device="cuda")
    B, L = lens.numel(), int(lens.max())
    V = torch.randn(B, L, 3, device="cuda")
    ts = (torch.rand(B, L, dtype=torch.float64, device="cuda") * 2).cumsum(1)
    cu = cu_seqlens_from_lengths(lens)
    pk = lambda x: pack_sequences(x, lens)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        f = enc(V, timestamps=ts, lengths=lens)
        fp = enc(pk(V), timestamps=pk(ts), cu_seqlens=cu)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))
    print(f"pooled: rel err {rel(fp.float(), f.float()):.2e}")
    assert rel(fp.float(), f.float()) < tol
    G = torch.randn_like(f)
    g = torch.autograd.grad((f.float() * G).sum(), list(enc.parameters()))
    gp = torch.autograd.grad((fp.float() * G).sum(), list(enc.parameters()))
    for (name, _), a, b in zip(enc.named_parameters(), gp, g):
        print(f"d{name}: rel err {rel(a, b):.2e}")
        assert rel(a, b) < tol, name


def test_packed_int64_nanosecond_gaps_exact_and_never_wrapped():
    """Packed int64 times are differenced like the padded path's (halves, one rounding): a gap of
    2^62 + 1 ns and one across a sequence boundary 2^63 apart neither wrap nor lose a nanosecond
    where float64 can hold it."""
    from eventssm.packing import packed_timesteps

    big = 2**62
    t = torch.tensor([[-big, -big + 7, big + 8, 5, 6]], dtype=torch.int64)
    cu = torch.tensor([0, 3, 5])
    gaps = packed_timesteps(t, cu)
    print("packed int64 gaps:", gaps.tolist())
    assert gaps[0, 1].item() == 7.0
    assert gaps[0, 2].item() == float(2 * big + 1)  # > 2^63: would wrap in int64
    assert gaps[0, 3].item() == 0.0 and gaps[0, 4].item() == 1.0


@pytest.mark.parametrize("how", ["mean", "time"])
def test_segment_pool_bf16_accumulates_in_float32(how):
    """bf16 features pooled over long packed sequences keep the padded path's accuracy: the
    segment sums accumulate in float32 (a bf16 ``index_add`` loses about a digit over 2000
    steps), the result comes back in bf16, and τ may arrive in another dtype (autocast)."""
    from eventssm.packing import segment_pool

    torch.manual_seed(0)
    lens = torch.tensor([2000, 3, 1500])
    cu = cu_seqlens_from_lengths(lens)
    h = torch.rand(1, int(lens.sum()), 8, dtype=torch.float64) + 1.0
    tau = torch.rand(1, int(lens.sum()), dtype=torch.float64) * 2
    want = segment_pool(h, how, cu, tau)
    got = segment_pool(h.bfloat16(), how, cu, tau.float())
    err = float(((got.double() - want).abs() / want.abs()).max())
    ulp = 2.0**-8  # bf16's relative rounding bound, for the result alone
    print(f"{how}: bf16 pooled rel err {err:.2e} (rounding the result alone: up to {ulp:.1e})")
    assert got.dtype == torch.bfloat16
    assert err < 1.3 * ulp
