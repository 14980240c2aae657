"""Discretizations = scheme x time coupling (DESIGN §3).

A discretization turns the continuous parameters of one channel (``A`` and ``B``) and the step
sizes of one step into the discrete transition ``h[l] = Ā ⊙ h[l-1] + B̄ · u[l]``. It has two
independent parts:

* the **time coupling** (a class) decides the step sizes ``(dtA, dtB)`` from Mamba's learned
  step ``Δ`` and the data's integration timestep ``τ``:

  ============  ===============  =====
  coupling      dtA              dtB
  ============  ===============  =====
  Standard      Δ                Δ
  Asymmetric    τ · r[d]         Δ        (r = softplus(ρ), a learned per-channel rate)
  Scaled        Δ · τ            Δ
  Additive      Δ + τ · r[d]     Δ        (input-selective forgetting plus decay with time)
  ============  ===============  =====

  Asymmetric, Scaled and Additive fall back to Standard when no ``τ`` is given (as lrnnx does).

* the **scheme** (a string held by the coupling) decides ``(Ā, B̄)`` from ``(dtA, dtB, A, B)``:
  ``mamba`` (Ā = exp(dtA·A), B̄ = dtB·B), ``zoh`` (B̄ = expm1(dtB·A)/A · B), ``bilinear``
  (Ā = (1 + dtA·A/2)/(1 − dtA·A/2), B̄ = dtB/(1 − dtB·A/2) · B) and ``dirac`` (B̄ = B).

Discretizations are stateless configuration objects (not ``nn.Module``): the learned rate ρ
lives in the module that owns the channels (``Mamba.rate_log``), so one instance can be shared
by every layer and swapped from a LightningCLI config by ``class_path``. The same formulas are
used by the reference scan, the CPU path, ``Mamba.step`` and (as constexpr switches) the Triton
kernels; ``SCHEME_IDS``/``COUPLING_IDS`` are the integer codes the kernels take.
"""

from __future__ import annotations

import abc
from typing import Final

import torch
from torch import Tensor

__all__ = [
    "SCHEMES",
    "SCHEME_IDS",
    "COUPLING_IDS",
    "Discretization",
    "Standard",
    "Asymmetric",
    "Scaled",
    "Additive",
    "as_discretization",
    "discretize_A",
    "discretize_B",
]

SCHEMES: Final = ("mamba", "zoh", "bilinear", "dirac")
SCHEME_IDS: Final = {name: i for i, name in enumerate(SCHEMES)}
COUPLING_IDS: Final = {"standard": 0, "asymmetric": 1, "scaled": 2, "additive": 3}

# Below this |dtB·A| the ZOH input coefficient expm1(x)/x · dtB is replaced by its Taylor series
# dtB·(1 + x/2 + x²/6): expm1(x)/x loses digits to cancellation only in float arithmetic of x
# itself, but dividing by A (which may be tiny) must be avoided as well.
_ZOH_SERIES_BELOW: Final = 1e-4


def discretize_A(scheme: str, dtA: Tensor, A: Tensor) -> Tensor:
    """Ā for step sizes ``dtA (..., D, 1)`` and ``A (D, N)`` -> ``(..., D, N)``."""
    x = dtA * A
    if scheme == "bilinear":
        # (1 + x/2)/(1 − x/2) written as 2/(1 − x/2) − 1 (as the Triton kernels do): autograd
        # then gives dĀ/dx = 1/(1 − x/2)² as one product. Through the quotient it sums two
        # terms that nearly cancel at large |x|, losing ~|x|·eps (1e-4 at τ·|A| = 1e4 in fp32).
        return 2 / (1 - 0.5 * x) - 1
    return torch.exp(x)  # mamba, zoh, dirac


class _BilinearInput(torch.autograd.Function):
    """k = dtB / (1 − dtB·A/2) with closed-form derivatives ∂k/∂dtB = 1/(1 − dtB·A/2)² and
    ∂k/∂A = k²/2 (autograd of the quotient sums 1/w and dtB·A/(2w²), which nearly cancel at
    large |dtB·A|). ``dtB`` and ``A`` broadcast against each other."""

    @staticmethod
    def forward(ctx, dtB: Tensor, A: Tensor) -> Tensor:
        ctx.save_for_backward(dtB, A)
        return dtB / (1 - 0.5 * (dtB * A))

    @staticmethod
    def backward(ctx, g: Tensor):
        dtB, A = ctx.saved_tensors
        r = 1 / (1 - 0.5 * (dtB * A))  # written with differentiable ops: double backward works
        g_dtB = (g * r * r).sum_to_size(dtB.shape) if ctx.needs_input_grad[0] else None
        g_A = (g * (0.5 * (dtB * r) ** 2)).sum_to_size(A.shape) if ctx.needs_input_grad[1] else None
        return g_dtB, g_A


