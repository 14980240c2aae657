"""Classical yardsticks on any classification DataModule, and the ``eventssm yardsticks``
command that prints them beside a trained model's test accuracy on the same split.

::

    eventssm fit --config my.yaml                       # or the README's CSV command
    eventssm yardsticks --config runs/eventssm/version_0/config.yaml --ckpt_path best

The command takes every option of ``eventssm test`` (the model, data and checkpoint are the
ones the test would use; the test runs first) and its own: ``--seeds`` (the yardsticks' random
seeds), ``--grid`` (points of the interpolation grid), ``--dtw-max-len`` and ``--out`` (the
markdown table, also printed). The yardsticks, fit on the DataModule's training split and scored
on its validation and test splits:

* MiniRocket + ridge (aeon's ``MiniRocketClassifier``) on each sequence's standardised values
  interpolated linearly onto ``grid`` evenly spaced points of its own time span;
* 1-NN (aeon's ``KNeighborsTimeSeriesClassifier``) with DTW on the observed values in order when
  the longest training sequence has at most ``dtw_max_len`` observations, Euclidean on the grid
  otherwise;
* histogram gradient-boosted trees (scikit-learn) on per-sequence value summaries
  (:func:`~eventssm.datasets.features.value_features`), without and with the time summaries
  (:func:`~eventssm.datasets.features.time_features`).

Needs scikit-learn and aeon (``pip install 'eventssm[data]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from eventssm.datasets.features import frequency_grid, gap_scales, time_features, value_features

__all__ = ["CLASSICAL", "classical", "classical_seeds", "classical_table", "on_grid", "parse_args", "report",
           "observed", "sequence_inputs", "tree"]

def tree(kind: str, X: np.ndarray, dm, seed: int):
    """A ``"GBT"`` or ``"RF"`` classifier fit on the training rows of ``X`` (one row per sequence
    of ``dm.table``), and ``X`` without the features never defined in training."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    if kind == "GBT":
        clf = HistGradientBoostingClassifier(random_state=seed)
    else:  # random forests do not take NaN in every scikit-learn version: impute medians
        clf = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                            RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1))
    tr = dm.split_index["train"]
    X = X[:, ~np.isnan(X[tr]).all(0)]  # a feature never defined in training carries nothing
    clf.fit(X[tr], dm.table.labels[tr])
    return clf, X



CLASSICAL = ("MiniRocket", "1-NN", "GBT value", "GBT value+time")
SPLITS = ("train", "val", "test")


