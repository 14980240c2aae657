"""Mamba block with pluggable discretization and time-aware forward/step (DESIGN §4).

Compatible with mamba-ssm's ``Mamba`` and lrnnx's ``Mamba``: same constructor, same parameter
names (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so
their checkpoints load; plus ``rho`` (the asymmetric rate) when the discretization needs it.

Legend: batch ``B``, steps ``L``, model width ``d_model``, channels ``D = d_inner = expand *
d_model``, state ``N = d_state``, conv width ``K = d_conv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from eventssm.discretization import Discretization
from eventssm.scan import triton_available
from eventssm.ssm import SelectiveSSM
from eventssm.time import check_timesteps, length_mask, timesteps_from_timestamps

__all__ = ["Mamba", "InferenceCache"]


@dataclass
class InferenceCache:
    """Recurrent state of one Mamba block between calls.

    Attributes:
        conv_state: ``(B, D, K)`` the last K conv inputs (oldest first).
        ssm_state: ``(B, D, N)`` float32 SSM state.
        last_time: ``(B,)`` float64 absolute time of the last absorbed step, when timestamps
            were used (so the next chunk's first gap is ``t[0] - last_time``), else None.
        seqlen_offset: steps absorbed so far.
    """

    conv_state: Tensor
    ssm_state: Tensor
    last_time: Tensor | None = None
    seqlen_offset: int = 0


class Mamba(SelectiveSSM):
    """Mamba block: ``(B, L, d_model) -> (B, L, d_model)`` (or unbatched ``(L, d_model)``).

    in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> selective scan (Δ, B, C from x;
    discretization from ``discretization`` and the gaps) -> ⊙ silu(z) -> out_proj.

    Args follow mamba-ssm; ``discretization`` is a :class:`~eventssm.Discretization`
    (``Standard``/``Asymmetric``/``Scaled`` with a scheme) or an lrnnx string (``"mamba"``,
    ``"zoh"``, ``"bilinear"``, ``"dirac"``: asymmetric coupling whenever timesteps are passed);
    ``time_scale`` multiplies gaps computed from ``timestamps``; ``use_fast_path`` picks the
    Triton kernels on CUDA (``False``: the PyTorch path everywhere).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        discretization: Discretization | str = "mamba",
        time_scale: float = 1.0,
    ) -> None:
        for name, v in (("d_model", d_model), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        d_inner = expand * d_model
        super().__init__(
            d_inner, d_state, math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank,
            dt_min, dt_max, dt_init, dt_scale, dt_init_floor, discretization, time_scale,
            use_fast_path, device, dtype,
        )
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_conv, self.expand, self.layer_idx = d_model, d_conv, expand, layer_idx
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias, **fk)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1,
                                bias=conv_bias, **fk)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **fk)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _tau_dtype(dtype: torch.dtype) -> torch.dtype:
        # Gaps are formed in float64 and handed to the scan in float32 (its arithmetic), or
        # float64 for a float64 model so that tests against the oracle stay exact.
        return torch.float64 if dtype == torch.float64 else torch.float32

    def _gaps(self, L, Bsz, device, dtype, integration_timesteps, timestamps, lengths, mask, cache,
              check_values=True):
        """Integration timesteps ``(B, L)`` or None, and the last absolute time ``(B,)``
        (``mask``: the ``(B, L)`` mask of ``lengths``, or None)."""
        if integration_timesteps is not None and timestamps is not None:
            raise ValueError("pass either integration_timesteps or timestamps, not both")
        last_time = None
        if timestamps is not None:
            ts = torch.as_tensor(timestamps, device=device)
            ts = ts[None] if ts.dim() == 1 else ts
            if tuple(ts.shape) != (Bsz, L):
                raise ValueError(f"timestamps must have shape ({Bsz}, {L}), got {tuple(ts.shape)}")
            prev = cache.last_time if (cache is not None and cache.seqlen_offset > 0) else None
            tau = timesteps_from_timestamps(ts, time_scale=self.time_scale, last_time=prev,
                                            lengths=lengths, name="timestamps",
                                            check_values=check_values)
            idx = (lengths - 1).clamp(min=0) if lengths is not None else torch.full((Bsz,), L - 1, device=device)
            last_time = ts.gather(1, idx[:, None].long())[:, 0].to(torch.float64)
            if lengths is not None and prev is not None:
                last_time = torch.where(lengths > 0, last_time, prev)
            return tau.to(self._tau_dtype(dtype)), last_time
        if integration_timesteps is None:
            return None, None
        tau = torch.as_tensor(integration_timesteps, device=device)
        tau = tau[None] if tau.dim() == 1 else tau
        if tuple(tau.shape) != (Bsz, L):
            raise ValueError(f"integration_timesteps must have shape ({Bsz}, {L}), got {tuple(tau.shape)}")
        if not tau.dtype.is_floating_point:
            tau = tau.double()
        if mask is not None:  # padding may hold anything: zero it, then validate the rest
            tau = tau.masked_fill(~mask, 0.0)
        if check_values:
            check_timesteps(tau, "integration_timesteps")
        return tau.to(self._tau_dtype(dtype)), None

    def _conv(self, x: Tensor, conv_state: Tensor | None) -> Tensor:
        """Causal depthwise conv of ``x (B, D, L)``, continuing from ``conv_state (B, D, K)``."""
        L = x.shape[-1]
        if conv_state is None:
            return self.conv1d(x)[..., :L]
        # Prepend the K-1 most recent cached inputs and convolve without padding.
        xc = torch.cat([conv_state[..., 1:].to(x.dtype), x], dim=-1)
        return F.conv1d(xc, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: Tensor,
        integration_timesteps: Tensor | None = None,
        lengths: Tensor | None = None,
        inference_cache: InferenceCache | None = None,
        *,
        timestamps: Tensor | None = None,
        check_values: bool = True,
    ) -> Tensor:
        """``hidden_states (B, L, d_model)`` or ``(L, d_model)`` -> same shape.

        Args:
            integration_timesteps: ``(B, L)`` gaps τ ≥ 0 (lrnnx's name).
            lengths: ``(B,)`` real steps per right-padded sequence; padding is inert (it does not
                change the outputs at real steps nor the cached state) and its outputs are 0.
            inference_cache: from :meth:`allocate_inference_cache`; when given, the block starts
                from its state (prefill / chunked processing) and updates it in place.
            timestamps: ``(B, L)`` absolute times (float or int); gaps are formed in float64 as
                backward differences (``τ[0] = 0``, or ``t[0]`` minus the cache's last time).
            check_values: check the values of ``integration_timesteps`` (finite, ``>= 0``) and
                ``lengths`` (in ``[0, L]``): a host sync each, which also splits a
                ``torch.compile`` graph. ``False`` only for inputs the caller has validated
                (:class:`~eventssm.models.MambaBackbone` checks once for all its layers) or
                inside a captured step (``torch.compile(mode="reduce-overhead")``); it also
                skips the checks of ``timestamps``.
        """
        unbatched = hidden_states.dim() == 2
        if unbatched:
            hidden_states = hidden_states[None]
            if lengths is not None:
                lengths = torch.as_tensor(lengths).reshape(1)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden_states must have shape (batch, L, {self.d_model}) or (L, {self.d_model}), "
                f"got {tuple(hidden_states.shape)}"
            )
        Bsz, L, _ = hidden_states.shape
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=hidden_states.device)
            if lengths.shape != (Bsz,):
                raise ValueError(f"lengths must have shape ({Bsz},), got {tuple(lengths.shape)}")
            mask = length_mask(lengths, L, check_values=check_values)
        tau, last_time = self._gaps(L, Bsz, hidden_states.device, hidden_states.dtype, integration_timesteps,
                                    timestamps, lengths, mask, inference_cache, check_values)

        xz = self.in_proj(hidden_states)  # (B, L, 2D)
        x, z = xz.chunk(2, dim=-1)  # (B, L, D) each
        if mask is not None:
            x = x * mask[..., None]
        cache = inference_cache
        x_t = x.transpose(1, 2)  # (B, D, L): conv over L
        u = F.silu(self._conv(x_t, cache.conv_state if cache is not None and cache.seqlen_offset > 0 else None))
        u = u.transpose(1, 2)  # (B, L, D)
        if mask is not None:
            u = u * mask[..., None]  # padded steps feed u = 0 to the scan
        h0 = cache.ssm_state if (cache is not None and cache.seqlen_offset > 0) else None
        # τ was validated by _tau (once per call) and the rate is a softplus: the scan need not
        # check values again (each check is a host sync)
        out = self.ssm(u, z=z, integration_timesteps=tau, mask=mask, initial_state=h0,
                       return_last_state=cache is not None, check_values=False)
        y, h_last = (out if cache is not None else (out, None))
        if cache is not None:
            self._update_cache(cache, x_t, h_last, lengths, last_time, L)
        y = self.out_proj(y)  # (B, L, d_model)
        if mask is not None:
            y = y * mask[..., None]
        return y[0] if unbatched else y

    @torch.no_grad()
    def _update_cache(self, cache, x_t, h_last, lengths, last_time, L):
        K = self.d_conv
        prev = cache.conv_state.to(x_t.dtype)
        if cache.seqlen_offset == 0:
            prev = torch.zeros_like(prev)
        hist = torch.cat([prev, x_t], dim=-1)  # (B, D, K + L)
        # The K most recent real inputs of each sequence end at its length (right padding).
        end = K + (lengths if lengths is not None else torch.full((x_t.shape[0],), L, device=x_t.device))
        idx = end[:, None] - K + torch.arange(K, device=x_t.device)[None]  # (B, K)
        cache.conv_state.copy_(hist.gather(2, idx[:, None, :].expand(-1, hist.shape[1], -1).long()))
        cache.ssm_state.copy_(h_last)
        if last_time is not None:
            cache.last_time = last_time
        cache.seqlen_offset += L

    # ------------------------------------------------------------------ decoding
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None, dtype=None) -> InferenceCache:
        """A zero cache for ``batch_size`` sequences (``max_seqlen`` is accepted for API
        compatibility; the recurrent state does not grow with it)."""
        device = self.out_proj.weight.device
        cdt = dtype or self.conv1d.weight.dtype
        return InferenceCache(
            conv_state=torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=cdt),
            # The recurrence runs in fp32 (fp64 for a float64 model) whatever the activations.
            ssm_state=torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                  dtype=torch.float64 if self.A_log.dtype == torch.float64 else torch.float32),
        )

    def step(
        self,
        x: Tensor,
        inference_cache: InferenceCache,
        integration_timesteps: Tensor | None = None,
        *,
        timestamps: Tensor | None = None,
    ) -> tuple[Tensor, InferenceCache]:
        """One decoding step: ``x (B, 1, d_model)`` or ``(B, d_model)`` -> ``(B, 1, d_model)``.

        ``integration_timesteps (B,)`` (or ``(B, 1)``) is the gap since the previous step;
        alternatively ``timestamps (B,)`` absolute times, whose gap is taken from the cache's
        last time. Uses the same discretization formulas as the scan; updates the cache in place.
        """
        if x.dim() == 3:
            if x.shape[1] != 1:
                raise ValueError(f"step takes one step: x must be (B, 1, d_model), got {tuple(x.shape)}")
            x = x[:, 0]
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, 1, {self.d_model}) or (B, {self.d_model}), got {tuple(x.shape)}")
        Bsz = x.shape[0]
        cache = inference_cache
        if timestamps is not None:
            if integration_timesteps is not None:
                raise ValueError("pass either integration_timesteps or timestamps, not both")
            t = torch.as_tensor(timestamps, device=x.device).reshape(Bsz)
            prev = cache.last_time if cache.seqlen_offset > 0 else None  # first step: τ = 0
            tau = timesteps_from_timestamps(t[:, None], time_scale=self.time_scale, last_time=prev,
                                            name="timestamps")[:, 0]
            cache.last_time = t.to(torch.float64)
        elif integration_timesteps is not None:
            tau = torch.as_tensor(integration_timesteps, device=x.device).reshape(Bsz)
            if not tau.dtype.is_floating_point:
                tau = tau.double()
            check_timesteps(tau, "integration_timesteps")
        else:
            tau = None
        xz = self.in_proj(x)  # (B, 2D)
        xi, z = xz.chunk(2, dim=-1)  # (B, D)
        cs = cache.conv_state
        cs.copy_(torch.roll(cs, shifts=-1, dims=-1))
        cs[:, :, -1] = xi.to(cs.dtype)
        xc = (cs * self.conv1d.weight[:, 0, :].to(cs.dtype)).sum(-1)  # (B, D)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        u = F.silu(xc).to(x.dtype)
        delta, Bm, Cm = self.project(u)
        y = self._state_update(cache.ssm_state, u, delta, Bm, Cm, z,
                               None if tau is None else tau.to(self._tau_dtype(x.dtype)))
        cache.seqlen_offset += 1
        return self.out_proj(y)[:, None, :], cache

    def _state_update(self, state, u, delta, Bm, Cm, z, tau):
        kw = dict(D=self.D.float(), z=z, dt_bias=self.dt_proj.bias.float(), dt_softplus=True,
                  integration_timesteps=tau, rate=self.rate, discretization=self.discretization)
        if state.is_cuda and self.backend == "auto" and triton_available()[0]:
            from eventssm.kernels import selective_state_update_triton

            return selective_state_update_triton(state, u, delta, self.A(), Bm, Cm, **kw)
        from eventssm.reference import selective_state_update_ref

        return selective_state_update_ref(state, u, delta, self.A(), Bm, Cm, **kw)
