"""Mamba block: step == forward, prefill, chunked processing, padding, timestamps, errors."""

import pytest
import torch

from eventssm import Asymmetric, Mamba, Standard, selective_scan
from tests.helpers import ALL_DISCRETIZATIONS, DISC_IDS, rel_err, scan_inputs


def _mamba(disc, d_model=8, **kw):
    # Large steps (dt in [0.5, 2]) so that the discretization formulas really differ.
    return Mamba(d_model, d_state=4, d_conv=3, discretization=disc, dt_min=0.5, dt_max=2.0,
                 use_fast_path=False, **kw).double()


def _cache(m, b):
    return m.allocate_inference_cache(b, 16, dtype=torch.float64)


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_step_equals_forward(disc):
    m = _mamba(disc)
    x = torch.randn(3, 11, 8, dtype=torch.float64)
    tau = torch.rand(3, 11, dtype=torch.float64) * 5
    y = m(x, integration_timesteps=tau)
    cache = _cache(m, 3)
    ys = [m.step(x[:, l:l + 1], cache, tau[:, l])[0] for l in range(11)]
    err = rel_err(torch.cat(ys, 1), y)
    print(disc, "step vs forward", err)
    assert err < 1e-10
    # prefill 6 steps through forward, then step the rest
    cache = _cache(m, 3)
    y_pre = m(x[:, :6], tau[:, :6], inference_cache=cache)
    ys = [m.step(x[:, l:l + 1], cache, tau[:, l])[0] for l in range(6, 11)]
    err = rel_err(torch.cat([y_pre, *ys], 1), y)
    print(disc, "prefill+step vs forward", err)
    assert err < 1e-10 and cache.seqlen_offset == 11


@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Standard("bilinear")], ids=str)
def test_chunked_forward_with_timestamps_matches_one_pass(disc):
    m = _mamba(disc)
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    t = torch.cumsum(torch.rand(2, 10, dtype=torch.float64) * 3, 1) + 100.0
    y = m(x, timestamps=t)
    cache = _cache(m, 2)
    y1 = m(x[:, :4], inference_cache=cache, timestamps=t[:, :4])
    y2 = m(x[:, 4:7], inference_cache=cache, timestamps=t[:, 4:7])
    ys = [m.step(x[:, l:l + 1], cache, timestamps=t[:, l])[0] for l in range(7, 10)]
    err = rel_err(torch.cat([y1, y2, *ys], 1), y)
    print("chunked with timestamps", err)
    assert err < 1e-10


def test_timestamps_equal_gaps_and_int_times():
    m = _mamba("zoh")
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    t = torch.cumsum(torch.randint(0, 5, (2, 7)), 1)
    tau = torch.diff(t.double(), dim=1, prepend=t[:, :1].double())
    torch.testing.assert_close(m(x, timestamps=t), m(x, integration_timesteps=tau))
    # the gaps matter: shuffling them changes the output
    assert rel_err(m(x, integration_timesteps=tau.flip(1)), m(x, integration_timesteps=tau)) > 1e-3


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_padding_is_inert(disc):
    m = _mamba(disc)
    L = [5, 9, 2]
    xs = [torch.randn(n, 8, dtype=torch.float64) for n in L]
    ts = [torch.cumsum(torch.rand(n, dtype=torch.float64) * 4, 0) for n in L]
    X = torch.zeros(3, 9, 8, dtype=torch.float64)
    T = torch.zeros(3, 9, dtype=torch.float64)
    for i, (x, t) in enumerate(zip(xs, ts)):
        X[i, :L[i]] = x
        X[i, L[i]:] = torch.randn(9 - L[i], 8, dtype=torch.float64) * 100  # garbage in padding
        T[i, :L[i]] = t
        T[i, L[i]:] = -1e6  # even decreasing garbage times in padding are ignored
    cache = _cache(m, 3)
    Y = m(X, lengths=torch.tensor(L), timestamps=T, inference_cache=cache)
    for i in range(3):
        c1 = _cache(m, 1)
        y_alone = m(xs[i][None], timestamps=ts[i][None], inference_cache=c1)[0]
        e = rel_err(Y[i, :L[i]], y_alone)
        es = rel_err(cache.ssm_state[i], c1.ssm_state[0])
        ec = rel_err(cache.conv_state[i], c1.conv_state[0])
        print(disc, i, e, es, ec)
        assert e < 1e-10 and es < 1e-10 and ec < 1e-10
        assert (Y[i, L[i]:] == 0).all()
        assert cache.last_time[i] == ts[i][-1]


def test_unbatched_input():
    m = _mamba(Asymmetric("zoh"))
    x = torch.randn(6, 8, dtype=torch.float64)
    tau = torch.rand(6, dtype=torch.float64)
    torch.testing.assert_close(m(x, tau), m(x[None], tau[None])[0])