def sequence_inputs(dm, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequence ``i``'s times ``(L,)`` and inputs ``(L, C)``: the values standardised with the
    training split's statistics (the model's own inputs), a missing value interpolated linearly
    in time from its channel's observations (0, the training mean, for a channel never observed
    in the sequence), then the marks one-hot."""
    tb = dm.table
    t = tb.times[i]
    cols = []
    if tb.values is not None:
        v = tb.values[i] if dm.scaler is None else dm.scaler.transform(tb.values[i])
        v = np.array(v, dtype=np.float64)
        for c in range(v.shape[1]):
            seen = ~np.isnan(v[:, c])
            if not seen.all():
                v[:, c] = np.interp(t, t[seen], v[seen, c]) if seen.any() else 0.0
        cols.append(v)
    if tb.marks is not None and tb.num_marks:
        cols.append(np.eye(tb.num_marks)[tb.marks[i]])
    return t, np.concatenate(cols, 1)


def on_grid(dm, split: str, n_grid: int = 256) -> np.ndarray:
    """``(n, C, n_grid)``: each sequence of ``split`` interpolated linearly onto ``n_grid``
    evenly spaced times from its first to its last event (aeon's collection layout)."""
    out = []
    for i in dm.split_index[split]:
        t, x = sequence_inputs(dm, i)
        grid = np.linspace(t[0], t[-1], n_grid)
        out.append(np.stack([np.interp(grid, t, x[:, c]) for c in range(x.shape[1])]))
    return np.stack(out)


def observed(dm, split: str) -> list[np.ndarray]:
    """Each sequence of ``split`` as its observations in order, ``(C, L_i)`` (aeon's unequal-length
    collection layout); the times are dropped."""
    return [np.ascontiguousarray(sequence_inputs(dm, i)[1].T) for i in dm.split_index[split]]


def classical(dm, seed: int = 0, n_grid: int = 256, dtw_max_len: int = 1000,
              lomb_scargle: bool = True, models=CLASSICAL, n_jobs: int = 1,
              log=None) -> dict[str, dict]:
    """The classical yardsticks of a classification DataModule, fit on its training split.

    Returns ``{name: {"val": {"acc": ...}, "test": {"acc": ...}, "seconds": s, "detail": str}}``
    for each of ``models`` (a subset of :data:`CLASSICAL`); ``seconds`` is the wall-clock time of
    its inputs (grid, features), fit and predictions.
    """
    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    unknown = set(models) - set(CLASSICAL)
    if unknown:
        raise ValueError(f"unknown yardsticks {sorted(unknown)}; choose from {CLASSICAL}")
    dm.build()
    y = {s: dm.table.labels[dm.split_index[s]] for s in SPLITS}
    max_len = max(len(dm.table.times[i]) for i in dm.split_index["train"])
    out: dict[str, dict] = {}

    def record(name: str, detail: str, t0: float, pred: dict) -> None:
        res = {s: {"acc": float(np.mean(np.asarray(pred[s]) == y[s]))} for s in ("val", "test")}
        out[name] = {**res, "seconds": time.time() - t0, "detail": detail}
        if log is not None:
            log(f"  {name:15s} {detail:42s} val acc {res['val']['acc']:.3f}  "
                f"test acc {res['test']['acc']:.3f}  ({out[name]['seconds']:.1f} s)")

    def fit_predict(clf, x: dict) -> dict:
        clf.fit(x["train"], y["train"])
        return {s: clf.predict(x[s]) for s in ("val", "test")}

    def gbt(X: np.ndarray) -> dict:
        clf, X = tree("GBT", X, dm, seed)
        return {s: clf.predict(X[dm.split_index[s]]) for s in ("val", "test")}

    if "MiniRocket" in models:
        t0 = time.time()
        x = {s: on_grid(dm, s, n_grid) for s in SPLITS}
        clf = MiniRocketClassifier(random_state=seed, n_jobs=n_jobs)
        record("MiniRocket", f"+ ridge, {n_grid}-point grid", t0, fit_predict(clf, x))
    if "1-NN" in models:
        t0 = time.time()
        if max_len <= dtw_max_len:
            x, detail = {s: observed(dm, s) for s in SPLITS}, "DTW on the observations"
            clf = KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=n_jobs)
        else:
            x = {s: on_grid(dm, s, n_grid) for s in SPLITS}
            detail = f"Euclidean, {n_grid}-point grid (longest {max_len} > {dtw_max_len})"
            clf = KNeighborsTimeSeriesClassifier(distance="euclidean", n_neighbors=1,
                                                 n_jobs=n_jobs)
        record("1-NN", detail, t0, fit_predict(clf, x))
    if "GBT value" in models or "GBT value+time" in models:
        t0 = time.time()
        vx, _ = value_features(dm.table)
        t_value = time.time() - t0
        if "GBT value" in models:
            t1 = time.time()
            record("GBT value", "value features", t1 - t_value, gbt(vx))
        if "GBT value+time" in models:
            t1 = time.time()
            train = dm.table.subset(dm.split_index["train"])
            freqs = (frequency_grid(train) if lomb_scargle and dm.table.values is not None
                     else None)
            tx, _ = time_features(dm.table, gap_scales(train), freqs)
            record("GBT value+time", "value + time features", t1 - t_value,
                   gbt(np.hstack([vx, tx])))
    return out


def fmt(test: list[dict], key: str) -> str:
    x = np.array([r[key] for r in test if key in r])
    if len(x) == 0:
        return "–"
    return f"{x.mean():.3f}" if len(x) == 1 else f"{x.mean():.3f} ± {x.std():.3f}"


