"""MambaLM, EventEncoder, pooling."""

import pytest
import torch

import eventssm.time as time_mod
from eventssm import Asymmetric, EventEncoder, MambaLM, Scaled, SelectiveSSM, pool
from tests.helpers import count_calls, count_device_reads, rel_err, spy_value_checks


def test_lm_forward_generate_and_step_consistency():
    lm = MambaLM(50, 16, d_state=4, n_layers=2, use_fast_path=False).double().eval()
    ids = torch.randint(0, 50, (2, 9))
    logits = lm(ids)
    assert logits.shape == (2, 9, 50)
    assert torch.equal(lm(ids[0]), logits[0]) or rel_err(lm(ids[0]), logits[0]) < 1e-12  # unbatched
    cache = lm.allocate_inference_cache(2, 9, dtype=torch.float64)
    steps = torch.stack([lm.step(ids[:, l], cache) for l in range(9)], 1)
    assert rel_err(steps, logits) < 1e-10
    g = torch.Generator().manual_seed(0)
    out = lm.generate(ids[:, :3], 6, temperature=0.8, top_k=5, generator=g)
    assert out.shape == (2, 9) and torch.equal(out[:, :3], ids[:, :3])
    greedy = lm.generate(ids[:, :3], 4, temperature=0)
    # greedy continuation is the argmax of the full forward at every position
    full = lm(greedy)
    assert torch.equal(full[:, 2:-1].argmax(-1), greedy[:, 3:])
    assert lm.lm_head.weight is lm.backbone.embedding.weight


def test_lm_errors():
    lm = MambaLM(10, 8, n_layers=1)
    with pytest.raises(ValueError, match="input_ids must lie in"):
        lm(torch.tensor([[3, 10]]))
    with pytest.raises(ValueError, match="input_ids must lie in"):
        lm(torch.tensor([[-1, 3]]))
    ids = torch.tensor([[3, 9, 0]])
    err = rel_err(lm(ids, check_values=False), lm(ids))
    print("MambaLM check_values=False vs True:", err)
    assert err == 0.0
    with pytest.raises(ValueError, match="input_ids must be an integer"):
        lm(torch.rand(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(torch.tensor([[1]]), 2, temperature=-1)
    with pytest.raises(ValueError, match="vocab_size"):
        MambaLM(0, 8)


@pytest.mark.parametrize("pooling", ["last", "mean", "time"])
@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Scaled("bilinear"), "mamba"], ids=str)
def test_event_encoder_padding_inert_end_to_end(pooling, disc):
    enc = EventEncoder(d_model=16, n_layers=2, d_input=3, num_marks=4, d_state=4, discretization=disc,
                       pooling=pooling, use_observed=True, use_fast_path=False).double().eval()
    lens = [4, 8, 1]
    Bsz, L = 3, 8
    vals = torch.randn(Bsz, L, 3, dtype=torch.float64)
    obs = torch.rand(Bsz, L, 3) > 0.3
    marks = torch.randint(0, 4, (Bsz, L))
    ts = torch.cumsum(torch.rand(Bsz, L, dtype=torch.float64) * 2, 1)
    batched = enc(vals, marks, timestamps=ts, lengths=torch.tensor(lens), observed=obs)
    feats = enc.encode(vals, marks, timestamps=ts, lengths=torch.tensor(lens), observed=obs)
    assert feats.shape == (Bsz, L, 16) and (feats[0, 4:] == 0).all()
    for i, n in enumerate(lens):
        alone = enc(vals[i, :n], marks[i, :n], timestamps=ts[i, :n], observed=obs[i, :n])
        err = rel_err(batched[i], alone)
        print(pooling, disc, i, err)
        assert err < 1e-10


def test_event_encoder_uses_time():
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, discretization=Asymmetric("zoh"), use_fast_path=False)
    v = torch.randn(1, 6, 2)
    a = enc(v, timestamps=torch.arange(6.0)[None])
    b = enc(v, timestamps=(torch.arange(6.0) * 10)[None])
    assert rel_err(a, b) > 1e-4


