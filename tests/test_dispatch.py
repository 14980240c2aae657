"""eventssm.dispatch: one place picks the backend of the scan, the conv and the decoding step,
and Mamba's forward and step both run on the backend it picks."""

import dataclasses

import pytest
import torch

import eventssm.dispatch as dispatch
import eventssm.mamba as mamba_mod
from eventssm import Asymmetric, Mamba
from eventssm.chunked import selective_scan_chunked
from eventssm.conv import causal_conv1d, causal_conv1d_update
from eventssm.reference import selective_scan_ref, selective_state_update_ref
from tests.helpers import rel_err

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_resolve_backend(monkeypatch, no_interpreter):
    assert dispatch.resolve_backend("auto", CPU) == "torch"
    assert dispatch.resolve_backend("torch", CPU) == "torch"
    assert dispatch.resolve_backend("reference", CPU) == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.resolve_backend("cuda", CPU)
    # "auto" on a CUDA device: Triton when the kernels import, else the torch path with a warning
    monkeypatch.setattr(dispatch, "triton_available", lambda: (True, ""))
    assert dispatch.resolve_backend("auto", CUDA) == "triton"
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        dispatch.resolve_backend("triton", CPU)
    monkeypatch.setattr(dispatch, "triton_available", lambda: (False, "no triton here"))
    dispatch._warn_no_triton.cache_clear()
    with pytest.warns(UserWarning, match="no triton here"):
        assert dispatch.resolve_backend("auto", CUDA) == "torch"
    with pytest.raises(ValueError, match="no triton here"):
        dispatch.resolve_backend("triton", CUDA)


def test_paths_of_the_cpu_backends():
    torch_path = dispatch.path("auto", CPU)
    # the chunked scan behind torch.compiler.disable (tests/test_compile.py says why)
    assert torch_path.scan.__wrapped__ is selective_scan_chunked
    # no fused block (None): the CPU paths run the pieces, each its own autograd node
    assert dataclasses.astuple(torch_path) == (
        "torch", torch_path.scan, causal_conv1d, causal_conv1d_update,
        selective_state_update_ref, None)
    ref = dispatch.path("reference", CPU)
    assert dataclasses.astuple(ref) == (
        "reference", selective_scan_ref, causal_conv1d, causal_conv1d_update,
        selective_state_update_ref, None)


def _spy(monkeypatch):
    """Record, for every Mamba call, the backend asked for and which of its functions ran."""
    calls = []
    real = dispatch.path

    def path(backend, device):
        p = real(backend, device)

        def rec(kind, fn):
            def run(*a, **k):
                calls.append((backend, p.name, kind))
                return fn(*a, **k)
            return run

        return dataclasses.replace(p, scan=rec("scan", p.scan), conv=rec("conv", p.conv),
                                   conv_step=rec("conv_step", p.conv_step),
                                   step=rec("step", p.step))

    monkeypatch.setattr(mamba_mod, "path", path)
    return calls


@pytest.mark.parametrize("kw,expected", [({}, ("auto", "torch")),
                                         ({"use_fast_path": False}, ("torch", "torch")),
                                         ({"backend": "reference"}, ("reference", "reference")),
                                         ({"use_fast_path": False, "backend": "auto"}, ("auto", "torch"))],
                         ids=["default", "no-fast-path", "reference", "backend-overrides"])
def test_forward_and_step_honour_the_backend(kw, expected, monkeypatch):
    calls = _spy(monkeypatch)
    m = Mamba(8, d_state=4, discretization=Asymmetric("zoh"), **kw)
    x, tau = torch.randn(2, 5, 8), torch.rand(2, 5)
    cache = m.allocate_inference_cache(2)
    m(x, tau, inference_cache=cache)
    m.step(x[:, :1], cache, tau[:, 0])
    print(calls)
    assert calls == [(*expected, "conv"), (*expected, "scan"), (*expected, "conv_step"),
                     (*expected, "step")]


def test_step_with_triton_backend_needs_cuda(no_interpreter):
    """A step whose backend cannot run on its tensors raises instead of falling back silently."""
    m = Mamba(8, d_state=4, backend="triton")
    cache = m.allocate_inference_cache(2)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        m.step(torch.randn(2, 1, 8), cache)
    with pytest.raises(ValueError, match="backend must be one of"):
        Mamba(8, backend="cuda")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_backends_agree_in_forward_and_step(backend):
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, d_conv=3, discretization=Asymmetric("bilinear"), dt_min=0.5,
              dt_max=2.0, backend=backend).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    tau = torch.rand(2, 7, dtype=torch.float64) * 3
    y = m(x, tau)
    m.backend = "reference"
    y_ref = m(x, tau)
    m.backend = backend
    cache = m.allocate_inference_cache(2, dtype=torch.float64)
    ys = torch.cat([m.step(x[:, l:l + 1], cache, tau[:, l])[0] for l in range(7)], 1)
    print(backend, rel_err(y, y_ref), rel_err(ys, y_ref))
    assert rel_err(y, y_ref) < 1e-10 and rel_err(ys, y_ref) < 1e-10


@pytest.mark.interpret
def test_triton_backend_forward_and_step_under_the_interpreter():
    """backend="triton" on CPU tensors (TRITON_INTERPRET=1): forward and step run the Triton
    scan and decode kernels and agree with the torch path (skipped without the variable:
    tests/conftest.py)."""
    pytest.importorskip("triton")
    calls = []
    real = dispatch.path
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, d_conv=3, discretization=Asymmetric("zoh"), dt_min=0.5, dt_max=2.0,
              backend="triton")
    x, tau = torch.randn(2, 6, 8), torch.rand(2, 6) * 3
    try:
        mamba_mod.path = lambda b, d: calls.append(real(b, d).name) or real(b, d)
        y = m(x, tau)
        cache = m.allocate_inference_cache(2)
        ys = torch.cat([m.step(x[:, l:l + 1], cache, tau[:, l])[0] for l in range(6)], 1)
    finally:
        mamba_mod.path = real
    m.backend = "torch"
    y_torch = m(x, tau)
    print(calls, rel_err(y, y_torch), rel_err(ys, y_torch))
    assert set(calls) == {"triton"}
    assert rel_err(y, y_torch) < 1e-4 and rel_err(ys, y_torch) < 1e-4
