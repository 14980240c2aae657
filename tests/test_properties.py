"""Property tests (hypothesis) of the recurrence, run through the public op."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eventssm import SCHEMES, Asymmetric, Scaled, selective_scan
from tests.helpers import rel_err, scan_inputs

EXP_SCHEMES = ("mamba", "zoh", "dirac")
settings.register_profile("eventssm", max_examples=25, deadline=None)
settings.load_profile("eventssm")

backends = st.sampled_from(["torch", "reference"])


def _state_after(kw, disc, backend):
    return selective_scan(**kw, discretization=disc, return_last_state=True, backend=backend)[1]


@given(scheme=st.sampled_from(SCHEMES), seed=st.integers(0, 2**31 - 1), L=st.integers(1, 12),
       backend=backends)
def test_zero_gap_and_zero_input_keep_state(scheme, seed, L, backend):
    """τ = 0 and u = 0 leave the state unchanged (asymmetric coupling: dtA = τ r = 0)."""
    g = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=2, L=L, D=3, N=2, z=False, generator=g)
    kw["u"] = torch.zeros_like(kw["u"])
    kw["integration_timesteps"] = torch.zeros_like(kw["integration_timesteps"])
    h = _state_after(kw, Asymmetric(scheme), backend)
    assert rel_err(h, kw["initial_state"]) < 1e-12


@given(scheme=st.sampled_from(EXP_SCHEMES), coupling=st.sampled_from([Asymmetric, Scaled]),
       t1=st.floats(0, 50), t2=st.floats(0, 50), seed=st.integers(0, 2**31 - 1), backend=backends)
def test_two_silent_steps_equal_one(scheme, coupling, t1, t2, seed, backend):
    """With u = 0, evolving over τ₁ then τ₂ equals one step of τ₁ + τ₂ (exp schemes)."""
    g = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=1, L=2, D=3, N=2, z=False, generator=g)
    kw["u"] = torch.zeros_like(kw["u"])
    kw["delta"] = kw["delta"][:, :1].expand(1, 2, 3).contiguous()  # same Δ both steps (Scaled)
    kw["integration_timesteps"] = torch.tensor([[t1, t2]], dtype=torch.float64)
    two = _state_after(kw, coupling(scheme), backend)
    one = dict(kw, **{k: kw[k][:, :1] for k in ("u", "delta", "B", "C")})
    one["integration_timesteps"] = torch.tensor([[t1 + t2]], dtype=torch.float64)
    h1 = _state_after(one, coupling(scheme), backend)
    assert rel_err(two, h1) < 1e-10


@given(scheme=st.sampled_from(SCHEMES), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1),
       backend=backends)
def test_time_units_with_rate_change_nothing(scheme, scale, seed, backend):
    """τ in other units (τ·s) with the rate r/s gives the same outputs (asymmetric coupling)."""
    g = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=2, L=7, D=3, N=2, generator=g)
    y = selective_scan(**kw, delta_softplus=True, discretization=Asymmetric(scheme), backend=backend)
    kw2 = dict(kw, integration_timesteps=kw["integration_timesteps"] * scale, rate=kw["rate"] / scale)
    y2 = selective_scan(**kw2, delta_softplus=True, discretization=Asymmetric(scheme), backend=backend)
    assert rel_err(y2, y) < 1e-9


@given(scheme=st.sampled_from(SCHEMES), coupling=st.sampled_from([Asymmetric, Scaled]),
       L=st.integers(1, 10), pad=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), backend=backends)
def test_padding_steps_are_inert(scheme, coupling, L, pad, seed, backend):
    """Appending steps with τ = 0 and u = 0 keeps outputs and (for Δ-free dtA) the last state."""
    g = torch.Generator().manual_seed(seed)
    kw = scan_inputs(b=1, L=L + pad, D=3, N=2, z=False, generator=g)
    kw["u"][:, L:] = 0
    kw["integration_timesteps"][:, L:] = 0
    y_full, h_full = selective_scan(**kw, delta_softplus=True, discretization=coupling(scheme),
                                    return_last_state=True, backend=backend)
    short = dict(kw, **{k: kw[k][:, :L] for k in ("u", "delta", "B", "C", "integration_timesteps")})
    y, h = selective_scan(**short, delta_softplus=True, discretization=coupling(scheme),
                          return_last_state=True, backend=backend)
    assert rel_err(y_full[:, :L], y) < 1e-12
    # dtA = τ r = 0 (asymmetric) or Δ·τ = 0 (scaled) keeps the state and u = 0 adds nothing.
    assert rel_err(h_full, h) < 1e-12
