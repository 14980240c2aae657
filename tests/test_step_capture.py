"""A decoding step with event times is captured in a CUDA graph and replays the eager step's
numbers (a host sync inside ``step`` would invalidate the capture). The capture tests are
``gpu``-marked: tests/conftest.py skips them without CUDA."""

import pytest
import torch

from eventssm import Mamba, MambaLM
from tests.helpers import count_device_reads, load_script

# the benchmark's capture: warm-up on a side stream, then one capture
_capture = load_script("experiments/bench/stream.py").capture


def test_step_without_value_checks_reads_nothing_back(monkeypatch):
    """On any device: with check_values=False a step reads no value back to the host (what a
    capture forbids); with the default checks it does."""
    m = Mamba(8, d_state=4, discretization="zoh")
    cache = m.allocate_inference_cache(2)
    reads = count_device_reads(monkeypatch)
    m.step(torch.randn(2, 1, 8), cache, torch.rand(2), check_values=False)
    assert reads == []
    m.step(torch.randn(2, 1, 8), cache, torch.rand(2))
    assert reads


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["mamba", "zoh", "bilinear"])
@pytest.mark.parametrize("batch", [1, 64])
def test_event_mode_step_captures_in_a_cuda_graph(scheme, batch):
    torch.manual_seed(0)
    m = Mamba(256, d_state=16, discretization=scheme, device="cuda")
    x = torch.randn(batch, 1, 256, device="cuda")
    tau = torch.rand(batch, device="cuda")
    eager_cache = m.allocate_inference_cache(batch)
    graph_cache = m.allocate_inference_cache(batch)
    outs = []
    with torch.no_grad():
        # the warm-up step runs on the graph's cache: start it from zero again afterwards
        g = _capture(lambda: outs.append(m.step(x, graph_cache, tau, check_values=False)[0]))
        out = outs[-1]
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


@pytest.mark.gpu
def test_lm_event_step_captures_in_a_cuda_graph():
    torch.manual_seed(0)
    lm = MambaLM(50, 64, d_state=8, n_layers=2, discretization="zoh").cuda().eval()
    tok = torch.randint(0, 50, (4,), device="cuda")
    tau = torch.rand(4, device="cuda")
    cache = lm.allocate_inference_cache(4)
    outs = []
    with torch.no_grad():
        g = _capture(lambda: outs.append(lm.step(tok, cache, tau, check_values=False)))
        g.replay()
    assert torch.isfinite(outs[-1]).all()
