"""Yardsticks for classification configs and tables: the best model that ignores the times, one
that uses them, and the classical baselines, on exactly the data and split the event models get.

    python experiments/yardsticks.py                        # time_frequency + time_decay, 3 seeds
    python experiments/yardsticks.py --gru                  # GRUs too (slower)
    python experiments/yardsticks.py --config experiments/configs/pbcseq.yaml
    python experiments/yardsticks.py --config experiments/configs/quickstart.yaml \\
        --ckpt runs/quickstart/version_0/checkpoints/last.ckpt   # a trained model beside them
    python experiments/yardsticks.py --csv visits.csv --id-col patient --time-col time \\
        --value-cols hr bp --label-col outcome [--ckpt best.ckpt]  # your own table

For each config the DataModule is built from its ``data:`` section (same generator, same split).
Two families of candidates are fit on the training split, the candidate of each family with the
best mean validation score (AUROC for two classes, accuracy otherwise) is picked, and its test
scores (mean ± std over ``--seeds``) are reported:

* **time-free** (the values in order, no times): histogram gradient-boosted trees and a random
  forest on :func:`eventssm.datasets.features.value_features`, and with ``--gru`` a GRU on the
  values alone.
* **uses times**: the same trees on value features plus
  :func:`~eventssm.datasets.features.time_features` (gap statistics, decayed sums at time scales
  from the training gaps, value-vs-time slope, Lomb-Scargle peak), and with ``--gru`` a GRU that
  also gets ``log1p(gap / median training gap)`` per event.

**Classical yardsticks on any table** (:func:`classical`, the default with ``--csv``, added to a
config's run by ``--classical``), fit on the training split of any :class:`EventDataModule`:

* MiniRocket + ridge (aeon's ``MiniRocketClassifier``) on each sequence's standardised values
  interpolated linearly onto ``--grid`` evenly spaced points of its own time span;
* 1-NN (aeon's ``KNeighborsTimeSeriesClassifier``) with DTW on the observed values in order when
  the longest training sequence has at most ``--dtw-max-len`` observations, Euclidean on the grid otherwise;
* histogram gradient-boosted trees on :func:`value_features`, without and with
  :func:`time_features`.

``--csv`` builds the DataModule as the README's CSV command does (``EventDataModule`` with the
same column options and its defaults: the same seeded split for the same ``--seed``).

``--ckpt`` evaluates a trained event model (its class from the config's ``model.class_path``, or
``--model-class`` with ``--csv``) on the same test split and prints it beside them. The markdown
table goes to ``--out`` (default ``experiments/results/yardsticks.md`` when the default configs
are run).

Needs scikit-learn, and aeon for MiniRocket and 1-NN (``pip install 'eventssm[dev,data]'``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

# One OpenMP thread: the trees and GRUs here are small, and on a shared CPU several spinning
# OpenMP threads cost far more than they give (set OMP_NUM_THREADS to override).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
import yaml

from eventssm.datasets.features import frequency_grid, gap_scales, time_features, value_features
from eventssm.tasks.yardsticks import (  # noqa: F401  (the panel reads them from here)
    CLASSICAL,
    SPLITS,
    classical,
    classical_seeds,
    classical_table,
    fmt,
    observed,
    on_grid,
    sequence_inputs,
    tree,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["experiments/configs/time_frequency.yaml", "experiments/configs/time_decay.yaml"]


def _load_class(path: str):
    mod, _, name = path.rpartition(".")
    return getattr(importlib.import_module(mod), name)


def datamodule_from_config(config: str | Path):
    """The config's DataModule (``data.class_path`` + ``init_args``), built."""
    cfg = yaml.safe_load(Path(config).read_text())
    data = cfg["data"]
    dm = _load_class(data["class_path"])(**data.get("init_args", {}))
    dm.build()
    return dm, cfg


