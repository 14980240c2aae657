"""SelectiveSSM: the input-dependent projections to (Δ, B, C) around one selective scan.

``SelectiveSSM`` owns the parameters of the state space part of a Mamba block with mamba-ssm's
names (``x_proj``, ``dt_proj``, ``A_log``, ``D``) plus, for couplings that need it, the
per-channel rate parameter ``rho`` (``r = softplus(ρ)``, one ``(d_inner,)`` tensor). ``Mamba``
subclasses it so that checkpoints keep mamba-ssm's flat parameter names.

Legend: batch ``B``, steps ``L``, channels ``D = d_inner``, state ``N = d_state``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from eventssm.discretization import Discretization, as_discretization
from eventssm.scan import selective_scan

__all__ = ["SelectiveSSM", "PAD_DELTA"]

# Raw step δ written at padded positions: softplus(PAD_DELTA + bias) is exactly 0 in fp32 and
# fp64, so Ā = 1 and B̄ = 0 there (dirac's B̄ = B meets u = 0): the state passes through.
PAD_DELTA = -1.0e4


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class SelectiveSSM(nn.Module):
    """Selective state space layer: ``u (B, L, D) -> y (B, L, D)``.

    Args:
        d_inner: channels D.
        d_state: state size N per channel.
        dt_rank: rank of the Δ projection (``"auto"``: ceil(d_inner / expand / 16) as in mamba-ssm,
            computed by the caller; here ``"auto"`` means ceil(d_inner / 32)).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Δ initialisation as in mamba-ssm.
        discretization: a :class:`~eventssm.Discretization` or an lrnnx scheme string.
        time_scale: factor applied to gaps computed from ``timestamps`` (unit conversion).
        use_fast_path: ``True`` -> ``backend="auto"`` (Triton on CUDA), ``False`` -> ``"torch"``.
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
        time_scale: float = 1.0,
        use_fast_path: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        for name, v in (("d_inner", d_inner), ("d_state", d_state)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_inner / 32) if dt_rank == "auto" else int(dt_rank)
        self.discretization = as_discretization(discretization)
        self.time_scale = float(time_scale)
        self.backend = "auto" if use_fast_path else "torch"

        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False, **fk)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **fk)
        # Δ init (mamba-ssm): weight keeps the projection's output variance at dt_scale, bias is
        # softplus^-1 of a log-uniform step in [dt_min, dt_max].
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            self.dt_proj.bias.copy_(_inverse_softplus(self._log_uniform(d_inner, dt_min, dt_max, dt_init_floor, fk)))
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
        # S4D-real init: A[d, n] = -(n + 1).
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(d_inner, device=device))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        if self.discretization.uses_rate:
            # r = softplus(ρ) starts like Δ (log-uniform in [dt_min, dt_max]) so that τ ~ 1 in the
            # configured time unit decays the state as much as one ordinary Mamba step.
            r0 = self._log_uniform(d_inner, dt_min, dt_max, dt_init_floor, fk)
            self.rho = nn.Parameter(_inverse_softplus(r0))
            self.rho._no_weight_decay = True  # type: ignore[attr-defined]
        else:
            self.register_parameter("rho", None)

    @staticmethod
    def _log_uniform(n, lo, hi, floor, fk) -> Tensor:
        u = torch.rand(n, device=fk["device"], dtype=torch.float32)
        return torch.exp(u * (math.log(hi) - math.log(lo)) + math.log(lo)).clamp(min=floor)

    @property
    def rate(self) -> Tensor | None:
        """The positive per-channel rate r = softplus(ρ), ``(D,)``, or None."""
        return None if self.rho is None else F.softplus(self.rho.float())

    def A(self) -> Tensor:
        """``(D, N)`` negative real state matrix diagonal."""
        return -torch.exp(self.A_log.float())

    def project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``u (B, L, D)`` (or ``(B, D)``) -> raw step δ (same shape), ``B``, ``C`` ``(..., N)``."""
        x_dbl = self.x_proj(u)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # The bias is added inside the scan (delta_bias) so it sits in fp32 next to the softplus.
        delta = F.linear(dt, self.dt_proj.weight)
        return delta, Bm, Cm

    def ssm(
        self,
        u: Tensor,
        z: Tensor | None = None,
        integration_timesteps: Tensor | None = None,
        mask: Tensor | None = None,
        initial_state: Tensor | None = None,
        return_last_state: bool = False,
        check_values: bool = True,
    ):
        """Run the scan on ``u (B, L, D)`` with optional gate ``z`` and gaps ``(B, L)``.

        ``mask (B, L)`` marks real steps: padded steps get Δ = 0 (and must have u = 0, τ = 0),
        so they leave the state unchanged. ``check_values=False`` skips the scan's τ value check
        (a host sync) for gaps the caller has validated.
        """
        delta, Bm, Cm = self.project(u)
        if mask is not None:
            delta = delta.masked_fill(~mask[..., None], PAD_DELTA)
        rate = self.rate
        out = selective_scan(
            u, delta, self.A(), Bm, Cm, self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            integration_timesteps=integration_timesteps, rate=rate,
            discretization=self.discretization, initial_state=initial_state,
            return_last_state=return_last_state, backend=self.backend, check_values=check_values,
        )
        if rate is not None and integration_timesteps is None and torch.is_grad_enabled():
            # Without timesteps the rate does not enter (standard fallback). Give it an exact zero
            # gradient so that DDP does not stop on an unused parameter.
            y = out[0] if return_last_state else out
            y = y + (0.0 * rate.sum()).to(y.dtype)
            out = (y, out[1]) if return_last_state else y
        return out

    def forward(self, u: Tensor, integration_timesteps: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """``u (B, L, D)`` -> ``y (B, L, D)``."""
        return self.ssm(u, z=z, integration_timesteps=integration_timesteps)
