"""selective_scan rejects bad input with a ValueError naming the argument."""

import pytest
import torch

from eventssm import selective_scan
from tests.helpers import scan_inputs


def _kw(**over):
    kw = scan_inputs(b=2, L=5, D=4, N=3, dtype=torch.float32)
    kw.update(over)
    return kw


CASES = {
    "u-rank": (dict(u=torch.randn(5, 4)), "u must have shape"),
    "delta-shape": (dict(delta=torch.randn(2, 5, 3)), "delta must have shape"),
    "z-shape": (dict(z=torch.randn(2, 4, 4)), "z must have shape"),
    "A-shape": (dict(A=torch.randn(3, 3)), "A must have shape"),
    "B-shape": (dict(B=torch.randn(2, 5, 2)), "B must have shape"),
    "C-shape": (dict(C=torch.randn(2, 5, 2)), "C must have shape"),
    "B-rank": (dict(B=torch.randn(2, 5)), "B must have shape"),
    "groups": (dict(B=torch.randn(2, 5, 3, 3), C=torch.randn(2, 5, 3, 3)), "groups"),
    "C-layout": (dict(C=torch.randn(2, 5, 1, 3)), "C must have"),
    "D-shape": (dict(D=torch.randn(3)), "D must have shape"),
    "bias-shape": (dict(delta_bias=torch.randn(5)), "delta_bias must have shape"),
    "rate-shape": (dict(rate=torch.rand(2)), "rate must have shape"),
    "rate-negative": (dict(rate=-torch.rand(4)), "rate must be positive"),
    "tau-shape": (dict(integration_timesteps=torch.rand(2, 4)), "integration_timesteps must have shape"),
    "tau-negative": (dict(integration_timesteps=-torch.ones(2, 5)), r"integration_timesteps must be >= 0"),
    "tau-nan": (dict(integration_timesteps=torch.full((2, 5), float("nan"))), "integration_timesteps must be finite"),
    "tau-inf": (dict(integration_timesteps=torch.full((2, 5), float("inf"))), "integration_timesteps must be finite"),
    "h0-shape": (dict(initial_state=torch.randn(2, 4, 2)), "initial_state must have shape"),
    "int-dtype": (dict(u=torch.ones(2, 5, 4, dtype=torch.long)), "u must be a floating tensor"),
    "not-tensor": (dict(D=[1.0, 2.0, 3.0, 4.0]), "D must be a torch.Tensor"),
    "device": (dict(D=torch.ones(4, device="meta")), "D is on meta"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_raises(case):
    over, match = CASES[case]
    with pytest.raises(ValueError, match=match):
        selective_scan(**_kw(**over), delta_softplus=True, discretization="zoh")


def test_missing_rate_for_asymmetric():
    with pytest.raises(ValueError, match="rate"):
        selective_scan(**_kw(rate=None), discretization="zoh")


def test_cu_seqlens_errors():
    kw = scan_inputs(b=1, L=7, D=4, N=3, dtype=torch.float32, h0=False)
    with pytest.raises(ValueError, match="batch == 1"):
        selective_scan(**_kw(), cu_seqlens=torch.tensor([0, 5], dtype=torch.int32))
    for bad in ([0, 3, 6], [1, 3, 7], [0, 4, 3, 7]):
        with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
            selective_scan(**kw, cu_seqlens=torch.tensor(bad, dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens must be int32 or int64"):
        selective_scan(**kw, cu_seqlens=torch.tensor([0.0, 7.0]))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        selective_scan(**dict(kw, initial_state=torch.zeros(1, 4, 3)),
                       cu_seqlens=torch.tensor([0, 3, 7], dtype=torch.int32))


def test_backend_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_scan(**_kw(), backend="cuda")
    with pytest.raises(ValueError, match='backend="triton"'):
        selective_scan(**_kw(), backend="triton")  # CPU tensors, interpreter off


def test_discretization_errors():
    with pytest.raises(ValueError, match="discretization"):
        selective_scan(**_kw(), discretization="euler")


def test_backends_agree_on_cpu():
    kw = _kw()
    ys = [selective_scan(**kw, delta_softplus=True, discretization="zoh", backend=b)
          for b in ("auto", "torch", "reference")]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], rtol=1e-4, atol=1e-5)
