"""Per-sequence summary features for the baselines a user tries first (trees on summaries).

Two families, so that a baseline can be run with and without the times:

* :func:`value_features` sees only the **values in order** (no times): length, per-channel value
  statistics, mean/std of |Δv| between consecutive observations, zero-crossing rate around the
  sequence mean, lag-1 autocorrelation, first/last values, the share of events observed.
* :func:`time_features` adds what the **times** tell: duration, gap statistics (quantiles,
  share of zero gaps, last gaps), per channel the value-vs-time slope, the time since the
  channel was last observed, exponentially decayed sums of values and of events at a few time
  scales, and optionally the Lomb-Scargle peak frequency and power.

Both return a float64 ``(n_sequences, n_features)`` array (NaN where a feature is undefined,
e.g. a channel never observed; histogram gradient-boosting handles NaN natively) and a list of
feature names. Only numpy is needed; :func:`lomb_scargle_peak` uses scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .table import EventTable

__all__ = ["value_features", "time_features", "lomb_scargle_peak", "gap_scales",
           "frequency_grid"]


def _channel_value_stats(v: np.ndarray) -> list[float]:
    """Statistics of one channel's observed values in order (``v`` without NaN)."""
    n = len(v)
    if n == 0:
        return [np.nan] * 12
    d = np.diff(v)
    c = v - v.mean()
    zc = float(np.mean(np.sign(c[:-1]) != np.sign(c[1:]))) if n > 1 else np.nan
    ac = np.nan
    if n > 2 and v[:-1].std() > 0 and v[1:].std() > 0:
        ac = float(np.corrcoef(v[:-1], v[1:])[0, 1])
    return [v.mean(), v.std(), v.min(), v.max(), float(np.median(v)),
            np.abs(d).mean() if n > 1 else np.nan, np.abs(d).std() if n > 1 else np.nan,
            zc, ac, v[0], v[-1], v[-3:].mean()]


_VALUE_NAMES = ["mean", "std", "min", "max", "median", "mean_abs_diff", "std_abs_diff",
                "zero_cross_rate", "lag1_autocorr", "first", "last", "last3_mean"]


def value_features(table: EventTable) -> tuple[np.ndarray, list[str]]:
    """Time-free summaries of each sequence's values (and marks) in order.

    Returns:
        ``(X, names)`` with ``X`` of shape ``(n, F)``: the length, then per channel the
        statistics of its observed values in order and the share of events where it was
        observed, then per event type its share of the events.
    """
    rows = []
    for i in range(len(table)):
        f = [float(len(table.times[i]))]
        if table.values is not None:
            vals = table.values[i].astype(np.float64)
            for c in range(vals.shape[1]):
                col = vals[:, c]
                seen = ~np.isnan(col)
                f += _channel_value_stats(col[seen]) + [float(seen.mean())]
        if table.marks is not None and table.num_marks:
            f += list(np.bincount(table.marks[i], minlength=table.num_marks) / len(table.marks[i]))
        rows.append(f)
    names = ["length"]
    for ch in table.channels if table.values is not None else []:
        names += [f"{ch}:{s}" for s in _VALUE_NAMES] + [f"{ch}:observed_share"]
    if table.marks is not None and table.num_marks:
        names += [f"mark{k}:share" for k in range(table.num_marks)]
    return np.asarray(rows, dtype=np.float64), names


def gap_scales(tables: EventTable | Sequence[np.ndarray], factors=(1, 4, 16, 64)) -> list[float]:
    """Time scales ``factor × median positive gap`` (of a training table's times)."""
    times = tables.times if isinstance(tables, EventTable) else tables
    gaps = np.concatenate([np.diff(t) for t in times])
    gaps = gaps[gaps > 0]
    med = float(np.median(gaps)) if len(gaps) else 1.0
    return [med * f for f in factors]


def frequency_grid(table: EventTable, n: int = 400) -> np.ndarray:
    """Log-spaced frequencies from ``0.5 / median duration`` to ``2 / median positive gap``."""
    dur = np.median([t[-1] - t[0] for t in table.times])
    gaps = np.concatenate([np.diff(t) for t in table.times])
    gaps = gaps[gaps > 0]
    lo = 0.5 / dur if dur > 0 else 1e-3
    hi = 2.0 / float(np.median(gaps)) if len(gaps) else 1.0
    return np.exp(np.linspace(np.log(lo), np.log(max(hi, 2 * lo)), n))


def lomb_scargle_peak(t: np.ndarray, v: np.ndarray, freqs: np.ndarray) -> tuple[float, float]:
    """``(log peak frequency, normalised peak power)`` of the Lomb-Scargle periodogram.

    ``freqs`` in cycles per time unit. NaN when fewer than 3 distinct times are observed.
    """
    from scipy.signal import lombscargle

    seen = ~np.isnan(v)
    t, v = np.asarray(t, dtype=np.float64)[seen], np.asarray(v, dtype=np.float64)[seen]
    if len(np.unique(t)) < 3 or v.std() == 0:
        return np.nan, np.nan
    p = lombscargle(t, v - v.mean(), 2 * np.pi * freqs, normalize=True)
    k = int(np.argmax(p))
    return float(np.log(freqs[k])), float(p[k])


def time_features(table: EventTable, scales: Sequence[float],
                  freqs: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Summaries that use the times (add them to :func:`value_features` for a time-aware model).

    Args:
        table: the sequences (raw values: tree models do not need normalisation).
        scales: time scales (in the table's unit) of the exponentially decayed sums
            ``Σ_i v_i exp(-(t_L - t_i)/s)`` and ``Σ_i exp(-(t_L - t_i)/s)`` read at the last event
            ``t_L``; take them from the training split (:func:`gap_scales`).
        freqs: frequency grid for :func:`lomb_scargle_peak` per channel (None: skipped).

    Returns:
        ``(X, names)`` with ``X`` of shape ``(n, F)``.
    """
    rows = []
    for i in range(len(table)):
        t = table.times[i]
        g = np.diff(t)
        f = [t[-1] - t[0]]
        if len(g):
            f += [g.mean(), *np.quantile(g, [0.1, 0.5, 0.9]), g.std(), float(np.mean(g == 0)),
                  g[-1], g[-5:].mean()]
        else:
            f += [np.nan] * 8
        w = [np.exp(-(t[-1] - t) / s) for s in scales]
        f += [float(x.sum()) for x in w]
        if table.values is not None:
            vals = table.values[i].astype(np.float64)
            for c in range(vals.shape[1]):
                col = vals[:, c]
                seen = ~np.isnan(col)
                ts, vs = t[seen], col[seen]
                slope = np.nan
                if len(np.unique(ts)) > 1:
                    slope = float(np.polyfit(ts - ts.mean(), vs, 1)[0])
                since = float(t[-1] - ts[-1]) if len(ts) else np.nan
                f += [slope, since] + [float(np.sum(np.where(seen, col, 0.0) * x)) for x in w]
                if freqs is not None:
                    f += list(lomb_scargle_peak(t, col, freqs))
        rows.append(f)
    names = ["duration", "gap_mean", "gap_q10", "gap_q50", "gap_q90", "gap_std", "gap_zero_share",
             "gap_last", "gap_last5_mean"] + [f"events_decayed@{s:.3g}" for s in scales]
    for ch in table.channels if table.values is not None else []:
        names += [f"{ch}:slope", f"{ch}:time_since_last"]
        names += [f"{ch}:decayed_sum@{s:.3g}" for s in scales]
        if freqs is not None:
            names += [f"{ch}:ls_log_freq", f"{ch}:ls_power"]
    return np.asarray(rows, dtype=np.float64), names
