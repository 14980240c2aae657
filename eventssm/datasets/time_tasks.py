"""Synthetic classification tasks whose labels depend on the times, not only on the value order.

Two seeded generators, each with a DataModule for the command line
(``experiments/configs/time_frequency.yaml``, ``time_decay.yaml``) and two yardsticks printed by
``experiments/yardsticks.py``: the best classifier that sees only the values in order (no times)
and one that uses the times. The gap between them is what modelling time can win.

* **frequency** (:func:`make_frequency_task`): one channel ``a·sin(2π f t + φ) + noise``; the
  class is the bin of ``f`` (log-spaced bins of ``freq_range``). Each sequence has its own
  sampling rate: gaps are exponential with a mean drawn log-uniformly over ``gap_range`` (a
  decade). The values in order depend on ``f`` only through ``f × mean gap`` (cycles per
  sample), which a decade of sampling rates spreads over all classes, so the value order alone
  leaves the class ambiguous; with the times, ``f`` is a Lomb-Scargle peak away. Lengths are
  drawn independently of everything else, so the number of events says nothing either.
  Time unit: seconds-like, gaps 0.002-0.02 (mean ≈ 0.008).
* **decay** (:func:`make_decay_task`): impulses with amplitudes ``a_i ~ LogNormal(0, 0.5)``
  (the one value channel) arrive at exponential gaps whose mean is drawn per sequence
  log-uniformly over ``gap_range``. A leaky integrator with time constant ``decay`` sums them,
  ``x = Σ_i a_i · exp(-(t_L - t_i) / decay)`` at the last event ``t_L``; the label is
  ``x > threshold``. How much each past impulse still counts depends on the elapsed time, which
  the value order does not carry. Time unit: gaps 20-200 (mean ≈ 80), decay 100.

The generated times start at 0 for each sequence (DESIGN §5) and are real-valued.
"""

from __future__ import annotations

import numpy as np

from .datamodule import EventDataModule
from .table import EventTable

__all__ = ["make_frequency_task", "make_decay_task", "leaky_integral",
           "TimeFrequencyDataModule", "TimeDecayDataModule"]


def _check_range(name: str, r, positive: bool = True) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in r)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (low, high), got {r!r}") from err
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi) or (positive and lo <= 0):
        raise ValueError(f"{name} must satisfy {'0 < ' if positive else ''}low < high, got {r!r}")
    return lo, hi


def _check_lengths(min_len: int, max_len: int, least: int) -> None:
    if not (least <= min_len <= max_len):
        raise ValueError(f"need {least} <= min_len <= max_len, got min_len={min_len}, "
                         f"max_len={max_len}")


def _exp_times(rng: np.random.Generator, n: int, mean_gap: float) -> np.ndarray:
    """``(n,)`` times from 0 with exponential gaps of mean ``mean_gap`` (float64)."""
    return np.concatenate([[0.0], np.cumsum(rng.exponential(mean_gap, n - 1))])


def make_frequency_task(n_sequences: int = 2000, *, num_classes: int = 3,
                        freq_range: tuple[float, float] = (10.0, 25.0),
                        gap_range: tuple[float, float] = (0.002, 0.02), min_len: int = 32,
                        max_len: int = 96, noise: float = 0.1, seed: int = 0) -> EventTable:
    """Sinusoids sampled at per-sequence random rates; the class is the frequency bin.

    Args:
        n_sequences: number of sequences.
        num_classes: frequency bins, log-spaced over ``freq_range``; a sequence's ``f`` is drawn
            log-uniformly from the middle 70 % of its bin (so the classes are well posed).
        freq_range: ``(f_min, f_max)`` in cycles per time unit.
        gap_range: per-sequence mean gap drawn log-uniformly from this range (time units).
        min_len, max_len: each length uniform in ``[min_len, max_len]``, independent of the rest.
        noise: standard deviation of the additive Gaussian noise (amplitude is U(0.5, 1.5)).
        seed: generator seed.

    Returns:
        An :class:`EventTable` with one channel ``"x"``, ``labels`` ``(n,)`` class ids.
    """
    lo, hi = _check_range("freq_range", freq_range)
    g_lo, g_hi = _check_range("gap_range", gap_range)
    _check_lengths(min_len, max_len, 2)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if n_sequences < 1:
        raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n_sequences)
    edges = np.linspace(np.log(lo), np.log(hi), num_classes + 1)
    width = edges[1] - edges[0]
    freq = np.exp(edges[labels] + width * rng.uniform(0.15, 0.85, size=n_sequences))
    mean_gap = np.exp(rng.uniform(np.log(g_lo), np.log(g_hi), size=n_sequences))
    lengths = rng.integers(min_len, max_len + 1, size=n_sequences)
    times, values = [], []
    for i in range(n_sequences):
        t = _exp_times(rng, int(lengths[i]), mean_gap[i])
        amp = rng.uniform(0.5, 1.5)
        phase = rng.uniform(0.0, 2 * np.pi)
        x = amp * np.sin(2 * np.pi * freq[i] * t + phase) + noise * rng.standard_normal(len(t))
        times.append(t)
        values.append(x[:, None].astype(np.float32))
    return EventTable(np.arange(n_sequences), times, values, labels=labels.astype(np.int64),
                      channels=["x"], classes=list(range(num_classes)), task="classification")


