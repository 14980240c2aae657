"""Mamba block with pluggable discretization and time-aware forward/step (DESIGN §4).

Compatible with mamba-ssm's ``Mamba`` and lrnnx's ``Mamba``: same constructor, same parameter
names (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so
their checkpoints load; plus ``rho`` (the asymmetric rate) when the discretization needs it.

One path from module to kernel: ``forward``/``step`` validate their inputs once
(:func:`eventssm.inputs.validate_steps` converts them, the door runs their value checks),
:func:`eventssm.dispatch.path` picks the conv, scan and step functions of the backend, and
``_forward`` runs them on activations that stay ``(B, L, ·)`` from ``in_proj`` to ``out_proj``.

Legend: batch ``B``, steps ``L``, model width ``d_model``, channels ``D = d_inner = expand *
d_model``, state ``N = d_state``, conv width ``K = d_conv``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from eventssm.cache import InferenceCache
from eventssm.checks import ValueChecks
from eventssm.discretization import Discretization
from eventssm.dispatch import backend_of, path
from eventssm.inputs import Steps, check_activations, check_cache, check_count, step_column, validate_steps
from eventssm.packing import model_steps
from eventssm.shared_grad import split_xz
from eventssm.ssm import PAD_DELTA, DtInit, SSMParts, project, scan_constants
from eventssm.time import check_time_scale

__all__ = ["Mamba", "InferenceCache"]


class Mamba(SSMParts, nn.Module):
    """Mamba block: ``(B, L, d_model) -> (B, L, d_model)`` (or unbatched ``(L, d_model)``).

    in_proj -> (x, z); x -> causal depthwise conv -> SiLU -> selective scan (Δ, B, C from x;
    discretization from ``discretization`` and the gaps) -> ⊙ silu(z) -> out_proj.

    Args follow mamba-ssm; ``discretization`` is a :class:`~eventssm.Discretization`
    (``Standard``/``Asymmetric``/``Scaled`` with a scheme) or an lrnnx string (``"mamba"``,
    ``"zoh"``, ``"bilinear"``, ``"dirac"``: asymmetric coupling whenever timesteps are passed);
    ``time_scale`` (the time unit) multiplies every gap, formed from ``timestamps`` or given as
    ``integration_timesteps`` (1: lrnnx's behaviour); ``use_fast_path`` picks the
    Triton kernels on CUDA (``False``: the PyTorch path everywhere); ``backend`` (``"auto" |
    "triton" | "torch" | "reference"``) overrides it, for ``forward`` and ``step`` alike;
    ``fused`` runs ``forward`` without a cache on the Triton path in eager mode as one autograd
    node from ``in_proj``'s output to ``out_proj``'s
    (:func:`eventssm.kernels.mamba_inner.mamba_inner_triton`, the same numbers with a fraction
    of the host time; ``False``: the separate pieces, a node each).

    An asymmetric block (the lrnnx strings too) called without timesteps falls back to the
    standard rule, where the rate ``rho`` does not enter; it still gets an exact zero gradient
    (see :func:`eventssm.ssm.scan_constants`), so DDP needs no ``find_unused_parameters``.
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
        backend: str | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        # The SSM parts first, then in_proj, conv1d and out_proj (SSMParts._init_ssm says why)
        self._init_ssm(d_inner=d_inner, d_state=d_state, dt_rank=self.dt_rank,
                       init=DtInit(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale,
                                   dt_init_floor=dt_init_floor),
                       discretization=discretization,
                       backend=backend_of(use_fast_path, backend), device=device, dtype=dtype)
        self.time_scale = check_time_scale(time_scale)
        self.fused = bool(fused)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias, **fk)
        # nn.Conv1d holds the weights under mamba-ssm's names; the conv itself runs channel-last
        # through the backend's causal_conv1d (weight[:, 0] is (D, K)).
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1,
                                bias=conv_bias, **fk)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **fk)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: Tensor,
        integration_timesteps: Tensor | None = None,
        lengths: Tensor | None = None,
        inference_cache: InferenceCache | None = None,
        *,
        timestamps: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
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
            cu_seqlens: ``(n + 1,)`` int32/int64 cumulative lengths of ``n`` sequences packed
                along L (``B == 1``, no padding; see :mod:`eventssm.packing`): the conv and the
                scan restart at every sequence start, gaps from ``timestamps`` are formed within
                each sequence. Exclusive with ``lengths`` and ``inference_cache``.
            check_values: check the values of the gaps, timestamps and lengths (one host sync
                for all of them, which also splits a ``torch.compile`` graph). ``False`` skips
                them, for inputs validated already or inside a captured step
                (``torch.compile(mode="reduce-overhead")``).
        """
        check_activations(hidden_states, "hidden_states", self.in_proj.weight)
        unbatched = hidden_states.dim() == 2
        x = hidden_states[None] if unbatched else hidden_states
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden_states must have shape (batch, L, {self.d_model}) or (L, {self.d_model}), "
                f"got {tuple(hidden_states.shape)}"
            )
        cache = inference_cache
        if cache is not None:
            check_cache(cache, x.shape[0], self.d_inner, self.d_conv, self.d_state, x.device)
        steps = ValueChecks.at_door(check_values, lambda checks: model_steps(
            x.shape[0], x.shape[1], x.device, x.dtype, cu_seqlens, checks=checks, cache=cache,
            last_time=cache.last_time if cache is not None and cache.seqlen_offset > 0 else None,
            integration_timesteps=integration_timesteps, timestamps=timestamps, lengths=lengths,
            time_scale=self.time_scale))
        y = self._forward(x, steps, cache)
        return y[0] if unbatched else y

    def _forward(self, hidden_states: Tensor, steps: Steps, cache: InferenceCache | None) -> Tensor:
        """The block on validated input: ``hidden_states (B, L, d_model)`` -> same."""
        fns = path(self.backend, hidden_states.device)
        warm = cache is not None and cache.seqlen_offset > 0
        mask = steps.mask
        if self._fuses(fns, hidden_states, cache):
            return fns.block(self.in_proj(hidden_states), self.conv1d.weight, self.conv1d.bias,
                             self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias,
                             self.A_log, self.D, self.rho, self.out_proj.weight,
                             self.out_proj.bias, discretization=self.discretization,
                             integration_timesteps=steps.tau, mask=mask,
                             cu_seqlens=steps.cu_seqlens)
        # 1. x (conv branch) and z (gate): two (B, L, D) views of one in_proj output. On the
        # Triton path in eager training, the conv's and the scan's backward write ∂x and ∂z
        # straight into one (B, L, 2D) buffer that becomes in_proj's output gradient.
        xz = self.in_proj(hidden_states)
        conv_kw, scan_kw = {}, {}
        if fns.name == "triton" and xz.requires_grad and not torch.compiler.is_compiling() \
                and xz.shape[1] > 0:  # an empty L has no rows to write in place
            x, z, conv_kw["dx_out"], scan_kw["dz_out"] = split_xz(xz, self.d_inner)
        else:
            x, z = xz.chunk(2, dim=-1)
        # 2. causal conv + SiLU over L, channel-last; a cache keeps the last K-1 real inputs
        conv = fns.conv(x, self.conv1d.weight[:, 0], self.conv1d.bias, activation="silu",
                        initial_state=cache.conv_state[..., 1:] if warm else None,
                        lengths=steps.lengths if cache is not None else None,
                        return_final_state=cache is not None, cu_seqlens=steps.cu_seqlens,
                        **conv_kw)
        u, conv_state = conv if cache is not None else (conv, None)  # (B, L, D)
        # Padded steps come after the real ones: only a state kept past the call (a cache) sees
        # them. There they must leave it as it is: u = 0 (dirac's B̄ = B) and Δ = 0 (Ā = 1).
        pad = None if cache is None or mask is None else ~mask[..., None]
        if pad is not None:
            u = u.masked_fill(pad, 0.0)
        # 3. input-dependent step δ (B, L, D) and B, C (B, L, N), views of x_proj's output
        delta, Bm, Cm = project(u, self.x_proj, self.dt_proj, self.d_state)
        if pad is not None:
            delta = delta.masked_fill(pad, PAD_DELTA)
        # 4. the selective scan, gated by silu(z)
        A, D, delta_bias, rate = scan_constants(self.A_log, self.D, self.dt_proj.bias, self.rho,
                                                event=steps.tau is not None)
        out = fns.scan(u, delta, A, Bm, Cm, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                       integration_timesteps=steps.tau, rate=rate,
                       discretization=self.discretization,
                       initial_state=cache.ssm_state if warm else None,
                       return_last_state=cache is not None, cu_seqlens=steps.cu_seqlens,
                       **scan_kw)
        y, ssm_state = out if cache is not None else (out, None)  # (B, L, D)
        if cache is not None:
            self._update_cache(cache, conv_state, ssm_state, steps.last_time, hidden_states.shape[1])
        # 5. back to d_model; padded outputs are 0
        y = self.out_proj(y)
        return y if mask is None else y.masked_fill(~mask[..., None], 0.0)

    def _fuses(self, fns, hidden_states: Tensor, cache: InferenceCache | None) -> bool:
        """Whether ``_forward`` runs as one node: the Triton path, eager, no cache, fp32/bf16/fp16
        (float64 goes to the reference) and a conv width the Triton conv compiles (2..4)."""
        return (self.fused and fns.block is not None and cache is None
                and not torch.compiler.is_compiling() and 2 <= self.d_conv <= 4
                and torch.float64 not in (hidden_states.dtype, self.in_proj.weight.dtype,
                                          self.A_log.dtype))

    @torch.no_grad()
    def _update_cache(self, cache: InferenceCache, conv_state, ssm_state, last_time, L: int) -> None:
        cache.conv_state[..., 1:].copy_(conv_state)
        cache.ssm_state.copy_(ssm_state)
        if last_time is not None:
            cache.last_time = last_time
        cache.seqlen_offset += L

    # ------------------------------------------------------------------ decoding
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None, dtype=None) -> InferenceCache:
        """A zero cache for ``batch_size`` sequences (``max_seqlen`` is accepted for API
        compatibility; the recurrent state does not grow with it). ``dtype``: of the conv state
        (default: the conv weight's), a floating dtype."""
        check_count(batch_size, "batch_size")
        check_count(max_seqlen, "max_seqlen", allow_none=True)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype or None (an integer conv state "
                             f"would truncate the inputs it keeps), got {dtype!r}")
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
        check_values: bool = True,
    ) -> tuple[Tensor, InferenceCache]:
        """One decoding step: ``x (B, 1, d_model)`` or ``(B, d_model)`` -> ``(B, 1, d_model)``.

        ``integration_timesteps (B,)`` (or ``(B, 1)``) is the gap since the previous step;
        alternatively ``timestamps (B,)`` absolute times, whose gap is taken from the cache's
        last time. The same conv and discretization formulas as ``forward``, on the same backend
        (``backend`` / ``use_fast_path``); updates the cache in place.

        ``check_values=False`` skips the value checks of the gap (finite, ``>= 0``), the only
        host syncs of a step: what capturing the step in a CUDA graph needs (shapes, dtypes and
        the cache are still checked, on the host, when the graph is captured).
        """
        check_activations(x, "x", self.in_proj.weight)
        if x.dim() == 3:
            if x.shape[1] != 1:
                raise ValueError(f"step takes one step: x must be (B, 1, d_model), got {tuple(x.shape)}")
            x = x[:, 0]
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, 1, {self.d_model}) or (B, {self.d_model}), got {tuple(x.shape)}")
        Bsz = x.shape[0]
        cache = inference_cache
        check_cache(cache, Bsz, self.d_inner, self.d_conv, self.d_state, x.device)
        steps = ValueChecks.at_door(check_values, lambda checks: validate_steps(
            Bsz, 1, x.device, x.dtype, checks=checks,
            integration_timesteps=step_column(integration_timesteps, "integration_timesteps", Bsz, x.device),
            timestamps=step_column(timestamps, "timestamps", Bsz, x.device), time_scale=self.time_scale,
            last_time=cache.last_time if cache.seqlen_offset > 0 else None))  # first step: τ = 0
        return self._step(x, steps, cache)[:, None, :], cache

    def _step(self, x: Tensor, steps: Steps, cache: InferenceCache) -> Tensor:
        """One step on validated input: ``x (B, d_model)`` -> ``(B, d_model)``."""
        fns = path(self.backend, x.device)
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, D) each
        u = fns.conv_step(xi, cache.conv_state, self.conv1d.weight[:, 0], self.conv1d.bias,
                          activation="silu")  # (B, D); the window shifted in place
        delta, Bm, Cm = project(u, self.x_proj, self.dt_proj, self.d_state)
        A, D, delta_bias, rate = scan_constants(self.A_log, self.D, self.dt_proj.bias, self.rho,
                                                event=steps.tau is not None)
        y = fns.step(cache.ssm_state, u, delta, A, Bm, Cm, D=D, z=z, dt_bias=delta_bias,
                     dt_softplus=True, integration_timesteps=None if steps.tau is None else steps.tau[:, 0],
                     rate=rate, discretization=self.discretization)
        if steps.last_time is not None:
            cache.last_time = steps.last_time
        cache.seqlen_offset += 1
        return self.out_proj(y)
