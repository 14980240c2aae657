"""A decoding step with event times is captured in a CUDA graph and replays the eager step's
numbers (issue: a host sync inside ``step`` invalidated the capture)."""

import pytest
import torch

from eventssm import Mamba, MambaLM

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_step_without_value_checks_reads_nothing_back(monkeypatch):
    """On any device: with check_values=False a step reads no value back to the host (what a
    capture forbids); with the default checks it does."""
    m = Mamba(8, d_state=4, discretization="zoh")
    cache = m.allocate_inference_cache(2)
    reads = []
    real = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: reads.append(1) or real(self))
    m.step(torch.randn(2, 1, 8), cache, torch.rand(2), check_values=False)
    assert reads == []
    m.step(torch.randn(2, 1, 8), cache, torch.rand(2))
    assert reads


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["mamba", "zoh", "bilinear"])
@pytest.mark.parametrize("batch", [1, 64])
def test_event_mode_step_captures_in_a_cuda_graph(scheme, batch):
    torch.manual_seed(0)
    dev = "cuda"
    m = Mamba(256, d_state=16, discretization=scheme, device=dev)
    x = torch.randn(batch, 1, 256, device=dev)
    tau = torch.rand(batch, device=dev)
    eager_cache = m.allocate_inference_cache(batch)
    graph_cache = m.allocate_inference_cache(batch)
    with torch.no_grad():
        for _ in range(3):  # warm up (compiles the kernels) on a side stream, as capture needs
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                m.step(x, m.allocate_inference_cache(batch), tau, check_values=False)
            torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out, _ = m.step(x, graph_cache, tau, check_values=False)
        graph_cache.conv_state.zero_()
        graph_cache.ssm_state.zero_()
        errs = []
        for _ in range(5):
            x.copy_(torch.randn_like(x))
            tau.copy_(torch.rand_like(tau) * 3)
            ref, _ = m.step(x, eager_cache, tau)
            g.replay()
            errs.append(((out - ref).abs().max() / ref.abs().max()).item())
    print(scheme, batch, "replay vs eager rel err:", errs)
    assert max(errs) < 1e-5


@cuda
@pytest.mark.gpu
def test_lm_event_step_captures_in_a_cuda_graph():
    torch.manual_seed(0)
    lm = MambaLM(50, 64, d_state=8, n_layers=2, discretization="zoh").cuda().eval()
    tok = torch.randint(0, 50, (4,), device="cuda")
    tau = torch.rand(4, device="cuda")
    cache = lm.allocate_inference_cache(4)
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            lm.step(tok, lm.allocate_inference_cache(4), tau, check_values=False)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            logits = lm.step(tok, cache, tau, check_values=False)
        g.replay()
    assert torch.isfinite(logits).all()
