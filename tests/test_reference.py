"""The reference scan against an independent scalar float64 loop, and gradcheck."""

import math

import pytest
import torch

from eventssm import selective_scan_ref, selective_state_update_ref
from tests.helpers import ALL_DISCRETIZATIONS, DISC_IDS, rel_err, scan_inputs


def _softplus(x):
    return math.log1p(math.exp(x)) if x < 30 else x


def scalar_scan(u, delta, A, B, C, D, z, delta_bias, tau, rate, disc, h0):
    """Element-by-element python-float loop written straight from the DESIGN tables."""
    b, L, Dm = u.shape
    N = A.shape[1]
    G = B.shape[2] if B.dim() == 4 else None
    y = torch.zeros(b, L, Dm, dtype=torch.float64)
    h = torch.zeros(b, Dm, N, dtype=torch.float64) if h0 is None else h0.clone()
    for bi in range(b):
        for d in range(Dm):
            g = None if G is None else d // (Dm // G)
            for l in range(L):
                dl = _softplus(float(delta[bi, l, d]) + float(delta_bias[d]))
                t = None if tau is None else float(tau[bi, l])
                if t is None or disc.coupling == "standard":
                    dtA = dtB = dl
                elif disc.coupling == "asymmetric":
                    dtA, dtB = t * float(rate[d]), dl
                elif disc.coupling == "additive":
                    dtA, dtB = dl + t * float(rate[d]), dl
                else:
                    dtA, dtB = dl * t, dl
                acc = 0.0
                for n in range(N):
                    a = float(A[d, n])
                    Bv = float(B[bi, l, n] if g is None else B[bi, l, g, n])
                    Cv = float(C[bi, l, n] if g is None else C[bi, l, g, n])
                    if disc.scheme == "bilinear":
                        Abar = (1 + dtA * a / 2) / (1 - dtA * a / 2)
                        Bbar = dtB / (1 - dtB * a / 2) * Bv
                    else:
                        Abar = math.exp(dtA * a)
                        Bbar = {"mamba": dtB * Bv, "dirac": Bv,
                                "zoh": math.expm1(dtB * a) / a * Bv}[disc.scheme]
                    h[bi, d, n] = Abar * float(h[bi, d, n]) + Bbar * float(u[bi, l, d])
                    acc += Cv * float(h[bi, d, n])
                out = acc + float(D[d]) * float(u[bi, l, d])
                if z is not None:
                    zv = float(z[bi, l, d])
                    out *= zv / (1 + math.exp(-zv))
                y[bi, l, d] = out
    return y, h


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
@pytest.mark.parametrize("groups", [None, 2])
def test_reference_matches_scalar_loop(disc, groups):
    kw = scan_inputs(b=2, L=5, D=4, N=3, G=groups)
    y, h = selective_scan_ref(**kw, delta_softplus=True, discretization=disc, return_last_state=True)
    y0, h0 = scalar_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                         kw["delta_bias"], kw["integration_timesteps"], kw["rate"], disc,
                         kw["initial_state"])
    ey, eh = rel_err(y, y0), rel_err(h, h0)
    print(f"{disc}: y err {ey:.2e}, last state err {eh:.2e}")
    assert ey < 1e-12 and eh < 1e-12


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_reference_gradcheck(disc):
    kw = scan_inputs(b=1, L=4, D=2, N=2, requires_grad=True)
    names = [k for k, v in kw.items() if v is not None and k != "integration_timesteps"]

    def f(*args):
        call = dict(kw, **dict(zip(names, args)))
        y, h = selective_scan_ref(**call, delta_softplus=True, discretization=disc, return_last_state=True)
        return y, h

    assert torch.autograd.gradcheck(f, tuple(kw[k] for k in names), eps=1e-6, atol=1e-6)


def test_reference_fp32_compute_for_half_inputs():
    kw = scan_inputs(b=1, L=6, D=3, N=2, dtype=torch.float32)
    half = {k: (v.half() if v is not None and k in ("u", "delta", "B", "C", "z") else v) for k, v in kw.items()}
    y = selective_scan_ref(**half, delta_softplus=True)
    assert y.dtype == torch.float16
    as32 = {k: (v.float() if v is not None else None) for k, v in half.items()}
    y32 = selective_scan_ref(**as32, delta_softplus=True)
    print("fp16-in vs fp32 of the same values:", rel_err(y, y32))
    assert rel_err(y, y32) < 2e-3


@pytest.mark.parametrize("disc", ALL_DISCRETIZATIONS, ids=DISC_IDS)
def test_state_update_matches_scan(disc):
    kw = scan_inputs(b=2, L=6, D=4, N=3, z=True)
    y, h = selective_scan_ref(**kw, delta_softplus=True, discretization=disc, return_last_state=True)
    state = kw["initial_state"].clone()
    ys = []
    for l in range(6):
        ys.append(selective_state_update_ref(
            state, kw["u"][:, l], kw["delta"][:, l], kw["A"], kw["B"][:, l], kw["C"][:, l], kw["D"],
            kw["z"][:, l], kw["delta_bias"], True, kw["integration_timesteps"][:, l], kw["rate"], disc))
    err = rel_err(torch.stack(ys, 1), y)
    print(disc, err)
    assert err < 1e-12 and rel_err(state, h) < 1e-12
