"""Discretization classes: formulas, stability, order, strings, errors."""

import math

import numpy as np
import pytest
import torch

from eventssm import SCHEMES, Additive, Asymmetric, Discretization, Scaled, Standard, as_discretization
from eventssm.discretization import discretize_A, discretize_B


def test_zoh_stable_as_dtB_A_goes_to_zero():
    A = torch.tensor([[-1.0]], dtype=torch.float32)
    for dtB in [1e-2, 1e-4, 1e-6, 1e-9, 1e-20, 0.0]:
        k = discretize_B("zoh", torch.tensor([[dtB]], dtype=torch.float32), A)
        exact = math.expm1(-dtB) / -1.0 if dtB else 0.0
        rel = abs(float(k) - exact) / max(abs(exact), 1e-300)
        print(f"dtB={dtB:g} k={float(k):.9g} exact={exact:.9g} rel={rel:.1e}")
        assert math.isfinite(float(k)) and (rel < 1e-6 or dtB == 0 and float(k) == 0)
    # A -> 0 with dtB fixed: the coefficient tends to dtB (no division by A blows up)
    for a in [-1e-3, -1e-8, -1e-30]:
        k = discretize_B("zoh", torch.tensor([[0.5]]), torch.tensor([[a]]))
        assert abs(float(k) - 0.5) < 1e-3 and torch.isfinite(k).all()


def test_zoh_gradient_finite_near_zero():
    dtB = torch.tensor([[1e-7, 1e-3, 0.5]], dtype=torch.float64, requires_grad=True)
    A = torch.tensor([[-2.0, -2.0, -2.0]], dtype=torch.float64).T.reshape(1, 3)
    k = discretize_B("zoh", dtB.T.reshape(3, 1), A.reshape(3, 1))
    k.sum().backward()
    exact = torch.exp(dtB.detach() * -2.0)  # d/d dtB of expm1(dtB a)/a = exp(dtB a)
    print(dtB.grad, exact)
    assert torch.allclose(dtB.grad, exact, rtol=1e-6)


@pytest.mark.parametrize("scheme,order", [("bilinear", 2), ("zoh", 1), ("mamba", 1)])
def test_empirical_order_on_linear_ode(scheme, order):
    """x' = a x + b u with constant u: global error vs step size has the scheme's order.

    ZOH is exact for piecewise-constant input, so it is checked against the exact solution of a
    *time-varying* input u(t) = cos(t) sampled at the left end (first order); mamba's Euler-like
    input is first order; bilinear (trapezoid-like in A) is second order on the homogeneous part.
    """
    a, T = -1.3, 2.0
    errs, hs = [], []
    for n in [16, 32, 64, 128, 256]:
        h = T / n
        dt = torch.tensor([[h]], dtype=torch.float64)
        A = torch.tensor([[a]], dtype=torch.float64)
        Ab, k = discretize_A(scheme, dt, A).item(), discretize_B(scheme, dt, A).item()
        x = 1.0
        for i in range(n):
            u = 0.0 if scheme == "bilinear" else math.cos(i * h)
            x = Ab * x + k * u
        if scheme == "bilinear":
            exact = math.exp(a * T)
        else:  # x(T) = e^{aT} + ∫ e^{a(T-s)} cos(s) ds
            exact = math.exp(a * T) + (math.sin(T) - a * math.cos(T) + a * math.exp(a * T)) / (1 + a * a)
        errs.append(abs(x - exact))
        hs.append(h)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    print(scheme, "errors", errs, "slope", slope)
    assert abs(slope - order) < 0.25


def test_couplings_step_sizes():
    delta = torch.tensor([[0.5, 2.0]])
    tau = torch.tensor([3.0])
    rate = torch.tensor([0.1, 0.2])
    assert torch.equal(torch.stack(Standard().step_sizes(delta, tau, rate)), torch.stack([delta, delta]))
    dA, dB = Asymmetric().step_sizes(delta, tau, rate)
    assert torch.allclose(dA, torch.tensor([[0.3, 0.6]])) and torch.equal(dB, delta)
    dA, dB = Scaled().step_sizes(delta, tau, rate)
    assert torch.allclose(dA, torch.tensor([[1.5, 6.0]])) and torch.equal(dB, delta)
    dA, dB = Additive().step_sizes(delta, tau, rate)
    assert torch.allclose(dA, torch.tensor([[0.8, 2.6]])) and torch.equal(dB, delta)
    with pytest.raises(ValueError, match="rate is required by the Additive"):
        Additive().step_sizes(delta, tau, None)
    # no tau: fall back to standard
    for c in (Asymmetric(), Scaled(), Additive()):
        dA, dB = c.step_sizes(delta, None, rate)
        assert torch.equal(dA, delta) and torch.equal(dB, delta)


def test_strings_and_errors():
    d = as_discretization("zoh")
    assert isinstance(d, Asymmetric) and d.scheme == "zoh"
    assert as_discretization(Scaled("dirac")) == Scaled("dirac")
    assert Standard("zoh") != Asymmetric("zoh")
    with pytest.raises(ValueError, match="scheme"):
        Standard("euler")
    with pytest.raises(ValueError, match="discretization"):
        as_discretization("foh")
    with pytest.raises(ValueError, match="discretization"):
        as_discretization(3)
    with pytest.raises(TypeError):
        Discretization()  # abstract
    assert set(SCHEMES) == {"mamba", "zoh", "bilinear", "dirac"}
