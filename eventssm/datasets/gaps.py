"""Gap statistics of event sequences and the model time unit that follows from them.

The size of a raw gap is an accident of units: the same visits recorded in seconds, hours or
nanoseconds differ by factors of 10^9, and a time-aware discretization (``dtA = τ·r`` or
``Δ·τ``) with a fixed initial rate then either never decays or forgets at once. The DataModules
therefore measure the gaps of their *training* split and, by default, choose the time unit in
which the median positive gap is 1 (``time_scale = 1 / median``): a median gap then decays the
state as much as one ordinary Mamba step at initialisation, whatever unit the data came in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eventssm.time import check_time_scale as positive_time_scale

__all__ = ["GapStats", "check_time_scale", "gap_statistics", "resolve_time_scale"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class GapStats:
    """Gaps between consecutive events of a set of sequences, in the data's own time unit.

    Attributes:
        n_gaps: gaps counted (events minus sequences).
        zero_share: fraction of gaps that are exactly 0 (simultaneous events).
        quantiles: ``{q: value}`` of the *positive* gaps at q = 5, 25, 50, 75, 95 %.
        median: median positive gap (NaN when no gap is positive).
    """

    n_gaps: int
    zero_share: float
    quantiles: dict[float, float]

    @property
    def median(self) -> float:
        return self.quantiles.get(0.5, math.nan)

    def report(self, time_scale: float | None = None) -> str:
        """One line for the log: counts, quantiles and (given) the chosen model time unit."""
        if self.n_gaps == 0 or not self.quantiles:
            return f"gaps: {self.n_gaps} gaps, none positive"
        qs = ", ".join(f"q{int(q * 100)} {v:.4g}" for q, v in self.quantiles.items())
        line = f"gaps of the training split: {self.n_gaps} gaps, {100 * self.zero_share:.1f} % zero; {qs}"
        if time_scale is not None:
            line += f"; model time unit = {1 / time_scale:.4g} data units (time_scale {time_scale:.4g})"
        return line


def gap_statistics(times: Sequence[np.ndarray]) -> GapStats:
    """Statistics of the gaps within each sequence of ``times`` (a list of ``(L_i,)`` arrays of
    non-decreasing times)."""
    gaps = [np.diff(np.asarray(t, dtype=np.float64)) for t in times if len(t) > 1]
    g = np.concatenate(gaps) if gaps else np.zeros(0)
    n = int(g.size)
    pos = g[g > 0]
    zero = float(np.mean(g == 0)) if n else 0.0
    quantiles = {q: float(v) for q, v in zip(_QUANTILES, np.quantile(pos, _QUANTILES))} if pos.size else {}
    return GapStats(n_gaps=n, zero_share=zero, quantiles=quantiles)


def check_time_scale(time_scale: float | str) -> float | str:
    """``time_scale`` as given if it is ``"auto"`` or a positive finite number, else ``ValueError``."""
    if isinstance(time_scale, str) and time_scale == "auto":
        return time_scale
    try:
        return positive_time_scale(time_scale)
    except ValueError:
        raise ValueError(f"time_scale must be 'auto' or a positive finite number, got "
                        f"{type(time_scale).__name__} {time_scale!r}") from None


def resolve_time_scale(time_scale: float | str, stats: GapStats) -> float:
    """The factor that takes the data's gaps to the model's time unit.

    ``"auto"`` -> ``1 / median positive gap`` (1.0 when there is no positive gap: nothing to
    measure); a positive finite number is returned as is.
    """
    if check_time_scale(time_scale) == "auto":
        med = stats.median
        return 1.0 / med if math.isfinite(med) and med > 0 else 1.0
    return float(time_scale)
