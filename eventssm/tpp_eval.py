"""Multi-step evaluation of a temporal point process: from a history, sample ``N`` futures and
score them against the true next ``k`` events.

Legend: histories ``M`` (a sequence cut after its first ``c`` events, several cuts a sequence),
sampled futures per history ``S``, steps ``k``, event types ``K``.

Per step ``j = 1..k``, over the ``M`` histories with cut time ``t_c`` (the history's last event):

* ``time_rmse[j]``: RMSE of the ``j``-th event's time after the cut, predicted by the mean over
  the ``S`` futures of their ``j``-th times, ``sqrt(mean_M (mean_S t̂_j - t_j)²)``;
* ``gap_rmse[j]``: the same for the ``j``-th gap (``t_j - t_{j-1}``, ``t_0 = t_c``), the quantity
  EasyTPP's multi-step prediction outputs;
* ``type_acc[j]``: accuracy of the ``j``-th type, predicted by the most frequent type among the
  ``S`` futures' ``j``-th events (ties: the smallest type).

And over whole futures, the optimal-transport distance (OTD) of Mei, Qin & Eisner (2019,
"Imputing missing events in continuous-time event streams", §5) between two sequences ``s, s'``
of marked events::

    D(s, s') = min over partial matchings π of events of the same type:
                   Σ_{(e, e') ∈ π} |t_e - t_e'|  +  C · (#events of s and of s' left unmatched)

with deletion and insertion cost ``C`` (data time units: moving an event by more than ``2C`` costs
more than deleting it and inserting another). Types never match each other, so ``D`` is a sum
over types; within a type an optimal matching does not cross (uncrossing two matched pairs never
increases ``Σ|t - t'|`` on a line), so each type is an edit-distance recursion over its sorted
times, ``O(n m)`` (:func:`otd`, checked against brute force over all matchings in
``tests/test_tpp_eval.py``). ``otd`` is the mean over histories of the mean over the ``S``
sampled futures of ``D(future, truth)`` (the expected distance under the model); ``otd_point``
the distance of the point prediction (mean times, most frequent types) to the truth.

This module is core: it imports torch and numpy only (no Lightning). The model is anything with
:meth:`eventssm.tasks.EventTPP.sample_futures`' signature.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["multistep_histories", "sample_multistep", "yardstick_futures", "score_futures",
           "evaluate_multistep", "otd", "YARDSTICKS"]

YARDSTICKS = ("last_gap", "mean_gap")


def multistep_histories(times, marks, k: int, n_cuts: int = 1, min_history: int = 2) -> dict:
    """Histories and their true next ``k`` events, cut from whole sequences.

    A sequence of ``L`` events is cut after ``c`` events for ``c`` in ``n_cuts`` evenly spaced
    values of ``[min_history, L - k]`` (rounded, repeats dropped); ``n_cuts = 1`` takes the last
    cut, ``c = L - k`` (its last ``k`` events are the future, as in EasyTPP). Sequences shorter
    than ``min_history + k`` give no history.

    Args:
        times: sequences of event times, each ``(L_i,)`` non-decreasing (data time units).
        marks: their event types, each ``(L_i,)`` ints in ``[0, K)``.
        k: events scored after each cut (``>= 1``).
        n_cuts: cuts per sequence (``>= 1``).
        min_history: events of the shortest history (``>= 1``; the yardsticks need 2).

    Returns:
        ``{"timestamps" (M, L) float64, "marks" (M, L) long, "lengths" (M,)}`` (right-padded,
        padding repeats the last time), ``"future_times" (M, k) float64``, ``"future_marks"
        (M, k) long``, ``"t_cut" (M,)`` the time of each history's last event, ``"seq" (M,)`` and
        ``"cut" (M,)`` (the sequence and the history's length).

    Raises:
        ValueError: bad ``k``, ``n_cuts`` or ``min_history``, ``times`` and ``marks`` of
            different lengths, or no sequence long enough.
    """
    for name, v, lo in (("k", k, 1), ("n_cuts", n_cuts, 1), ("min_history", min_history, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if len(times) != len(marks):
        raise ValueError(f"times and marks must hold as many sequences, got {len(times)} and {len(marks)}")
    rows = []
    for i, (t, m) in enumerate(zip(times, marks)):
        t, m = np.asarray(t, dtype=np.float64), np.asarray(m, dtype=np.int64)
        if t.shape != m.shape or t.ndim != 1:
            raise ValueError(f"sequence {i}: times {t.shape} and marks {m.shape} must be equal 1-D shapes")
        hi = len(t) - k
        if hi < min_history:
            continue
        cuts = [hi] if n_cuts == 1 else np.unique(np.round(np.linspace(min_history, hi, n_cuts)).astype(int))
        rows += [(i, int(c), t, m) for c in cuts]
    if not rows:
        raise ValueError(f"no sequence has min_history + k = {min_history + k} events; lower k or min_history")
    M, L = len(rows), max(c for _, c, _, _ in rows)
    ts = np.zeros((M, L))
    mk = np.zeros((M, L), dtype=np.int64)
    ft, fm = np.zeros((M, k)), np.zeros((M, k), dtype=np.int64)
    for r, (_, c, t, m) in enumerate(rows):
        ts[r, :c], ts[r, c:], mk[r, :c] = t[:c], t[c - 1], m[:c]
        ft[r], fm[r] = t[c:c + k], m[c:c + k]
    lengths = torch.tensor([c for _, c, _, _ in rows])
    return {"timestamps": torch.from_numpy(ts), "marks": torch.from_numpy(mk), "lengths": lengths,
            "future_times": torch.from_numpy(ft), "future_marks": torch.from_numpy(fm),
            "t_cut": torch.from_numpy(ts[np.arange(M), lengths.numpy() - 1].copy()),
            "seq": torch.tensor([i for i, _, _, _ in rows]), "cut": lengths.clone()}


@torch.no_grad()
def sample_multistep(model, hist: dict, n_samples: int, batch_size: int = 64,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``n_samples`` futures of ``k`` events after each history, with the model's sampler.

    Args:
        model: has ``sample_futures(batch, horizon, n_samples, max_events, generator)`` returning
            ``{"times", "marks", "mask"}``, each ``(B, S, E)`` (:class:`eventssm.tasks.EventTPP`);
            put in eval mode for the draw (its mode is restored after).
        hist: from :func:`multistep_histories` (``k`` is its futures' length).
        n_samples: futures per history ``S``.
        batch_size: histories per call of the sampler (rows: ``batch_size · S``).
        generator: the sampler's random stream.

    Returns:
        ``(times (M, S, k) float64 absolute, marks (M, S, k) long)``.

    Raises:
        ValueError: ``n_samples`` or ``batch_size`` below 1; RuntimeError: a future with fewer
            than ``k`` events (the horizon is infinite, so only a non-finite gap stops one).
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    k = hist["future_times"].shape[1]
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    dev = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
    out_t, out_m = [], []
    try:
        for lo in range(0, len(hist["lengths"]), batch_size):
            sl = slice(lo, lo + batch_size)
            lengths = hist["lengths"][sl]
            Lb = int(lengths.max())
            batch = {"timestamps": hist["timestamps"][sl, :Lb].to(dev),
                     "marks": hist["marks"][sl, :Lb].to(dev), "lengths": lengths.to(dev)}
            fut = model.sample_futures(batch, horizon=math.inf, n_samples=n_samples, max_events=k,
                                       generator=generator)
            if not bool(fut["mask"].all()):
                raise RuntimeError("the sampler stopped a future before k events with an infinite "
                                   "horizon: a non-finite sampled gap")
            out_t.append(fut["times"].cpu().double())
            out_m.append(fut["marks"].cpu().long())
    finally:
        if was_training:
            model.train()
    return torch.cat(out_t), torch.cat(out_m)


def yardstick_futures(hist: dict, kind: str) -> tuple[Tensor, Tensor]:
    """A point prediction of the next ``k`` events from the history alone, as one future.

    ``"last_gap"``: every gap is the history's last gap; ``"mean_gap"``: every gap is the
    history's mean gap ``(t_last - t_first) / (n - 1)``. Both predict every type as the history's
    most frequent one (ties: the smallest type).

    Returns:
        ``(times (M, 1, k) float64, marks (M, 1, k) long)``.

    Raises:
        ValueError: an unknown ``kind``, or a history of one event (no gap).
    """
    if kind not in YARDSTICKS:
        raise ValueError(f"kind must be one of {YARDSTICKS}, got {kind!r}")
    lengths, ts, mk = hist["lengths"], hist["timestamps"], hist["marks"]
    if bool((lengths < 2).any()):
        raise ValueError("yardstick_futures needs histories of >= 2 events (min_history=2)")
    M, k = hist["future_times"].shape
    rows = torch.arange(M)
    t_last = ts[rows, lengths - 1]
    gap = (t_last - ts[rows, lengths - 2] if kind == "last_gap"
           else (t_last - ts[:, 0]) / (lengths - 1).double())
    times = t_last[:, None] + gap[:, None] * torch.arange(1, k + 1, dtype=torch.float64)
    real = torch.arange(ts.shape[1])[None] < lengths[:, None]
    K = int(mk.max()) + 1
    counts = torch.zeros(M, K, dtype=torch.long).scatter_add_(1, mk, real.long())
    mode = counts.argmax(1)  # the first maximum: the smallest of tied types
    return times[:, None], mode[:, None, None].expand(M, 1, k).clone()


def otd(times_a: Tensor, marks_a: Tensor, times_b: Tensor, marks_b: Tensor, cost: float,
        mask_a: Tensor | None = None, mask_b: Tensor | None = None) -> Tensor:
    """The optimal-transport distance of Mei et al. (2019) between marked sequences (module
    docstring), batched.

    Args:
        times_a, marks_a: ``(..., n)`` events of the first sequences (any order).
        times_b, marks_b: ``(..., m)`` events of the second (broadcast against the first's
            leading dims).
        cost: ``C > 0``, deleting or inserting one event (data time units).
        mask_a, mask_b: ``(..., n)``, ``(..., m)`` bool, the real events (None: all).

    Returns:
        ``(...)`` float64 distances.
    """
    if not (cost > 0 and math.isfinite(cost)):
        raise ValueError(f"cost must be finite and > 0, got {cost!r}")
    times_a, times_b = times_a.double(), times_b.double()
    lead = torch.broadcast_shapes(times_a.shape[:-1], times_b.shape[:-1])
    ta, tb = times_a.expand(*lead, -1), times_b.expand(*lead, -1)
    ma, mb = marks_a.expand(*lead, -1), marks_b.expand(*lead, -1)
    ok_a = torch.ones_like(ma, dtype=torch.bool) if mask_a is None else mask_a.expand(*lead, -1)
    ok_b = torch.ones_like(mb, dtype=torch.bool) if mask_b is None else mask_b.expand(*lead, -1)
    n, m = ta.shape[-1], tb.shape[-1]
    total = torch.zeros(lead, dtype=torch.float64, device=ta.device)
    types = torch.cat([ma[ok_a], mb[ok_b]]).unique()
    for typ in types.tolist():
        sel_a, sel_b = ok_a & (ma == typ), ok_b & (mb == typ)
        # this type's times first, sorted; the rest (+inf) after them and never read
        a = torch.where(sel_a, ta, math.inf).sort(-1).values
        b = torch.where(sel_b, tb, math.inf).sort(-1).values
        na, nb = sel_a.sum(-1), sel_b.sum(-1)
        a, b = torch.where(torch.isinf(a), 0.0, a), torch.where(torch.isinf(b), 0.0, b)
        # D[i][j]: the distance between the first i events of a and the first j of b. Cells past
        # (na, nb) hold finite filler that no cell up to (na, nb) reads.
        prev = cost * torch.arange(m + 1, dtype=torch.float64, device=ta.device).expand(*lead, -1)
        rows = [prev]
        for i in range(1, n + 1):
            cur = [torch.full(lead, cost * i, dtype=torch.float64, device=ta.device)]
            for j in range(1, m + 1):
                move = prev[..., j - 1] + (a[..., i - 1] - b[..., j - 1]).abs()
                cur.append(torch.minimum(move, torch.minimum(prev[..., j], cur[j - 1]) + cost))
            prev = torch.stack(cur, -1)
            rows.append(prev)
        D = torch.stack(rows, -2)  # (..., n + 1, m + 1)
        total = total + D.gather(-2, na[..., None, None].expand(*lead, 1, m + 1))[..., 0, :] \
            .gather(-1, nb[..., None])[..., 0]
    return total


def score_futures(times: Tensor, marks: Tensor, hist: dict, otd_cost: float = 1.0,
                  num_marks: int | None = None) -> dict:
    """Scores of sampled (or point) futures against the true next ``k`` events (module docstring).

    Args:
        times: ``(M, S, k)`` absolute times of ``S`` futures per history (sorted along ``k``).
        marks: ``(M, S, k)`` their types.
        hist: from :func:`multistep_histories` (``future_times``, ``future_marks``, ``t_cut``).
        otd_cost: ``C`` of the optimal-transport distance (data time units).
        num_marks: ``K`` (None: the largest type seen, plus one).

    Returns:
        ``{"time_rmse" (k,), "gap_rmse" (k,), "type_acc" (k,)}`` numpy arrays and the floats
        ``"otd"``, ``"otd_point"``, with ``"n"`` the histories ``M``.
    """
    true_t, true_m, t_cut = hist["future_times"], hist["future_marks"], hist["t_cut"]
    M, k = true_t.shape
    if times.shape[0] != M or times.shape[2] != k or marks.shape != times.shape:
        raise ValueError(f"times and marks must be (M={M}, S, k={k}), got {tuple(times.shape)} and "
                         f"{tuple(marks.shape)}")
    times, marks = times.double(), marks.long()
    point_t = times.mean(1)  # (M, k)
    gaps = torch.diff(torch.cat([t_cut[:, None, None].expand(M, times.shape[1], 1), times], -1), dim=-1)
    true_gaps = torch.diff(torch.cat([t_cut[:, None], true_t], -1), dim=-1)
    K = num_marks or int(max(marks.max(), true_m.max())) + 1
    votes = torch.zeros(M, k, K, dtype=torch.long).scatter_add_(
        2, marks.transpose(1, 2), torch.ones_like(marks.transpose(1, 2)))
    point_m = votes.argmax(-1)  # (M, k): the first maximum, the smallest of tied types
    d_samples = otd(times, marks, true_t[:, None], true_m[:, None], otd_cost)  # (M, S)
    d_point = otd(point_t, point_m, true_t, true_m, otd_cost)
    return {"time_rmse": ((point_t - true_t) ** 2).mean(0).sqrt().numpy(),
            "gap_rmse": ((gaps.mean(1) - true_gaps) ** 2).mean(0).sqrt().numpy(),
            "type_acc": (point_m == true_m).double().mean(0).numpy(),
            "otd": float(d_samples.mean()), "otd_point": float(d_point.mean()), "n": M}


def evaluate_multistep(model, times, marks, k: int, n_samples: int = 32, n_cuts: int = 1,
                       min_history: int = 2, otd_cost: float = 1.0, batch_size: int = 64,
                       generator: torch.Generator | None = None, num_marks: int | None = None) -> dict:
    """:func:`multistep_histories`, :func:`sample_multistep` and :func:`score_futures` in one
    call: the model's scores on sequences ``times``/``marks`` (lists of ``(L_i,)`` arrays)."""
    hist = multistep_histories(times, marks, k, n_cuts, min_history)
    t, m = sample_multistep(model, hist, n_samples, batch_size, generator)
    return score_futures(t, m, hist, otd_cost, num_marks)