def discretize_B(scheme: str, dtB: Tensor, A: Tensor) -> Tensor:
    """The factor ``k`` with ``B̄ = k · B``: ``dtB (..., D, 1)``, ``A (D, N)`` -> broadcastable.

    ``mamba`` returns ``dtB`` itself (shape ``(..., D, 1)``) and ``dirac`` a scalar one, so that
    callers only broadcast; ``zoh`` and ``bilinear`` return ``(..., D, N)``.
    """
    if scheme == "mamba":
        return dtB
    if scheme == "dirac":
        return torch.ones_like(dtB)
    x = dtB * A
    if scheme == "bilinear":
        return _BilinearInput.apply(dtB, A)
    if scheme == "zoh":
        # (exp(x) - 1)/A = dtB · expm1(x)/x; the quotient form is exact for |x| large and the
        # series keeps x -> 0 (dtB -> 0 or A -> 0) finite and accurate.
        small = x.abs() < _ZOH_SERIES_BELOW
        safe_x = torch.where(small, torch.ones_like(x), x)
        ratio = torch.where(small, 1 + x * (0.5 + x / 6), torch.expm1(safe_x) / safe_x)
        return dtB * ratio
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")


class Discretization(abc.ABC):
    """Abstract base: a time coupling with a scheme. Subclasses are final.

    Args:
        scheme: ``"mamba"`` (default), ``"zoh"``, ``"bilinear"`` or ``"dirac"``.
    """

    #: name of the coupling, a key of ``COUPLING_IDS``
    coupling: str = ""
    #: whether the coupling needs the per-channel rate r (a learned parameter of the module)
    uses_rate: bool = False

    def __init__(self, scheme: str = "mamba") -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        self.scheme = scheme

    @abc.abstractmethod
    def step_sizes(self, delta: Tensor, tau: Tensor | None, rate: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(dtA, dtB)`` from ``delta (..., D)``, ``tau (...)`` or None, ``rate (D,)`` or None."""

    def coefficients(
        self, delta: Tensor, tau: Tensor | None, rate: Tensor | None, A: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(Ā (..., D, N), k)`` where ``B̄ = k · B`` (``k`` broadcastable to ``(..., D, N)``)."""
        dtA, dtB = self.step_sizes(delta, tau, rate)
        return discretize_A(self.scheme, dtA[..., None], A), discretize_B(self.scheme, dtB[..., None], A)

    def event_mode(self, tau: Tensor | None) -> bool:
        """Whether ``tau`` enters the step sizes (False for Standard or when ``tau`` is None)."""
        return tau is not None and self.coupling != "standard"

    @property
    def scheme_id(self) -> int:
        return SCHEME_IDS[self.scheme]

    @property
    def coupling_id(self) -> int:
        return COUPLING_IDS[self.coupling]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scheme={self.scheme!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.scheme == other.scheme  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.scheme))


class Standard(Discretization):
    """Mamba's coupling: ``dtA = dtB = Δ``; timesteps are ignored."""

    coupling = "standard"

    def step_sizes(self, delta, tau, rate):
        return delta, delta


def _required_rate(disc: Discretization, rate):
    """``rate``, which a coupling with ``uses_rate`` needs whenever timesteps are given."""
    if rate is None:
        raise ValueError(f"rate is required by the {type(disc).__name__} coupling when timesteps "
                         "are given")
    return rate


class Asymmetric(Discretization):
    """lrnnx/STREAM coupling: ``dtA = τ · r[d]`` (decay driven by elapsed time), ``dtB = Δ``.

    Falls back to Standard when no ``τ`` is given.
    """

    coupling = "asymmetric"
    uses_rate = True

    def step_sizes(self, delta, tau, rate):
        if tau is None:
            return delta, delta
        return tau[..., None] * _required_rate(self, rate), delta


class Scaled(Discretization):
    """Event-SSM/S5 coupling: ``dtA = Δ · τ`` (learned step × observed gap), ``dtB = Δ``.

    Falls back to Standard when no ``τ`` is given.
    """

    coupling = "scaled"

    def step_sizes(self, delta, tau, rate):
        if tau is None:
            return delta, delta
        return delta * tau[..., None], delta


class Additive(Discretization):
    """Selective and time-driven decay: ``dtA = Δ + τ · r[d]``, ``dtB = Δ``.

    The state forgets by Mamba's input-selected step Δ (what the event says: "reset now") *plus*
    by the elapsed time at a learned per-channel rate r (what the clock says). Asymmetric keeps
    only the second part and loses Mamba's selectivity; Scaled multiplies the two, so a tiny Δ
    shuts the clock off and a raw gap's unit scales everything. With τ in the data's median-gap
    unit (the DataModules' ``time_scale="auto"``) this coupling gave the best accuracy of every
    coupling in ``experiments/probe_time.py`` (see the "which discretization" page). Falls back
    to Standard when no ``τ`` is given.
    """

    coupling = "additive"
    uses_rate = True

    def step_sizes(self, delta, tau, rate):
        if tau is None:
            return delta, delta
        return delta + tau[..., None] * _required_rate(self, rate), delta


def as_discretization(value: Discretization | str) -> Discretization:
    """Accept a Discretization or an lrnnx scheme string.

    As in lrnnx, a string selects the scheme with the asymmetric coupling, which is the standard
    Mamba rule whenever no timesteps are passed.
    """
    if isinstance(value, Discretization):
        return value
    if isinstance(value, str):
        if value not in SCHEMES:
            raise ValueError(f"discretization must be a Discretization or one of {SCHEMES}, got {value!r}")
        return Asymmetric(scheme=value)
    raise ValueError(
        f"discretization must be a Discretization instance or a scheme string, got {type(value).__name__}"
    )