def test_event_encoder_errors():
    with pytest.raises(ValueError, match="d_input"):
        EventEncoder(d_input=0, num_marks=0)
    with pytest.raises(ValueError, match="pooling"):
        EventEncoder(d_input=2, pooling="max")
    enc = EventEncoder(d_model=8, n_layers=1, d_input=2, num_marks=3)
    with pytest.raises(ValueError, match="values must have shape"):
        enc(torch.randn(1, 4, 3), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="marks must lie in"):
        enc(torch.randn(1, 4, 2), torch.full((1, 4), 3))
    with pytest.raises(ValueError, match="marks .* are required"):
        enc(torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match="timestamps must be non-decreasing"):
        enc(torch.randn(1, 3, 2), torch.zeros(1, 3, dtype=torch.long), timestamps=torch.tensor([[0.0, 2.0, 1.0]]))


def test_pool_time_weights():
    h = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    mask = torch.tensor([[True, True, True, False]])
    tau = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    # weights (τ[l] + τ[l+1]) / 2 over real steps: 0.5, 2, 1.5 -> normalised by 4
    expected = (0.5 * 1 + 2 * 2 + 1.5 * 4) / 4
    assert abs(pool(h, "time", mask, tau).item() - expected) < 1e-6
    assert pool(h, "last", mask).item() == 4.0
    assert abs(pool(h, "mean", mask).item() - 7 / 3) < 1e-6
    # all gaps zero -> uniform
    assert abs(pool(h, "time", mask, torch.zeros(1, 4)).item() - 7 / 3) < 1e-6


def test_selective_ssm_standalone():
    ssm = SelectiveSSM(12, d_state=4, discretization=Asymmetric("zoh"), use_fast_path=False)
    y = ssm(torch.randn(2, 5, 12), torch.rand(2, 5))
    assert y.shape == (2, 5, 12)


def test_backbone_checks_values_once(monkeypatch):
    """τ and lengths go unchanged to every layer: the backbone gathers their value checks once,
    at its door, and runs them there (one host sync for both), the layers and their scans check
    nothing; bad values still raise, and check_values=False skips the checks without changing
    the outputs."""
    import eventssm.scan as scan_mod
    from eventssm import MambaBackbone

    torch.manual_seed(0)
    m = MambaBackbone(16, n_layers=3, d_state=4, discretization=Asymmetric("zoh")).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    tau = torch.rand(2, 9, dtype=torch.float64)
    lengths = torch.tensor([9, 5])
    scans = count_calls(monkeypatch, scan_mod, "_validate")
    seen = spy_value_checks(monkeypatch)
    y = m(x, tau, lengths)
    print("value checks for 3 layers:", seen)
    assert seen == {"added": ["lengths", "integration_timesteps"],
                    "runs": [["lengths", "integration_timesteps"]]}
    assert scans == []
    y_unchecked = m(x, tau, lengths, check_values=False)
    assert seen["runs"] == [["lengths", "integration_timesteps"]]  # gathered again, not run
    err = rel_err(y_unchecked, y)
    print("check_values=False vs True:", err)
    assert err == 0.0
    with pytest.raises(ValueError, match="integration_timesteps"):
        m(x, -tau, lengths)
    with pytest.raises(ValueError, match="lengths"):
        m(x, tau, torch.tensor([9, 12]))
    # gaps from timestamps: formed and checked once (lengths with them), not again in the layers
    seen["runs"].clear()
    ts = tau.cumsum(1)
    y_ts = m(x, lengths=lengths, timestamps=ts)
    print("value checks with timestamps:", seen["runs"])
    assert seen["runs"] == [["lengths", "timestamps"]]  # a float64 model keeps float64 gaps
    assert scans == []
    assert torch.isfinite(y_ts).all()
    with pytest.raises(ValueError, match="timestamps"):
        m(x, lengths=lengths, timestamps=ts.flip(1))
    assert time_mod.real_mask(torch.tensor([3, 0]), 4).sum() == 3