def test_rate_parameter_only_when_needed():
    assert Mamba(8, discretization=Standard("zoh")).rho is None
    m = Mamba(8, discretization="zoh")  # lrnnx string: asymmetric coupling
    assert m.rho.shape == (16,) and isinstance(m.discretization, Asymmetric)
    names = dict(m.named_parameters())
    for n in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
              "dt_proj.bias", "A_log", "D", "out_proj.weight", "rho"):
        assert n in names, n


def test_every_parameter_gets_a_gradient_in_event_mode():
    m = Mamba(8, discretization=Asymmetric("zoh"), use_fast_path=False)
    m(torch.randn(2, 5, 8), integration_timesteps=torch.rand(2, 5)).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_mamba_errors():
    m = _mamba("zoh")
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="hidden_states must have shape"):
        m(torch.randn(2, 5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="not both"):
        m(x, torch.rand(2, 5), timestamps=torch.rand(2, 5))
    with pytest.raises(ValueError, match="timestamps must be non-decreasing"):
        m(x, timestamps=torch.tensor([[0.0, 1, 2, 1, 3]] * 2))
    with pytest.raises(ValueError, match="timestamps must have shape"):
        m(x, timestamps=torch.rand(2, 4))
    with pytest.raises(ValueError, match="integration_timesteps must be >= 0"):
        m(x, -torch.ones(2, 5))
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="d_model"):
        Mamba(0)
    with pytest.raises(ValueError, match="dt_min"):
        Mamba(4, dt_min=0.2, dt_max=0.1)
    c = _cache(m, 2)
    with pytest.raises(ValueError, match="one step"):
        m.step(torch.randn(2, 3, 8, dtype=torch.float64), c)


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS[::2], ids=DISC_IDS[::2])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_cu_seqlens_packing_equals_each_alone(disc, backend):
    lens = [3, 7, 1, 5]
    kws = [scan_inputs(b=1, L=n, D=4, N=3, G=2) for n in lens]
    packed = {k: (torch.cat([kw[k] for kw in kws], 1) if k in ("u", "delta", "B", "C", "z", "integration_timesteps")
                  else torch.cat([kw[k] for kw in kws], 0) if k == "initial_state" else kws[0][k])
              for k in kws[0]}
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    y, h = selective_scan(**packed, delta_softplus=True, discretization=disc, cu_seqlens=cu,
                          return_last_state=True, backend=backend)
    for i, kw in enumerate(kws):
        kw = dict(kw, A=packed["A"], D=packed["D"], delta_bias=packed["delta_bias"], rate=packed["rate"])
        yi, hi = selective_scan(**kw, delta_softplus=True, discretization=disc, return_last_state=True,
                                backend="reference")
        assert rel_err(y[:, cu[i]:cu[i + 1]], yi) < 1e-10 and rel_err(h[i], hi[0]) < 1e-10


def test_rate_gets_zero_gradient_without_timesteps():
    """A string-built (asymmetric) Mamba trained without timesteps has no unused parameters."""
    m = Mamba(8, discretization="zoh", use_fast_path=False)
    m(torch.randn(2, 5, 8)).square().sum().backward()
    assert m.rho.grad is not None and (m.rho.grad == 0).all()


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS[::3], ids=DISC_IDS[::3])
def test_padding_is_inert_in_training(disc):
    """Without a cache the block masks nothing before the scan (padded steps only follow the
    real ones): outputs at real steps and every parameter gradient equal the sum over the
    sequences alone, with garbage in the padding."""
    m = _mamba(disc)
    lens = [6, 2, 4]
    X = torch.randn(3, 6, 8, dtype=torch.float64)
    T = torch.rand(3, 6, dtype=torch.float64) * 3
    for i, n in enumerate(lens):
        X[i, n:] = 50 * torch.randn(6 - n, 8, dtype=torch.float64)
        T[i, n:] = 1e3
    Y = m(X, T, torch.tensor(lens))
    G = torch.randn_like(Y)
    grads = torch.autograd.grad((Y * G).sum(), list(m.parameters()))
    alone = [torch.zeros_like(p) for p in m.parameters()]
    for i, n in enumerate(lens):
        y = m(X[i:i + 1, :n], T[i:i + 1, :n])
        assert rel_err(Y[i, :n], y[0]) < 1e-10 and (Y[i, n:] == 0).all()
        for a, g in zip(alone, torch.autograd.grad((y * G[i:i + 1, :n]).sum(), list(m.parameters()))):
            a += g
    errs = [rel_err(g, a) for g, a in zip(grads, alone)]
    print(disc, max(errs))
    assert max(errs) < 1e-10
