"""Seeded marked temporal point processes for next-event prediction.

* Poisson: independent homogeneous processes, one rate per mark.
* Hawkes (exponential kernel), simulated by Ogata's thinning::

      λ_k(t) = μ_k + Σ_{t_i < t} α[k, m_i] · β · exp(-β (t - t_i))

  Between events every λ_k only decays, so the total intensity just after the last event bounds
  it until the next one; a candidate time drawn at that bound is accepted with probability
  ``λ(t) / bound`` and its mark drawn in proportion to ``λ_k(t)``. The process is stationary when
  the spectral radius of ``α`` is < 1 (checked).

Sequences are marks only (no values); the task is to predict, at each event, the next mark
(and the data also carry the gap to it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .datamodule import EventDataModule
from .table import EventTable

__all__ = ["simulate_poisson", "simulate_hawkes", "make_point_processes", "PointProcessDataModule"]


def simulate_poisson(rates, horizon: float, rng: np.random.Generator,
                     max_events: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Event times in ``[0, horizon)`` and marks of independent Poisson processes."""
    rates = np.asarray(rates, dtype=np.float64)
    if (rates <= 0).any():
        raise ValueError(f"rates must be positive, got {rates}")
    total = rates.sum()
    n = rng.poisson(total * horizon)
    t = np.sort(rng.uniform(0, horizon, size=n))
    m = rng.choice(len(rates), size=n, p=rates / total)
    if max_events is not None:
        t, m = t[:max_events], m[:max_events]
    return t, m.astype(np.int64)


def simulate_hawkes(mu, alpha, beta: float, horizon: float, rng: np.random.Generator,
                    max_events: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multivariate Hawkes process with exponential kernel by Ogata thinning."""
    mu = np.asarray(mu, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    K = len(mu)
    if alpha.shape != (K, K):
        raise ValueError(f"alpha must have shape ({K}, {K}), got {alpha.shape}")
    if (mu <= 0).any() or (alpha < 0).any() or beta <= 0:
        raise ValueError("need mu > 0, alpha >= 0, beta > 0")
    if np.max(np.abs(np.linalg.eigvals(alpha))) >= 1:
        raise ValueError("alpha's spectral radius must be < 1 for a stationary Hawkes process")
    t = 0.0
    excite = np.zeros(K)  # Σ α[k, m_i] β exp(-β (t - t_i)) at the current time
    times, marks = [], []
    while True:
        bound = mu.sum() + excite.sum()
        w = rng.exponential(1.0 / bound)
        t += w
        if t >= horizon:
            break
        excite *= np.exp(-beta * w)
        lam = mu + excite
        if rng.uniform() * bound <= lam.sum():
            k = int(rng.choice(K, p=lam / lam.sum()))
            times.append(t)
            marks.append(k)
            excite += alpha[:, k] * beta
            if max_events is not None and len(times) >= max_events:
                break
    return np.asarray(times), np.asarray(marks, dtype=np.int64)


def make_point_processes(n_sequences: int = 256, *, process: str = "hawkes", num_marks: int = 2,
                         horizon: float = 50.0, max_events: int = 128, seed: int = 0) -> EventTable:
    """A table of marked point-process sequences (times relative to the first event)."""
    rng = np.random.default_rng(seed)
    K = num_marks
    if process == "poisson":
        rates = np.linspace(0.5, 1.5, K)
        sim = lambda: simulate_poisson(rates, horizon, rng, max_events)
    elif process == "hawkes":
        mu = np.full(K, 0.2)
        # Marks excite the next mark cyclically: the next type is predictable from the last.
        alpha = np.full((K, K), 0.05)
        for k in range(K):
            alpha[(k + 1) % K, k] = 0.7
        alpha *= 0.9 / max(np.max(np.abs(np.linalg.eigvals(alpha))), 0.9)
        sim = lambda: simulate_hawkes(mu, alpha, 2.0, horizon, rng, max_events)
    else:
        raise ValueError(f"process must be 'poisson' or 'hawkes', got {process!r}")
    ids, times, marks = [], [], []
    while len(ids) < n_sequences:
        t, m = sim()
        if len(t) < 2:
            continue  # next-event prediction needs at least one (event, next event) pair
        ids.append(len(ids))
        times.append(t - t[0])
        marks.append(m)
    return EventTable(ids, times, None, marks, None, num_marks=K, task="none")


class PointProcessDataModule(EventDataModule):
    """Next-event prediction on simulated Poisson or Hawkes sequences (split 70/15/15).

    Args:
        process: ``"hawkes"`` or ``"poisson"``.
        n_sequences, num_marks, horizon, max_events: simulation settings.
        data_seed: simulation seed (``seed`` seeds the split).
        target: ``"next_event"`` (the only target of marks-only sequences).
        **kwargs: :class:`EventDataModule` options (batch_size, ...).
    """

    def __init__(self, process: Literal["hawkes", "poisson"] = "hawkes", n_sequences: int = 256,
                 num_marks: int = 2, horizon: float = 50.0, max_events: int = 128,
                 data_seed: int = 0,
                 target: Literal["next_event"] = "next_event", **kwargs):
        super().__init__(None, task="none", target=target, **kwargs)
        self.sim = dict(n_sequences=n_sequences, process=process, num_marks=num_marks,
                        horizon=horizon, max_events=max_events, seed=data_seed)

    def load_table(self) -> EventTable:
        return make_point_processes(**self.sim)
