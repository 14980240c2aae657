"""The state head: type intensities read out of the encoder's own SSM state, evolved between
events under the block's discretization with the elapsed time as τ and no input (S2P2-style).

Legend: leading dims ``...`` (one row per event), batch ``B``, steps ``L``, model width ``d``
(``d_model``), channels ``D = d_inner`` and state ``N = d_state`` of the encoder's *last* Mamba
block, event types ``K``, query times ``Q``.

After event ``i`` the last block holds the state ``h_i (D, N)``; its output at the event is
``y_i = (C_i · h_i + D ⊙ u_i) ⊙ silu(z_i)``, and the encoder's feature is
``norm_f(r_i + out_proj(y_i))`` with ``r_i (d)`` the residual stream entering the block. Until the
next event there is no input (``u = 0``), so with the elapsed time ``s`` (data units) as the
block's timestep ``τ = s · time_scale``::

    h_i(s) = exp(A ⊙ dtA(s)) ⊙ h_i,        dtA(s) = r · τ (D, 1),  A = -exp(A_log) (D, N)
    y_i(s) = (Σ_n C_i[n] h_i(s)[:, n]) ⊙ silu(z_i)                          (D,)
    v_i(s) = r_i + out_proj(y_i(s))                                          (d,)
    λ_k(t_i + s) = f_k(W norm_f(v_i(s)) + b)_k / u,   f_k(x) = β_k log(1 + exp(x / β_k))

with ``r = softplus(ρ)`` the block's learned per-channel rate and ``u`` the time unit (the
training gaps' geometric mean, as in :class:`~eventssm.tpp.IntensityHead`). The skip ``D ⊙ u``
has no input between events and vanishes; at ``s = 0`` the head reads exactly the encoder's
feature of the event without it.

Which couplings: the decay between events must be a function of the elapsed time alone (no
input to select a step from), and a semigroup (evolving ``s₁`` then ``s₂`` equals evolving
``s₁ + s₂``), so that "the state at time ``s``" does not depend on how the gap is cut:

* ``Asymmetric`` (``dtA = τ r``): exactly the decay the next event's step applies to the state.
* ``Additive`` (``dtA = Δ + τ r``): the clock part ``τ r``; the next event's own ``Δ`` is the
  selective reset that event applies with its input, so ``h_i(s)`` is the state just before it
  less that reset.
* ``Standard`` (no time), ``Scaled`` (``dtA = Δ τ``: the decay depends on the next input's ``Δ``,
  unknown between events) and the ``bilinear`` scheme (``Ā`` is not a semigroup in ``τ`` and
  tends to ``-1``) are refused with a ``ValueError`` naming ``discretization``.

Every scheme but bilinear has ``Ā = exp(dtA · A)`` (``mamba``, ``zoh``, ``dirac`` differ only
in ``B̄``, which meets no input here).

Per-event states: the encoder's fast paths return outputs, not states. :func:`block_states`
gets every state of the last block from the same :func:`~eventssm.selective_scan` (any backend,
with its gradients) by laying the state out as channels: ``D·N`` channels ``(n, d)`` with
``A' = A[d, n]``, ``B`` grouped by ``n`` (group ``n`` = ``B[n]``), ``C = 1`` and no skip or
gate, so that output channel ``(n, d)`` *is* ``h[d, n]``. Memory: ``B·L·D·N`` floats for the
states (plus as much again for their gradient), ``N`` times a block's output; the head then
evaluates ``(rows, Q, D, N)`` decays for the compensator (``Q = n_quad · n_panels`` nodes), the
largest tensor of a training step.

This module is core: torch only (no Lightning).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from eventssm.checks import ValueChecks
from eventssm.discretization import Discretization
from eventssm.dispatch import path
from eventssm.inputs import Steps
from eventssm.scan import selective_scan
from eventssm.ssm import project, scan_constants
from eventssm.tpp import DecayingIntensityHead, _f, softplus_beta

__all__ = ["StateIntensityHead", "STATE_COUPLINGS", "check_state_discretization", "block_states",
           "BlockStates", "decay_factors", "evolve_state", "last_block_input"]

#: couplings whose decay between events is a function of the elapsed time alone (module docstring)
STATE_COUPLINGS = ("asymmetric", "additive")


def check_state_discretization(disc: Discretization) -> None:
    """Raise a ``ValueError`` naming ``discretization`` unless the state head supports ``disc``."""
    if getattr(disc, "coupling", None) not in STATE_COUPLINGS:
        raise ValueError(
            f"head='state' needs the backbone's discretization to be Asymmetric or Additive (a "
            f"decay driven by the elapsed time alone, with no input), got discretization={disc!r}: "
            f"Standard has no time and Scaled's decay Δ·τ depends on the next event's input")
    if disc.scheme == "bilinear":
        raise ValueError(
            f"head='state' does not support the bilinear scheme, got discretization={disc!r}: its "
            f"Ā(τ) = (1 + τa/2)/(1 − τa/2) is not a semigroup in τ and tends to -1, so the state "
            f"between events would depend on how the gap is cut; use mamba, zoh or dirac")


def decay_factors(s: Tensor, A: Tensor, rate: Tensor, time_scale: float = 1.0) -> Tensor:
    """``exp(A ⊙ dtA)`` ``(..., D, N)`` with ``dtA = r τ`` (the clock part of the Asymmetric and
    Additive couplings) and ``τ = s · time_scale``, for ``s (...)`` data time units since the
    event, ``A (D, N)`` negative and the rate ``r (D,)``."""
    tau = s * time_scale
    return torch.exp(A * (rate[:, None] * tau[..., None, None]))


def evolve_state(h: Tensor, s: Tensor, A: Tensor, rate: Tensor, time_scale: float = 1.0) -> Tensor:
    """The state ``h (..., D, N)`` evolved with no input for ``s (...)`` data time units:
    ``decay_factors(s, A, rate, time_scale) ⊙ h`` ``(..., D, N)``."""
    return decay_factors(s, A, rate, time_scale) * h


class BlockStates(NamedTuple):
    """What the last block needs to produce its output at any time after each event, no input:
    ``h (B, L, D, N)`` the state after the event, ``C (B, L, N)`` its readout, ``gate (B, L, D)``
    ``silu(z)``, all in the scan's dtype (float32; float64 for a float64 model)."""

    h: Tensor
    C: Tensor
    gate: Tensor


