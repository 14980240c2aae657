"""The bilinear scheme's gradients at large τ·|A| (issue 15, numerics).

Through the quotient (1 + x/2)/(1 − x/2) and dtB/(1 − dtB·A/2), autograd sums two terms that
nearly cancel when |x| is large, so the float32 gradients with respect to τ, the rate, A and Δ
lost ~|x|·eps of their digits (1e-4 at |x| = 1e4, percents beyond). The schemes now give
autograd closed forms (dĀ/dx = 1/(1 − x/2)², ∂k/∂dtB = 1/(1 − dtB·A/2)², ∂k/∂A = k²/2), as the
Triton backward already did. Each case compares float32 gradients of the public op with the
float64 reference's, one τ·|A| decade at a time; the error is printed before the assert: the
torch paths on the CPU, and the Triton backward (closed forms in eventssm/kernels/utils.py
``discretize_grad``) on both kernel devices (tests/helpers.py), tiny sizes.
"""

from __future__ import annotations

import pytest
import torch

from eventssm import Additive, Asymmetric, Scaled, selective_scan
from eventssm.discretization import discretize_A, discretize_B
from tests.helpers import DEVICES, load_kernels, rel_err

XS = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4]
GRADS = ("u", "delta", "A", "B", "C", "integration_timesteps", "rate")


def _inputs(x: float, coupling, dtype=torch.float64, L=4, D=3, N=2, seed=0, device="cpu"):
    """Scan inputs whose decay products dtA·|A| lie within a factor 4 of ``x``."""
    g = torch.Generator().manual_seed(seed)
    A = -torch.tensor([[1.0, 2.0]] * D, dtype=torch.float64)[:, :N]
    rate = torch.linspace(0.5, 1.0, D, dtype=torch.float64)
    delta = torch.rand(1, L, D, generator=g, dtype=torch.float64) + 0.5  # dtB = Δ (no softplus)
    tau = torch.full((1, L), x, dtype=torch.float64)
    if coupling is Scaled:  # dtA = Δ·τ
        tau = tau / delta.mean()
    kw = dict(u=torch.randn(1, L, D, generator=g, dtype=torch.float64), delta=delta, A=A,
              B=torch.randn(1, L, N, generator=g, dtype=torch.float64),
              C=torch.randn(1, L, N, generator=g, dtype=torch.float64),
              integration_timesteps=tau, rate=rate)
    return {k: v.to(dtype).to(device).requires_grad_(True) for k, v in kw.items()}


def _grads(kw, disc, backend):
    y, h = selective_scan(**kw, discretization=disc, return_last_state=True, backend=backend)
    # weights make every output and state element count with a different sign and size
    wy = torch.linspace(-1, 2, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)
    wh = torch.linspace(1, -2, h.numel(), dtype=h.dtype, device=h.device).reshape(h.shape)
    loss = (y * wy).sum() + (h * wh).sum()
    keys = [k for k in GRADS if kw[k].requires_grad]
    return dict(zip(keys, torch.autograd.grad(loss, [kw[k] for k in keys], allow_unused=True)))


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("coupling", [Asymmetric, Scaled, Additive], ids=lambda c: c.__name__)
def test_bilinear_gradients_match_float64_across_tau_A(coupling, backend):
    disc = coupling("bilinear")
    worst = {}
    for x in XS:
        ref = _grads(_inputs(x, coupling), disc, "reference")
        got = _grads(_inputs(x, coupling, torch.float32), disc, backend)
        for k, g in ref.items():
            if g is None or float(g.abs().max()) == 0:
                continue
            e = rel_err(got[k], g)
            worst[k] = max(worst.get(k, (0.0, x)), (e, x))
    print(f"\n{coupling.__name__} {backend}: worst relative error (error, τ·|A|) per gradient:",
          {k: (f"{e:.1e}", x) for k, (e, x) in worst.items()})
    for k, (e, x) in worst.items():
        assert e < 1e-4, (k, x, e)


