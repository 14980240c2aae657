"""Integer codes the kernels take for a discretization (DESIGN §3): a scheme and a time coupling.

The kernels know nothing of :mod:`eventssm.discretization`; the core maps its classes onto these
numbers (``eventssm.discretization.SCHEME_IDS`` / ``COUPLING_IDS`` equal them: a test checks).
Each code is a ``tl.constexpr`` switch in the kernels, so every combination compiles to
straight-line code.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "SCHEME_MAMBA", "SCHEME_ZOH", "SCHEME_BILINEAR", "SCHEME_DIRAC", "SCHEMES",
    "COUPLING_STANDARD", "COUPLING_ASYMMETRIC", "COUPLING_SCALED", "COUPLING_ADDITIVE", "COUPLINGS",
    "RATE_COUPLINGS",
]

#: Ā = exp(dtA·A), B̄ = dtB·B (mamba-ssm's default)
SCHEME_MAMBA: Final = 0
#: Ā = exp(dtA·A), B̄ = (exp(dtB·A) − 1)/A · B (exact zero-order hold)
SCHEME_ZOH: Final = 1
#: Ā = (1 + dtA·A/2)/(1 − dtA·A/2), B̄ = dtB/(1 − dtB·A/2) · B
SCHEME_BILINEAR: Final = 2
#: Ā = exp(dtA·A), B̄ = B (the input as an impulse)
SCHEME_DIRAC: Final = 3
SCHEMES: Final = {"mamba": SCHEME_MAMBA, "zoh": SCHEME_ZOH, "bilinear": SCHEME_BILINEAR,
                  "dirac": SCHEME_DIRAC}

#: dtA = dtB = Δ (no τ enters; also the effective coupling of any other when no τ is given)
COUPLING_STANDARD: Final = 0
#: dtA = τ·r[d] (r the positive per-channel rate), dtB = Δ
COUPLING_ASYMMETRIC: Final = 1
#: dtA = Δ·τ, dtB = Δ
COUPLING_SCALED: Final = 2
#: dtA = Δ + τ·r[d], dtB = Δ (input-selective forgetting plus decay with elapsed time)
COUPLING_ADDITIVE: Final = 3
COUPLINGS: Final = {"standard": COUPLING_STANDARD, "asymmetric": COUPLING_ASYMMETRIC,
                    "scaled": COUPLING_SCALED, "additive": COUPLING_ADDITIVE}
#: couplings whose dtA uses the per-channel rate r (its load and gradient)
RATE_COUPLINGS: Final = (COUPLING_ASYMMETRIC, COUPLING_ADDITIVE)
