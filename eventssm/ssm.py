"""The state space part of a Mamba block: its parameters, the projections to (Δ, B, C), and
``SelectiveSSM``, a standalone module around one selective scan.

The parameters have mamba-ssm's names (``x_proj``, ``dt_proj``, ``A_log``, ``D``) plus, for
couplings that need it, the per-channel rate ``rho`` (``r = softplus(ρ)``, one ``(d_inner,)``
tensor). ``Mamba`` and ``SelectiveSSM`` each hold these parts directly (so checkpoints keep
mamba-ssm's flat names): both register them through :class:`SSMParts` and use them through the
functions of this module.

Legend: batch ``B``, steps ``L``, channels ``D = d_inner``, state ``N = d_state``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from eventssm.discretization import Discretization, as_discretization
from eventssm.dispatch import backend_of
from eventssm.scan import selective_scan

__all__ = ["SelectiveSSM", "SSMParts", "PAD_DELTA", "ssm_parameters", "project", "scan_constants"]

# Raw step δ written at padded positions: softplus(PAD_DELTA + bias) is exactly 0 in fp32 and
# fp64, so Ā = 1 and B̄ = 0 there (dirac's B̄ = B meets u = 0): the state passes through.
PAD_DELTA = -1.0e4


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def _log_uniform(n: int, lo: float, hi: float, floor: float, device) -> Tensor:
    u = torch.rand(n, device=device, dtype=torch.float32)
    return torch.exp(u * (math.log(hi) - math.log(lo)) + math.log(lo)).clamp(min=floor)


@dataclass(frozen=True, kw_only=True)
class DtInit:
    """How Δ is initialised, as in mamba-ssm: ``dt_proj.bias`` is softplus⁻¹ of a log-uniform step
    in ``[dt_min, dt_max]`` (floored at ``dt_init_floor``); ``dt_proj.weight`` is ``"random"``
    (uniform) or ``"constant"`` with scale ``dt_rank^-1/2 · dt_scale``."""

    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4


def ssm_parameters(
    *, d_inner: int, d_state: int, dt_rank: int, init: DtInit, uses_rate: bool, device=None, dtype=None,
) -> tuple[nn.Linear, nn.Linear, nn.Parameter, nn.Parameter, nn.Parameter | None]:
    """Fresh ``(x_proj, dt_proj, A_log, D, rho)`` initialised as in mamba-ssm (``rho`` is None
    unless the coupling ``uses_rate``).

    Raises:
        ValueError: non-positive sizes, ``dt_min > dt_max`` or an unknown ``dt_init``.
    """
    dt_min, dt_max, dt_init = init.dt_min, init.dt_max, init.dt_init
    dt_scale, dt_init_floor = init.dt_scale, init.dt_init_floor
    for name, v in (("d_inner", d_inner), ("d_state", d_state), ("dt_rank", dt_rank)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if dt_init not in ("random", "constant"):
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
    fk = {"device": device, "dtype": dtype}
    x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False, **fk)
    dt_proj = nn.Linear(dt_rank, d_inner, bias=True, **fk)
    # Δ init (mamba-ssm): weight keeps the projection's output variance at dt_scale, bias is
    # softplus^-1 of a log-uniform step in [dt_min, dt_max].
    std = dt_rank**-0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "constant":
            dt_proj.weight.fill_(std)
        else:
            dt_proj.weight.uniform_(-std, std)
        dt_proj.bias.copy_(_inverse_softplus(_log_uniform(d_inner, dt_min, dt_max, dt_init_floor, device)))
    dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
    # S4D-real init: A[d, n] = -(n + 1).
    A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
    A_log = nn.Parameter(torch.log(A))
    A_log._no_weight_decay = True  # type: ignore[attr-defined]
    D = nn.Parameter(torch.ones(d_inner, device=device))
    D._no_weight_decay = True  # type: ignore[attr-defined]
    rho = None
    if uses_rate:
        # r = softplus(ρ) starts like Δ (log-uniform in [dt_min, dt_max]) so that τ ~ 1 in the
        # configured time unit decays the state as much as one ordinary Mamba step.
        rho = nn.Parameter(_inverse_softplus(_log_uniform(d_inner, dt_min, dt_max, dt_init_floor, device)))
        rho._no_weight_decay = True  # type: ignore[attr-defined]
    return x_proj, dt_proj, A_log, D, rho


def project(u: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, d_state: int) -> tuple[Tensor, Tensor, Tensor]:
    """``u (B, L, D)`` (or ``(B, D)``) -> raw step δ (same shape), ``B``, ``C`` ``(..., N)``.

    B and C are views of ``x_proj``'s output (no copy): the scan takes strided inputs."""
    x_dbl = x_proj(u)  # (..., dt_rank + 2N)
    dt, Bm, Cm = torch.split(x_dbl, [dt_proj.in_features, d_state, d_state], dim=-1)
    # The bias is added inside the scan (delta_bias) so it sits in fp32 next to the softplus.
    return F.linear(dt, dt_proj.weight), Bm, Cm