@pytest.mark.parametrize("coupling", [Asymmetric, Scaled, Additive], ids=lambda c: c.__name__)
@pytest.mark.parametrize("device", DEVICES)
def test_triton_bilinear_gradients_match_float64_across_tau_A(device, coupling):
    """The Triton backward's bilinear gradients (dĀ/dx = 1/(1 − x/2)², ∂k/∂dtB = 1/(1 − dtB·A/2)²,
    ∂k/∂A = k²/2) in float32 against the float64 reference, as above."""
    pytest.importorskip("triton")
    load_kernels()
    disc = coupling("bilinear")
    worst = {}
    for x in XS:
        ref = _grads(_inputs(x, coupling), disc, "reference")
        got = _grads(_inputs(x, coupling, torch.float32, device=device), disc, "triton")
        for k, g in ref.items():
            if g is None or float(g.abs().max()) == 0:
                continue
            worst[k] = max(worst.get(k, (0.0, x)), (rel_err(got[k].cpu(), g), x))
    print(f"\n{coupling.__name__} triton on {device}: worst relative error (error, τ·|A|):",
          {k: (f"{e:.1e}", x) for k, (e, x) in worst.items()})
    for k, (e, x) in worst.items():
        assert e < 1e-4, (k, x, e)


def test_bilinear_coefficient_derivatives_closed_form():
    """Elementwise: float32 autograd of Ā(dtA, A) and k(dtB, A) vs the float64 closed forms,
    |x| from 1e-3 to 1e6 (relative error per element)."""
    x = -torch.logspace(-3, 6, 91, dtype=torch.float64)
    for name, f, closed in (
        ("A_bar", lambda dt, A: discretize_A("bilinear", dt, A), lambda dt, A: (
            A / (1 - dt * A / 2) ** 2, dt / (1 - dt * A / 2) ** 2)),
        ("k", lambda dt, A: discretize_B("bilinear", dt, A), lambda dt, A: (
            1 / (1 - dt * A / 2) ** 2, 0.5 * (dt / (1 - dt * A / 2)) ** 2)),
    ):
        dt = (-x).float().requires_grad_(True)
        A = torch.full_like(dt, -1.0).requires_grad_(True)
        f(dt, A).sum().backward()
        g_dt, g_A = closed(-x, -torch.ones_like(x))
        e_dt = float(((dt.grad.double() - g_dt) / g_dt).abs().max())
        e_A = float(((A.grad.double() - g_A) / g_A).abs().max())
        print(f"{name}: max relative error d/ddt {e_dt:.1e}, d/dA {e_A:.1e} over |x| in [1e-3, 1e6]")
        assert e_dt < 1e-6 and e_A < 1e-6


def test_bilinear_values_unchanged():
    """The rewritten Ā = 2/(1 − x/2) − 1 and k keep the quotient's values (float64)."""
    x = -torch.logspace(-3, 6, 91, dtype=torch.float64)
    one = torch.ones_like(x)
    a = discretize_A("bilinear", -x, -one)
    k = discretize_B("bilinear", -x, -one)
    ea = float((a - (1 + x / 2) / (1 - x / 2)).abs().max())
    ek = float(((k - (-x) / (1 - x / 2)) / k).abs().max())
    print(f"Ā max abs diff {ea:.1e}, k max rel diff {ek:.1e}")
    assert ea < 1e-15 and ek < 1e-15


def test_bilinear_double_backward():
    """The closed-form backward is itself differentiable (a Hessian-vector product matches
    float64 finite differences of the gradient)."""
    dt = torch.tensor([0.3, 5.0, 80.0], dtype=torch.float64, requires_grad=True)
    A = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda d, a: discretize_B("bilinear", d, a), (dt, A))
    assert torch.autograd.gradcheck(lambda d, a: discretize_B("bilinear", d, a), (dt, A))