def block_states(mixer: nn.Module, x: Tensor, steps: Steps) -> BlockStates:
    """Every state of the Mamba block ``mixer`` on its (normed) input ``x (B, L, d)`` with the
    validated ``steps`` (gaps, lengths or ``cu_seqlens``): the same in_proj, conv, projections
    and scan as ``Mamba._forward`` without a cache, with the states laid out as the scan's
    channels (module docstring). Differentiable (the scan's own backward)."""
    fns = path(mixer.backend, x.device)
    xi, z = mixer.in_proj(x).chunk(2, dim=-1)
    u = fns.conv(xi, mixer.conv1d.weight[:, 0], mixer.conv1d.bias, activation="silu",
                 cu_seqlens=steps.cu_seqlens)  # (B, L, D)
    delta, Bm, Cm = project(u, mixer.x_proj, mixer.dt_proj, mixer.d_state)
    A, _, delta_bias, rate = scan_constants(mixer.A_log, mixer.D, mixer.dt_proj.bias, mixer.rho,
                                            event=steps.tau is not None)
    b, L, Dm = u.shape
    N = A.shape[1]
    # channel n·D + d carries state (d, n): inputs tiled N times, A transposed, B grouped by n
    ones = torch.ones(b, L, N, 1, dtype=Bm.dtype, device=Bm.device)
    y = selective_scan(
        u.repeat(1, 1, N), delta.repeat(1, 1, N), A.t().reshape(N * Dm, 1),
        Bm[..., None], ones, None, z=None, delta_bias=delta_bias.repeat(N), delta_softplus=True,
        integration_timesteps=steps.tau, rate=None if rate is None else rate.repeat(N),
        discretization=mixer.discretization, cu_seqlens=steps.cu_seqlens, backend=mixer.backend,
        check_values=False)  # the steps were validated at the encoder's door
    h = y.reshape(b, L, N, Dm).transpose(-1, -2)  # (B, L, D, N)
    cdt = A.dtype
    return BlockStates(h.to(cdt), Cm.to(cdt), F.silu(z.to(cdt)))