def classical_seeds(dm, seeds=(0, 1, 2), log=None, **kwargs) -> dict[str, list[dict]]:
    """:func:`classical` for each seed: ``{name: [result per seed]}``. 1-NN has no randomness
    and is fit once."""
    per: dict[str, list[dict]] = {}
    for k, seed in enumerate(seeds):
        models = CLASSICAL if k == 0 else tuple(m for m in CLASSICAL if m != "1-NN")
        if log is not None:
            log(f" seed {seed}")
        for name, r in classical(dm, seed, models=models, log=log, **kwargs).items():
            per.setdefault(name, []).append(r)
    return per


def classical_table(per: dict[str, list[dict]], event: dict | None = None,
                    event_name: str = "event model") -> str:
    """Markdown: each classical yardstick's validation and test accuracy (mean ± std over
    seeds) and seconds per fit, with a trained event model's test accuracy first."""
    lines = ["| model | inputs | val acc | test acc | seconds per fit |", "|---|---|---|---|---|"]
    if event is not None:
        lines.append(f"| {event_name} | the events | – | {event['acc']:.3f} | – |")
    for name, runs in per.items():
        lines.append(f"| {name} | {runs[0]['detail']} | {fmt([r['val'] for r in runs], 'acc')} "
                     f"| {fmt([r['test'] for r in runs], 'acc')} "
                     f"| {np.mean([r['seconds'] for r in runs]):.1f} |")
    return "\n".join(lines)




def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """``eventssm yardsticks``'s own options, and the rest (the test's options) as given.
    Exits with a message naming the option on bad input."""
    ap = argparse.ArgumentParser(
        prog="eventssm yardsticks", add_help=False,
        description="eventssm test, then the classical yardsticks on the same split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grid", type=int, default=256)
    ap.add_argument("--dtw-max-len", type=int, default=1000)
    ap.add_argument("--out", default=None)
    ours, rest = ap.parse_known_args(argv)
    if not any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in rest):
        raise SystemExit(
            "eventssm yardsticks: give --ckpt_path (a trained model: 'best', 'last' or a path), "
            "as for eventssm test")
    for name in ("grid", "dtw_max_len"):
        if getattr(ours, name) < 2:
            raise SystemExit(f"eventssm yardsticks: --{name.replace('_', '-')} must be >= 2, "
                             f"got {getattr(ours, name)}")
    try:
        import aeon  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"eventssm yardsticks needs aeon and scikit-learn ({e}): "
                         "pip install 'eventssm[data]'") from None
    return ours, rest


def report(cli, ours: argparse.Namespace, argv: list[str]) -> str:
    """After ``eventssm test`` ran in ``cli`` (a LightningCLI): the classical yardsticks on its
    DataModule, printed (and written to ``ours.out``) beside the model's test accuracy."""
    dm = cli.datamodule
    if getattr(dm, "table", None) is None or dm.table.task != "classification" \
            or getattr(dm, "target", "label") != "label":
        raise SystemExit("eventssm yardsticks compares sequence classifiers: the data must be a "
                         "classification table with target='label'")
    acc = cli.trainer.callback_metrics.get("test/acc")
    if acc is None:
        raise SystemExit("eventssm yardsticks: the test logged no test/acc (is the model an "
                         "EventClassifier?)")
    per = classical_seeds(dm, ours.seeds, log=lambda m: print(m, flush=True), n_grid=ours.grid,
                          dtw_max_len=ours.dtw_max_len)
    n = {s: len(dm.split_index[s]) for s in SPLITS}
    table = classical_table(per, {"acc": float(acc)}, f"{type(cli.model).__name__} (this model)")
    text = (f"Test split: {n['test']} sequences (train/val/test {n['train']}/{n['val']}/"
            f"{n['test']}); yardstick seeds {ours.seeds}, mean ± std.\n\n{table}\n")
    print("\n" + text, flush=True)
    if ours.out:
        Path(ours.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ours.out).write_text(f"# eventssm yardsticks {' '.join(argv)}\n\n" + text)
        print(f"written to {ours.out}", file=sys.stderr)
    return text