def scan_constants(A_log: Tensor, D: Tensor, dt_bias: Tensor, rho: Tensor | None,
                   event: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(A (D, N), D (D,), delta_bias (D,), rate (D,) or None)`` for the scan, in float32 (the
    scan's arithmetic), or float64 for a float64 model (tests against the float64 oracle).

    ``event``: whether timesteps are given. Without them the coupling falls back to the
    standard rule and the rate does not enter the scan; it is tied to ``delta_bias`` with an
    exact zero factor so that it still gets a (zero) gradient and DDP, which stops on
    parameters without one, needs no ``find_unused_parameters``. That costs two ``(D,)`` ops,
    nothing per step.
    """
    c = lambda t: t if t.dtype == torch.float64 else t.float()
    A = -torch.exp(c(A_log))
    delta_bias = c(dt_bias)
    rate = None if rho is None else F.softplus(c(rho))
    if rate is not None and not event:
        delta_bias = delta_bias + 0.0 * rate
        rate = None
    return A, c(D), delta_bias, rate


class SSMParts:
    """What ``Mamba`` and ``SelectiveSSM`` share (a mixin of ``nn.Module`` subclasses): the SSM
    parameters under mamba-ssm's flat names, the discretization and the backend."""

    def _init_ssm(self, *, d_inner: int, d_state: int, dt_rank: int, init: DtInit,
                  discretization: Discretization | str, backend: str, device, dtype) -> None:
        """Set the discretization and backend, and register ``x_proj``,
        ``dt_proj``, ``A_log``, ``D`` and ``rho`` (None unless the coupling uses a rate), in
        this order, the order of mamba-ssm's ``Mamba.__init__``: a seed gives the same
        parameters, and saved optimizer states (which list parameters by position) load."""
        self.discretization = as_discretization(discretization)
        self.backend = backend
        self.x_proj, self.dt_proj, self.A_log, self.D, rho = ssm_parameters(
            d_inner=d_inner, d_state=d_state, dt_rank=dt_rank, init=init,
            uses_rate=self.discretization.uses_rate, device=device, dtype=dtype)
        self.register_parameter("rho", rho)


class SelectiveSSM(SSMParts, nn.Module):
    """Selective state space layer: ``u (B, L, D) -> y (B, L, D)``, one validated
    :func:`~eventssm.selective_scan` on Δ, B, C projected from ``u``. It takes gaps
    (``integration_timesteps``) as they are: it has no time unit (``time_scale``) of its own.

    Args:
        d_inner: channels D.
        d_state: state size N per channel.
        dt_rank: rank of the Δ projection (``"auto"``: ceil(d_inner / 32)).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Δ initialisation as in mamba-ssm.
        discretization: a :class:`~eventssm.Discretization` or an lrnnx scheme string.
        use_fast_path: ``True`` -> ``backend="auto"`` (Triton on CUDA), ``False`` -> ``"torch"``.
        backend: overrides ``use_fast_path``: ``"auto" | "triton" | "torch" | "reference"``.
    """

    def __init__(
        self,
        d_inner: int,
        d_state: int = 16,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        discretization: Discretization | str = "mamba",
        *,
        use_fast_path: bool = True,
        device=None,
        dtype=None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(d_inner, int) or d_inner <= 0:
            raise ValueError(f"d_inner must be a positive int, got {d_inner!r}")
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_inner / 32) if dt_rank == "auto" else int(dt_rank)
        self._init_ssm(d_inner=d_inner, d_state=d_state, dt_rank=self.dt_rank,
                       init=DtInit(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale,
                                   dt_init_floor=dt_init_floor),
                       discretization=discretization, backend=backend_of(use_fast_path, backend),
                       device=device, dtype=dtype)

    def project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``u (B, L, D)`` (or ``(B, D)``) -> raw step δ (same shape), ``B``, ``C`` ``(..., N)``."""
        return project(u, self.x_proj, self.dt_proj, self.d_state)

    def ssm(
        self,
        u: Tensor,
        z: Tensor | None = None,
        integration_timesteps: Tensor | None = None,
        mask: Tensor | None = None,
        initial_state: Tensor | None = None,
        return_last_state: bool = False,
    ):
        """Run the scan on ``u (B, L, D)`` with optional gate ``z (B, L, D)`` and gaps ``(B, L)``.

        ``mask (B, L)`` marks real steps: padded steps get Δ = 0 (and must have u = 0, τ = 0),
        so they leave the state unchanged. The inputs are validated once, by
        :func:`~eventssm.selective_scan`.
        """
        delta, Bm, Cm = self.project(u)
        if mask is not None:
            delta = delta.masked_fill(~mask[..., None], PAD_DELTA)
        A, D, delta_bias, rate = scan_constants(self.A_log, self.D, self.dt_proj.bias, self.rho,
                                                event=integration_timesteps is not None)
        return selective_scan(
            u, delta, A, Bm, Cm, D, z=z, delta_bias=delta_bias, delta_softplus=True,
            integration_timesteps=integration_timesteps, rate=rate,
            discretization=self.discretization, initial_state=initial_state,
            return_last_state=return_last_state, backend=self.backend,
        )

    def forward(self, u: Tensor, integration_timesteps: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """``u (B, L, D)`` -> ``y (B, L, D)``."""
        return self.ssm(u, z=z, integration_timesteps=integration_timesteps)