# ---------------------------------------------------------------------------- GRU baseline
class _GRU(torch.nn.Module):
    def __init__(self, d_in: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.gru = torch.nn.GRU(d_in, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, n_classes)

    def forward(self, x, lengths):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                         enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


def _gru_inputs(dm, split: str, use_gaps: bool, med_gap: float):
    """Padded ``(n, L, F)`` inputs: standardised values (0 where missing) and the observed mask,
    plus ``log1p(gap / med_gap)`` when ``use_gaps``."""
    tb, idx = dm.table, dm.split_index[split]
    seqs = []
    for i in idx:
        t = tb.times[i]
        cols = []
        if tb.values is not None:
            v = dm.scaler.transform(tb.values[i]) if dm.scaler is not None else tb.values[i]
            seen = ~np.isnan(v)
            cols += [np.where(seen, v, 0.0), seen.astype(np.float32)]
        if tb.marks is not None and tb.num_marks:
            cols.append(np.eye(tb.num_marks, dtype=np.float32)[tb.marks[i]])
        if use_gaps:
            g = np.diff(t, prepend=t[0])
            cols.append(np.log1p(g / med_gap)[:, None])
        seqs.append(torch.tensor(np.concatenate(cols, 1), dtype=torch.float32))
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    y = torch.as_tensor(tb.labels[idx], dtype=torch.long)
    return x, lengths, y


def fit_gru(dm, use_gaps: bool, seed: int, epochs: int = 30, lr: float = 3e-3, batch: int = 64,
            patience: int = 5):
    """Train a 1-layer GRU; return (val probs, test probs) at the epoch with the best val loss
    (stopping after ``patience`` epochs without improvement)."""
    med = gap_scales(dm.table.subset(dm.split_index["train"]), factors=(1,))[0]
    data = {s: _gru_inputs(dm, s, use_gaps, med) for s in ("train", "val", "test")}
    torch.manual_seed(seed)
    model = _GRU(data["train"][0].shape[-1], dm.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    x, lengths, y = data["train"]
    g = torch.Generator().manual_seed(seed)
    best, best_state = np.inf, None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for k in range(0, len(y), batch):
            b = perm[k:k + batch]
            loss = torch.nn.functional.cross_entropy(model(x[b], lengths[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            vl = torch.nn.functional.cross_entropy(model(*data["val"][:2]), data["val"][2]).item()
        if vl < best:
            best, best_state, since = vl, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best_state)
    with torch.no_grad():
        return tuple(model(*data[s][:2]).softmax(-1).numpy() for s in ("val", "test"))


# ---------------------------------------------------------------------------- trees
def feature_sets(dm, lomb_scargle: bool = True) -> dict[str, np.ndarray]:
    """``{"time-free": X, "uses times": X}`` for all sequences (rows in table order)."""
    tb = dm.table
    train = tb.subset(dm.split_index["train"])
    vx, _ = value_features(tb)
    freqs = frequency_grid(train) if lomb_scargle and tb.values is not None else None
    tx, _ = time_features(tb, gap_scales(train), freqs)
    return {"time-free": vx, "uses times": np.hstack([vx, tx])}


def fit_tree(kind: str, X: np.ndarray, dm, seed: int):
    """(val probs, test probs) of :func:`tree`."""
    clf, X = tree(kind, X, dm, seed)
    return tuple(clf.predict_proba(X[dm.split_index[s]]) for s in ("val", "test"))


# ---------------------------------------------------------------------------- classical, any table
# ---------------------------------------------------------------------------- scoring
def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    out = {"acc": float(np.mean(probs.argmax(1) == y))}
    if probs.shape[1] == 2 and len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(y, probs[:, 1]))
    return out


def yardsticks(dm, seeds=(0, 1, 2), gru: bool = False, lomb_scargle: bool = True,
               log=print) -> dict:
    """Per family, the candidate with the best mean validation score and its test scores per
    seed. The score is the AUROC for two classes (the clinical tasks are imbalanced), the
    accuracy otherwise."""
    key = "auroc" if dm.num_classes == 2 else "acc"
    feats = feature_sets(dm, lomb_scargle)
    yv, yt = (dm.table.labels[dm.split_index[s]] for s in ("val", "test"))
    results = {}
    for family, X in feats.items():
        cands = {f"{k} on {'value' if family == 'time-free' else 'value+time'} features":
                 (lambda s, k=k, X=X: fit_tree(k, X, dm, s)) for k in ("GBT", "RF")}
        if gru:
            name = "GRU on values" + (" and gaps" if family == "uses times" else "")
            cands[name] = lambda s, g=(family == "uses times"): fit_gru(dm, g, s)
        best = None
        for name, fit in cands.items():
            t0 = time.time()
            runs = [fit(s) for s in seeds]
            val = [scores(pv, yv) for pv, _ in runs]
            test = [scores(pt, yt) for _, pt in runs]
            v = float(np.mean([r[key] for r in val]))
            log(f"  {family:10s} {name:32s} val {key} {v:.3f}  test {key} {fmt(test, key)}"
                + (f"  test acc {fmt(test, 'acc')}" if key != "acc" else "")
                + f"  ({time.time() - t0:.0f} s)")
            if best is None or v > best["val"]:
                best = {"model": name, "val": v, "key": key, "test": test}
        results[family] = best
    return results


def evaluate_checkpoint(ckpt: str, cfg: dict, dm) -> dict[str, float]:
    """Test scores of a trained event model on the config's test split."""
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no device banner
    cls = _load_class(cfg["model"]["class_path"])
    model = cls.load_from_checkpoint(ckpt, map_location="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    out = trainer.predict(model, dataloaders=dm.test_dataloader())
    probs = torch.cat([o["probs"] for o in out]).numpy()
    index = torch.cat([o["index"] for o in out]).numpy()
    y = dm.datasets["test"].table.labels[index]
    return scores(probs, y)


def datamodule_from_csv(source, *, id_col: str = "id", time_col: str = "time",
                        value_cols: list[str] | None = None, mark_col: str | None = None,
                        label_col: str = "label", split_col: str | None = None, seed: int = 0,
                        val_fraction: float = 0.15, test_fraction: float = 0.15):
    """The ``EventDataModule`` of the README's CSV command (``eventssm fit --data
    eventssm.datasets.EventDataModule --data.source ...``): the same options, its defaults
    otherwise, so the same seed gives the model's own split. Built."""
    from eventssm.datasets import EventDataModule

    dm = EventDataModule(source, id_col=id_col, time_col=time_col, value_cols=value_cols,
                         mark_col=mark_col, label_col=label_col, split_col=split_col,
                         task="classification", seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction)
    dm.build()
    return dm


def main_csv(args, argv: list[str] | None) -> None:
    """``--csv``: the classical yardsticks (and ``--ckpt``'s model) on a long CSV/Parquet table."""
    dm = datamodule_from_csv(args.csv, id_col=args.id_col, time_col=args.time_col,
                             value_cols=args.value_cols, mark_col=args.mark_col,
                             label_col=args.label_col, split_col=args.split_col, seed=args.seed,
                             val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    n = {s: len(dm.split_index[s]) for s in SPLITS}
    print(f"{args.csv}: {n['train']}/{n['val']}/{n['test']} train/val/test sequences, "
          f"{dm.num_classes} classes (split seed {args.seed})", flush=True)
    per = classical_seeds(dm, args.seeds, log=lambda m: print(m, flush=True), n_grid=args.grid,
                          dtw_max_len=args.dtw_max_len,
                          lomb_scargle=not args.no_lomb_scargle)
    event = None
    if args.ckpt:
        event = evaluate_checkpoint(args.ckpt, {"model": {"class_path": args.model_class}}, dm)
    table = classical_table(per, event, f"event model ({Path(args.ckpt).name})" if args.ckpt
                            else "event model")
    print()
    print(table)
    if args.out:
        cmd = "python experiments/yardsticks.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(
            f"# Yardsticks on {args.csv}\n\nPrinted by `{cmd.strip()}` (split seed {args.seed}, "
            f"{n['train']}/{n['val']}/{n['test']} train/val/test; model seeds {args.seeds}).\n\n"
            + table + "\n")
        print(f"\nwritten to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The options of the config runs and of ``--csv``'s own table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", nargs="+", default=None,
                    help="classification configs (default: time_frequency and time_decay)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--gru", action="store_true",
                    help="also try GRUs (values only / values and gaps) as candidates (slower)")
    ap.add_argument("--no-lomb-scargle", action="store_true")
    ap.add_argument("--ckpt", default=None, help="a trained model of the (single) config")
    ap.add_argument("--out", default=None, help="markdown table path")
    ap.add_argument("--classical", action="store_true",
                    help="also run the classical yardsticks (MiniRocket, 1-NN, GBTs) per config")
    ap.add_argument("--grid", type=int, default=256,
                    help="grid points of MiniRocket (and Euclidean 1-NN)")
    ap.add_argument("--dtw-max-len", type=int, default=1000,
                    help="1-NN uses DTW when the longest training sequence has at most this many "
                         "observations, Euclidean on the grid otherwise")
    csv = ap.add_argument_group("your own table (--csv: the README's CSV command's options)")
    csv.add_argument("--csv", default=None, help="a long CSV/Parquet table (instead of --config)")
    csv.add_argument("--id-col", default="id")
    csv.add_argument("--time-col", default="time")
    csv.add_argument("--value-cols", nargs="+", default=None,
                     help="value columns (default: every column not named otherwise)")
    csv.add_argument("--mark-col", default=None)
    csv.add_argument("--label-col", default="label")
    csv.add_argument("--split-col", default=None)
    csv.add_argument("--seed", type=int, default=0, help="the DataModule's split seed")
    csv.add_argument("--val-fraction", type=float, default=0.15)
    csv.add_argument("--test-fraction", type=float, default=0.15)
    csv.add_argument("--model-class", default="eventssm.tasks.EventClassifier",
                     help="the task class of --ckpt")
    return ap


def config_row(config: str, args, log) -> list[str]:
    """One table row of a config (and ``--ckpt``'s summary, ``--classical``'s table printed)."""
    name = Path(config).stem
    log(f"{name}: building data")
    dm, cfg = datamodule_from_config(config)
    n = {s: len(dm.split_index[s]) for s in ("train", "val", "test")}
    yt = dm.table.labels[dm.split_index["test"]]
    chance = float(np.bincount(yt).max() / len(yt))
    res = yardsticks(dm, args.seeds, gru=args.gru,
                     lomb_scargle=not args.no_lomb_scargle, log=log)
    tf, tt = res["time-free"], res["uses times"]
    key = tf["key"]
    gap = 100 * (np.mean([r[key] for r in tt["test"]]) - np.mean([r[key] for r in tf["test"]]))
    row = [name, f"{n['train']}/{n['val']}/{n['test']}", key, f"{chance:.3f}",
           f"{fmt(tf['test'], 'acc')} ({tf['model']})", f"{fmt(tt['test'], 'acc')} ({tt['model']})",
           f"{gap:+.1f}", fmt(tf["test"], "auroc"), fmt(tt["test"], "auroc")]
    if args.ckpt:
        m = evaluate_checkpoint(args.ckpt, cfg, dm)
        row.append(f"{m['acc']:.3f}" + (f" (AUROC {m['auroc']:.3f})" if "auroc" in m else ""))
        auroc = lambda r: f"   AUROC {fmt(r, 'auroc')}" if "auroc" in r[0] else ""
        print(f"\n{name}: test accuracy on {n['test']} sequences\n"
              f"  event model ({args.ckpt})  {m['acc']:.3f}" + auroc([m]) + "\n"
              f"  best without the times ({tf['model']})  {fmt(tf['test'], 'acc')}"
              + auroc(tf["test"]) + "\n"
              f"  best with the times ({tt['model']})  {fmt(tt['test'], 'acc')}"
              + auroc(tt["test"]) + "\n"
              f"  majority class  {chance:.3f}")
    if args.classical:
        log(f"{name}: classical yardsticks")
        per = classical_seeds(dm, args.seeds, log=log, n_grid=args.grid,
                              dtw_max_len=args.dtw_max_len,
                              lomb_scargle=not args.no_lomb_scargle)
        print(f"\n{name}\n" + classical_table(per) + "\n", flush=True)
    return row


def results_table(rows: list[list[str]], ckpt: str | None) -> str:
    """The markdown table of the config rows."""
    head = ["config", "train/val/test", "selected by", "majority class",
            "time-free: test acc (model)",
            "uses times: test acc (model)", "points", "time-free AUROC", "uses times AUROC"]
    if ckpt:
        head.append(f"event model ({Path(ckpt).name})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: str, table: str, logged: list[str], args, argv: list[str] | None) -> None:
    """The markdown file: the command, how to read the table, the table, every candidate's line."""
    cmd = "python experiments/yardsticks.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(out).write_text(
        "# Yardsticks: how much the times are worth\n\n"
        f"Printed by `{cmd.strip()}` (seeds {args.seeds}; test scores mean ± std over seeds "
        "of the candidate with the best mean validation score in each family: AUROC for two "
        "classes, accuracy otherwise (`selected by`); the split is the config's). `points` = "
        "uses times − time-free in that score, × 100.\n\n"
        + table + "\n\nEvery candidate (validation and test scores, mean over seeds; fit "
        "time):\n\n```\n" + "\n".join(logged) + "\n```\n")


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.csv:
        if args.config:
            ap.error("give --csv or --config, not both")
        return main_csv(args, argv)
    configs = args.config or [str(ROOT / c) for c in DEFAULT_CONFIGS]
    out = args.out or (str(ROOT / "experiments/results/yardsticks.md") if args.config is None
                       else None)
    if args.ckpt and len(configs) != 1:
        ap.error("--ckpt takes exactly one --config")
    rows, logged = [], []

    def log(msg: str) -> None:
        print(msg, flush=True)
        logged.append(msg)

    for config in configs:
        rows.append(config_row(config, args, log))
    table = results_table(rows, args.ckpt)
    print()
    print(table)
    if out:
        write_report(out, table, logged, args, argv)
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