@pytest.mark.parametrize("model", ["backbone", "encoder", "lm"])
def test_one_host_sync_per_checked_call(model, monkeypatch):
    """Count what reads values back from the device during a forward of a 3-layer model: one
    read for all the checked inputs (τ, lengths, marks or token ids) together, none in the
    layers, and none at all with check_values=False (what a CUDA-graph-captured step needs)."""
    from eventssm import MambaBackbone

    torch.manual_seed(0)
    B, L = 2, 9
    lengths = torch.tensor([9, 5])
    tau = torch.rand(B, L)
    if model == "backbone":
        m = MambaBackbone(16, n_layers=3, d_state=4, discretization=Asymmetric("zoh"))
        call = lambda **kw: m(torch.randn(B, L, 16), tau, lengths, **kw)
        expected = 1  # τ and lengths, flagged together
    elif model == "encoder":
        m = EventEncoder(d_model=16, n_layers=3, d_input=2, num_marks=3, d_state=4,
                         discretization=Asymmetric("zoh"))
        marks = torch.randint(0, 3, (B, L))
        call = lambda **kw: m(torch.randn(B, L, 2), marks, integration_timesteps=tau,
                              lengths=lengths, **kw)
        expected = 1  # marks, values, lengths and τ, flagged together
    else:
        m = MambaLM(20, 16, d_state=4, n_layers=3, discretization=Asymmetric("zoh"))
        ids = torch.randint(0, 20, (B, L))
        call = lambda **kw: m(ids, tau, lengths=lengths, **kw)
        expected = 1  # ids, lengths and τ, flagged together
    reads = count_device_reads(monkeypatch)
    call().sum().backward()
    print(model, "reads with checks:", reads)
    assert len(reads) == expected
    reads.clear()
    call(check_values=False).sum().backward()
    print(model, "reads without checks:", reads)
    assert reads == []


def test_event_encoder_check_values_flag():
    torch.manual_seed(0)
    enc = EventEncoder(d_model=16, n_layers=2, d_input=2, num_marks=3,
                       discretization=Asymmetric("zoh")).double()
    vals = torch.randn(2, 7, 2, dtype=torch.float64)
    marks = torch.randint(0, 3, (2, 7))
    ts = torch.rand(2, 7, dtype=torch.float64).cumsum(1)
    a = enc(vals, marks, timestamps=ts, lengths=torch.tensor([7, 4]))
    b = enc(vals, marks, timestamps=ts, lengths=torch.tensor([7, 4]), check_values=False)
    err = rel_err(b, a)
    print("EventEncoder check_values=False vs True:", err)
    assert err == 0.0
    with pytest.raises(ValueError, match="marks"):
        enc(vals, marks + 3, timestamps=ts)


def test_backbone_chunked_with_timestamps_matches_one_pass():
    """Gaps are formed once for the stack, the first chunk's last time carried by the caches:
    two chunks equal one pass, and each cache holds the last time."""
    from eventssm import MambaBackbone

    m = MambaBackbone(16, n_layers=2, d_state=4, discretization=Asymmetric("zoh")).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    t = torch.cumsum(torch.rand(2, 10, dtype=torch.float64) * 3, 1) + 50.0
    y = m(x, timestamps=t)
    cache = m.allocate_inference_cache(2, dtype=torch.float64)
    y1 = m(x[:, :4], timestamps=t[:, :4], inference_cache=cache)
    y2 = m(x[:, 4:], timestamps=t[:, 4:], inference_cache=cache)
    err = rel_err(torch.cat([y1, y2], 1), y)
    print("backbone in two chunks vs one pass:", err)
    assert err < 1e-10
    assert all(torch.equal(c.last_time, t[:, -1]) and c.seqlen_offset == 10 for c in cache)
