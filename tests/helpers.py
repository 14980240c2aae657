"""Shared test helpers: random scan inputs and error metrics."""

from __future__ import annotations

import importlib
import itertools

import torch

from eventssm import SCHEMES, Additive, Asymmetric, Scaled, Standard

COUPLINGS = (Standard, Asymmetric, Scaled, Additive)
ALL_DISCRETIZATIONS = [c(scheme=s) for c, s in itertools.product(COUPLINGS, SCHEMES)]
DISC_IDS = [f"{type(d).__name__}-{d.scheme}" for d in ALL_DISCRETIZATIONS]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (max-norm relative error, with a floor so zeros compare)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) if b.numel() else 0.0


def scan_inputs(b=2, L=9, D=6, N=4, G=None, dtype=torch.float64, tau_max=5.0, z=True,
                h0=True, softplus=True, requires_grad=False, generator=None):
    """Fresh random inputs for selective_scan with steps and gaps large enough to matter."""
    g = generator
    r = lambda *s: torch.randn(*s, dtype=dtype, generator=g)
    Bshape = (b, L, N) if G is None else (b, L, G, N)
    kw = dict(
        u=r(b, L, D), delta=r(b, L, D) * 0.5 + (0.5 if softplus else 1.5),
        A=-(torch.rand(D, N, dtype=dtype, generator=g) * 2 + 0.1), B=r(*Bshape), C=r(*Bshape),
        D=r(D), z=r(b, L, D) if z else None, delta_bias=r(D) * 0.3,
        integration_timesteps=torch.rand(b, L, dtype=dtype, generator=g) * tau_max,
        rate=torch.rand(D, dtype=dtype, generator=g) + 0.2,
        initial_state=r(b, D, N) if h0 else None,
    )
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    if requires_grad:
        for v in kw.values():
            if v is not None:
                v.requires_grad_(True)
    return kw


def softplus_error_ratio(y: torch.Tensor, x: torch.Tensor, base: float) -> tuple[float, float]:
    """A float32 softplus ``y`` of ``x`` (the float32 inputs, any device) against float64:
    ``(max relative error, max of error / bound)``.

    The bound is ``base`` (the formula's and the hardware's error) plus what float32 itself puts
    in: it rounds δ·log2 e by up to 2^-24 of itself, and 2^(δ·log2 e) carries that into
    w = e^-|δ| (Δ ~ w when δ << 0), so the bound grows with |δ|."""
    x64 = x.double()
    ref = torch.nn.functional.softplus(x64.cpu(), threshold=1e9).to(x64.device)
    rel = (y.double() - ref).abs() / ref
    bound = base + 2.0 ** -24 * 1.4427 * x64.abs()
    return rel.max().item(), (rel / bound).max().item()


def interpreted_kernels():
    """``eventssm.kernels`` with its kernels decorated under ``TRITON_INTERPRET=1``: a module
    imported earlier in the session (without the variable) holds compiled JIT functions, so its
    kernel modules are reloaded, dependencies first. Returns the package."""
    import eventssm.kernels as K

    if type(K.selective_scan_fwd.selective_scan_fwd_kernel.fn.fn).__name__ != "InterpretedFunction":
        for name in ("utils", "selective_scan_fwd", "selective_scan_bwd", "selective_state_update",
                     "selective_scan", "causal_conv1d"):
            importlib.reload(importlib.import_module(f"eventssm.kernels.{name}"))
        K = importlib.reload(K)
    return K
