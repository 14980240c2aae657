"""The Triton scan on a packed batch without autograd (validation, inference): the forward
kernel reads each sequence's chunk offsets even when no chunk state is saved, so they must be
passed then too. Found by the panel on a GPU (packed validation batches)."""

import pytest
import torch

from eventssm import Asymmetric, selective_scan
from tests.helpers import DEVICES, rel_err

pytest.importorskip("triton")


def _check(device: str, L: int):
    torch.manual_seed(0)
    lengths = [5, 1, L - 6]
    T, D, N = sum(lengths), 8, 4
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    u, delta = torch.randn(1, T, D, device=device), torch.randn(1, T, D, device=device)
    B, C = torch.randn(1, T, N, device=device), torch.randn(1, T, N, device=device)
    A = -torch.rand(D, N, device=device) - 0.5
    tau = torch.rand(1, T, device=device)
    kw = dict(delta_softplus=True, integration_timesteps=tau, rate=torch.rand(D, device=device) + 0.5,
              discretization=Asymmetric("zoh"), cu_seqlens=cu)
    with torch.no_grad():
        y = selective_scan(u, delta, A, B, C, backend="triton", **kw)
    ref = selective_scan(u.double(), delta.double(), A.double(), B.double(), C.double(), backend="reference",
                         **{**kw, "integration_timesteps": tau.double(), "rate": kw["rate"].double()})
    err = rel_err(y, ref)
    print(device, "packed no-grad forward vs float64:", err)
    assert err < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_packed_forward_without_grad(device):
    _check(device, {"cpu": 24, "cuda": 300}[device])  # per device (tests/helpers.py): the length L