def leaky_integral(times: np.ndarray, amplitudes: np.ndarray, decay: float) -> float:
    """``Σ_i a_i · exp(-(t_L - t_i) / decay)``: a leaky integrator read at the last event."""
    times = np.asarray(times, dtype=np.float64)
    a = np.asarray(amplitudes, dtype=np.float64).reshape(len(times))
    return float(np.sum(a * np.exp(-(times[-1] - times) / decay)))


def make_decay_task(n_sequences: int = 2000, *, gap_range: tuple[float, float] = (20.0, 200.0),
                    decay: float = 100.0, threshold: float = 2.85, min_len: int = 16,
                    max_len: int = 64, seed: int = 0) -> EventTable:
    """Impulses at irregular times into a leaky integrator; label = integral above a threshold.

    Args:
        n_sequences: number of sequences.
        gap_range: per-sequence mean gap drawn log-uniformly from this range (time units).
        decay: time constant of the integrator (time units).
        threshold: class 1 when :func:`leaky_integral` ``> threshold``. The default 2.85 is about
            the median for the default settings (balanced classes).
        min_len, max_len: each length uniform in ``[min_len, max_len]``, independent of the rest.
        seed: generator seed.

    Returns:
        An :class:`EventTable` with one channel ``"amplitude"`` (the impulses), ``labels``
        ``(n,)`` in {0, 1}.
    """
    g_lo, g_hi = _check_range("gap_range", gap_range)
    _check_lengths(min_len, max_len, 1)
    if not (np.isfinite(decay) and decay > 0):
        raise ValueError(f"decay must be a positive number, got {decay!r}")
    if n_sequences < 1:
        raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
    rng = np.random.default_rng(seed)
    mean_gap = np.exp(rng.uniform(np.log(g_lo), np.log(g_hi), size=n_sequences))
    lengths = rng.integers(min_len, max_len + 1, size=n_sequences)
    times, values, labels = [], [], []
    for i in range(n_sequences):
        t = _exp_times(rng, int(lengths[i]), mean_gap[i])
        a = rng.lognormal(0.0, 0.5, size=len(t))
        labels.append(int(leaky_integral(t, a, decay) > threshold))
        times.append(t)
        values.append(a[:, None].astype(np.float32))
    return EventTable(np.arange(n_sequences), times, values,
                      labels=np.asarray(labels, dtype=np.int64), channels=["amplitude"],
                      classes=[0, 1], task="classification")


class TimeFrequencyDataModule(EventDataModule):
    """:func:`make_frequency_task` data, split 70/15/15 stratified by class (seeded by ``seed``).

    Args:
        n_sequences, num_classes, freq_range, gap_range, min_len, max_len, noise: generator
            settings (see :func:`make_frequency_task`).
        data_seed: generator seed (``seed`` seeds the split).
        **kwargs: :class:`EventDataModule` options (batch_size, val_fraction, ...).
    """

    def __init__(self, n_sequences: int = 2000, num_classes: int = 3,
                 freq_range: tuple[float, float] = (10.0, 25.0),
                 gap_range: tuple[float, float] = (0.002, 0.02), min_len: int = 32,
                 max_len: int = 96, noise: float = 0.1, data_seed: int = 0, **kwargs):
        kwargs.setdefault("task", "classification")
        super().__init__(None, **kwargs)
        self.gen = dict(n_sequences=n_sequences, num_classes=num_classes,
                        freq_range=tuple(freq_range), gap_range=tuple(gap_range),
                        min_len=min_len, max_len=max_len, noise=noise, seed=data_seed)
        _check_range("freq_range", freq_range)  # fail at construction, not at setup
        _check_range("gap_range", gap_range)

    def load_table(self) -> EventTable:
        return make_frequency_task(**self.gen)


class TimeDecayDataModule(EventDataModule):
    """:func:`make_decay_task` data, split 70/15/15 stratified by class (seeded by ``seed``).

    Args:
        n_sequences, gap_range, decay, threshold, min_len, max_len: generator settings (see
            :func:`make_decay_task`).
        data_seed: generator seed (``seed`` seeds the split).
        **kwargs: :class:`EventDataModule` options (batch_size, val_fraction, ...).
    """

    def __init__(self, n_sequences: int = 2000, gap_range: tuple[float, float] = (20.0, 200.0),
                 decay: float = 100.0, threshold: float = 2.85, min_len: int = 16,
                 max_len: int = 64, data_seed: int = 0, **kwargs):
        kwargs.setdefault("task", "classification")
        super().__init__(None, **kwargs)
        self.gen = dict(n_sequences=n_sequences, gap_range=tuple(gap_range), decay=decay,
                        threshold=threshold, min_len=min_len, max_len=max_len, seed=data_seed)
        _check_range("gap_range", gap_range)

    def load_table(self) -> EventTable:
        return make_decay_task(**self.gen)