def last_block_input(encoder: nn.Module, values=None, marks=None, *, timestamps=None,
                     integration_timesteps=None, lengths=None, observed=None, cu_seqlens=None,
                     check_values: bool = True) -> tuple[Tensor, Steps, bool]:
    """The residual stream entering the encoder's last block ``(B, L, d)``, the validated
    :class:`~eventssm.inputs.Steps` and whether the input was unbatched, for the arguments of
    :meth:`EventEncoder.encode` (no cache). The same conversion, embedding and blocks as
    ``EventEncoder._features``, stopped before the last block."""
    inputs = ValueChecks.at_door(check_values, lambda checks: encoder._inputs(
        values, marks, observed, timestamps, integration_timesteps, lengths, cu_seqlens, None,
        checks))
    steps = inputs.steps
    x = encoder._embed(inputs.values, inputs.marks, inputs.observed, steps.tau,
                       encoder.backbone.norm_f.weight.dtype)
    for layer in encoder.backbone.layers[:-1]:
        x = layer._forward(x, steps, None)
    return x, steps, inputs.unbatched


class StateIntensityHead(DecayingIntensityHead):
    """Intensities read out of the encoder's last SSM state, evolved in closed form between
    events (module docstring). Its own parameters are the readout ``out`` (``d -> K``) and the
    softplus sharpness ``log_beta``; the state, the decay (``A_log``, ``rho``), ``out_proj`` and
    ``norm_f`` are the encoder's, read live through :meth:`bind` (not registered here, so they are
    saved once, under the encoder).

    Its per-event features (what :meth:`encode` returns and every other method takes as ``h``)
    are ``[h_i (D·N), C_i (N), silu(z_i) (D), r_i (d)]``, ``F = D·N + N + D + d`` floats per event.

    Args:
        d_model, num_marks, log_gap_stats, time_prediction: see :class:`~eventssm.tpp.TPPHead`.
        n_quad, n_panels, n_grid: see :class:`~eventssm.tpp.DecayingIntensityHead`.
    """

    def __init__(self, d_model: int, num_marks: int, log_gap_stats=None, n_quad: int = 8,
                 n_panels: int = 6, n_grid: int = 128, time_prediction: str = "mean") -> None:
        super().__init__(d_model, num_marks, log_gap_stats, n_quad, n_panels, n_grid, time_prediction)
        self.out = nn.Linear(d_model, num_marks)
        self.log_beta = nn.Parameter(torch.zeros(num_marks))
        self._bound_encoder: tuple = ()  # a tuple, not a submodule: the encoder is not ours

    # ------------------------------------------------------------------ the encoder it reads
    def bind(self, encoder: nn.Module) -> StateIntensityHead:
        """Read the state of ``encoder`` (an :class:`~eventssm.EventEncoder`); checks that its
        last block's discretization is supported and its width is ``d_model``."""
        block = encoder.backbone.layers[-1]
        check_state_discretization(block.mixer.discretization)
        if encoder.d_model != self.d_model:
            raise ValueError(f"encoder.d_model ({encoder.d_model}) must equal the head's d_model "
                             f"({self.d_model})")
        self._bound_encoder = (encoder,)
        return self

    @property
    def encoder(self) -> nn.Module:
        if not self._bound_encoder:
            raise RuntimeError("StateIntensityHead reads an encoder's state: call head.bind(encoder) first")
        return self._bound_encoder[0]

    @property
    def _mixer(self) -> nn.Module:
        return self.encoder.backbone.layers[-1].mixer

    def _dims(self) -> tuple[int, int]:
        return self._mixer.d_inner, self._mixer.d_state

    @property
    def n_features(self) -> int:
        """``F = D·N + N + D + d``, the width of the per-event features."""
        Dm, N = self._dims()
        return Dm * N + N + Dm + self.d_model

    def encode(self, **encode_kwargs) -> Tensor:
        """Per-event features ``(B, L, F)`` (padding 0; ``(1, T, F)`` packed) for the arguments
        of :meth:`EventEncoder.encode` (no cache)."""
        x, steps, unbatched = last_block_input(self.encoder, **encode_kwargs)
        block = self.encoder.backbone.layers[-1]
        st = block_states(block.mixer, block.norm(x), steps)
        cdt = st.h.dtype
        feats = torch.cat([st.h.flatten(-2), st.C, st.gate, x.to(cdt)], -1)
        if steps.mask is not None:
            feats = feats.masked_fill(~steps.mask[..., None], 0.0)
        return feats[0] if unbatched else feats

    # ------------------------------------------------------------------ the readout
    def states(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(w, g, r)``: ``w = C_i[n] h_i[d, n]`` ``(..., D·N)``, the gate ``silu(z_i) (..., D)``
        and the residual ``r_i (..., d)``."""
        Dm, N = self._dims()
        if h.shape[-1] != self.n_features:
            raise ValueError(f"h must have {self.n_features} features per event (from "
                             f"StateIntensityHead.encode), got shape {tuple(h.shape)}")
        h = _f(h)
        hs, C, g, r = h.split([Dm * N, N, Dm, self.d_model], -1)
        w = (hs.unflatten(-1, (Dm, N)) * C[..., None, :]).flatten(-2)
        return w, g, r

    def _decay_constants(self, dtype) -> tuple[Tensor, Tensor]:
        """``A (D, N)`` and ``r (D,)`` of the last block (the clock part of its coupling)."""
        m = self._mixer
        A, _, _, rate = scan_constants(m.A_log, m.D, m.dt_proj.bias, m.rho, event=True)
        return A.to(dtype), rate.to(dtype)

    def _readout(self, y: Tensor, r: Tensor) -> Tensor:
        """Block output ``y (..., D)`` and residual ``r (..., d)`` -> intensities ``(..., K)``."""
        enc = self.encoder
        v = r + enc.backbone.layers[-1].mixer.out_proj(y.to(r.dtype))
        feat = enc.backbone.norm_f(v)
        return softplus_beta(self.out(feat), self.log_beta) / self.time_unit

    def _intensity(self, st, s: Tensor) -> Tensor:
        w, g, r = st
        Dm, N = self._dims()
        A, rate = self._decay_constants(w.dtype)
        decay = decay_factors(s, A, rate, self.encoder.time_scale)  # (..., Q, D, N)
        y = g[..., None, :] * (w.unflatten(-1, (Dm, N))[..., None, :, :] * decay).sum(-1)  # (..., Q, D)
        return self._readout(y, r[..., None, :].expand(*y.shape[:-1], r.shape[-1]))

    def _asymptote(self, st) -> Tensor:
        # A < 0 and r > 0: the state decays to 0 and the output to the residual's readout
        w, g, r = st
        return self._readout(torch.zeros_like(g), r)

    def _bound(self, st) -> Tensor:
        """An exact bound of ``λ_k(s)`` over ``s >= 0``: ``|exp(A r τ)| <= 1``, so each channel
        ``|y_d(s)| <= |g_d| Σ_n |w_dn| = Y_d``; each coordinate of ``v = r + O y`` lies in
        ``[r_j - R_j, r_j + R_j]``, ``R = |O| Y``; RMSNorm then gives
        ``|norm_f(v)_j| <= |γ_j| min(√d, m_j / √(mean_j dist_j² + eps))`` with ``m_j`` the
        largest ``|v_j|`` of the box and ``dist_j`` its distance to 0; the pre-activation is at
        most ``b_k + Σ_j |W_kj| c_j`` and ``f_k`` is increasing."""
        w, g, r = st
        Dm, N = self._dims()
        enc = self.encoder
        Y = g.abs() * w.unflatten(-1, (Dm, N)).abs().sum(-1)  # (..., D)
        R = Y.to(r.dtype) @ self._mixer.out_proj.weight.abs().t()  # (..., d)
        m = r.abs() + R
        dist = (r.abs() - R).clamp(min=0)
        norm = enc.backbone.norm_f
        eps = norm.eps if norm.eps is not None else torch.finfo(r.dtype).eps
        rms_lo = torch.sqrt((dist ** 2).mean(-1, keepdim=True) + eps)
        gamma = norm.weight.abs() if norm.weight is not None else torch.ones_like(r[..., 0])
        c = gamma * torch.minimum(m / rms_lo, torch.full_like(m, self.d_model ** 0.5))
        pre = c @ self.out.weight.abs().t() + self.out.bias
        return softplus_beta(pre, self.log_beta) / self.time_unit
