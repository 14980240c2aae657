"""The panel: every classification set aeon ships, as given and made irregular, through the
generic path (a long table -> ``EventDataModule`` -> ``EventClassifier``) with the same settings
for every dataset, beside the classical yardsticks on the same split (issue 22).

    python experiments/panel.py --fast                          # 1 seed, 60 %-dropped rows
    python experiments/panel.py --budget-s 540                  # the full run, a piece at a time
    python experiments/panel.py --datasets UnitTest --seeds 0 --drops 0.6 --max-steps 20
    python experiments/panel.py --table                         # the markdown table
    python experiments/panel.py --candidates my_candidates.yaml # settings to compare

Rows. For each dataset, drop rate (0: as given; 0.3 and 0.6: that fraction of each series'
points dropped, see :func:`irregularize`) and seed: the data (the seed draws the dropped points,
the jitter and the validation set), then one row per candidate setting of the event model and
one per classical yardstick (``experiments/yardsticks.py``: MiniRocket, 1-NN, gradient-boosted
trees without and with time features), all on the same train/val/test split: the archive's own
train/test split, with a stratified 15 % of train carved out for validation (seeded).

Results. One JSON line per row is appended to ``--out`` as soon as the row finishes; rows already
in the file (same dataset, drop, seed, model and step budget) are skipped, so the run resumes
where it stopped and can be done in pieces (``--budget-s``: start no new row after that many
seconds). JapaneseVowels and OSULeaf are ``held_out``: a search for defaults must not look at them.

Candidates. The event model's settings come from one place: a YAML/dict of named candidates
(``--candidates``), each with the keys ``backbone`` (:class:`EncoderConfig` fields), ``model``
(:class:`EventClassifier` options: lr, weight_decay, warmup_steps, scheduler, min_lr_ratio,
label_smoothing), ``data`` (:class:`EventDataModule` options such as batch_size, drop_last) and
``trainer`` (max_epochs, max_steps, early_stopping_patience on val/loss, test_ckpt ``best`` or
``last``). What a candidate leaves out is the library's default. The built-in candidate
``readme`` is the README's CSV command as printed: library defaults, ``--trainer.max_epochs 30``,
tested with the checkpoint of the best validation loss.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yardsticks  # noqa: E402, I001  (experiments/yardsticks.py: first, it sets one OpenMP thread)

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PANEL = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels",
         "OSULeaf", "PickupGestureWiimoteZ", "UnitTest")
# aeon also ships Covid3Month_disc, a classification set made by cutting a regression target into
# three bins; it is not on the panel but may be run with --datasets.
EXTRA = ("Covid3Month_disc",)
HELD_OUT = ("JapaneseVowels", "OSULeaf")
DROPS = (0.0, 0.3, 0.6)
SEEDS = (0, 1, 2)
JITTER = 0.4  # kept sample k is observed at k + U(-JITTER, JITTER): times stay strictly increasing
FAST_MAX_STEPS = 150  # --fast's step budget (docs/panel.md says how it was chosen)
DEFAULT_OUT = "experiments/results/panel.jsonl"
FAST_OUT = "experiments/results/panel_fast.jsonl"

# The README's CSV command as printed: every library default, the CLI's training budget and
# early stopping included (eventssm.tasks.cli), tested with the best-validation checkpoint (the
# one the CLI keeps as best-*.ckpt).
def _readme_candidate() -> dict:
    from eventssm.tasks.cli import EARLY_STOPPING, TRAINER_DEFAULTS

    return {"backbone": {}, "model": {}, "data": {},
            "trainer": {**TRAINER_DEFAULTS, "early_stopping_patience": EARLY_STOPPING["patience"],
                        "test_ckpt": "best"}}


CANDIDATE_KEYS = {"backbone", "model", "data", "trainer"}
TRAINER_KEYS = {"max_epochs", "max_steps", "early_stopping_patience", "test_ckpt"}


# ---------------------------------------------------------------------------- data
def irregularize(table, rate: float, seed: int, jitter: float = JITTER):
    """``table`` made irregular: per series, ``round(rate * L)`` of its ``L`` samples dropped
    (at least 2 kept when ``L >= 2``), and each kept sample ``k`` observed at the real time
    ``k + U(-jitter, jitter)`` (clipped to ``[0, L - 1]``), its values interpolated linearly
    between the neighbouring samples at that time. ``jitter < 0.5`` keeps the times strictly
    increasing. Seeded: the same seed drops the same points with the same jitter.

    ``table`` is an :class:`EventTable` with time = sample index (:func:`load_uea`'s).
    """
    from eventssm.datasets import EventTable

    if not (0.0 <= rate < 1.0):
        raise ValueError(f"rate must lie in [0, 1), got {rate!r}")
    if not (0.0 <= jitter < 0.5):
        raise ValueError(f"jitter must lie in [0, 0.5) to keep the times increasing, got {jitter!r}")
    rng = np.random.default_rng(seed)
    times, values = [], []
    for t, v in zip(table.times, table.values, strict=True):
        L = len(t)
        n_keep = max(L - int(round(rate * L)), min(L, 2))
        keep = np.sort(rng.choice(L, size=n_keep, replace=False))
        tk = np.clip(keep + rng.uniform(-jitter, jitter, size=n_keep), 0.0, L - 1.0)
        grid = np.arange(L, dtype=np.float64)
        vk = np.stack([np.interp(tk, grid, v[:, c]) for c in range(v.shape[1])], 1)
        times.append(tk)
        values.append(vk.astype(np.float32))
    return EventTable(table.ids, times, values, None, table.labels, split=table.split,
                      channels=table.channels, classes=table.classes, task=table.task)


def long_frame(table) -> pd.DataFrame:
    """The long table a user would have: ``id, time, <channels>, label, split`` (one row per
    observation; the label as the archive's class name)."""
    parts = []
    for i, sid in enumerate(table.ids):
        d = {"id": sid, "time": table.times[i]}
        for c, ch in enumerate(table.channels):
            d[ch] = table.values[i][:, c]
        d["label"] = str(table.classes[int(table.labels[i])])
        d["split"] = table.split[i]
        parts.append(pd.DataFrame(d))
    return pd.concat(parts, ignore_index=True)


def panel_frame(name: str, drop: float, seed: int) -> pd.DataFrame:
    """Dataset ``name`` as a long table: as given (``drop=0``, time = sample index) or
    :func:`irregularize`-d with ``seed``; the archive's train/test split in ``split``."""
    from eventssm.datasets import load_uea

    table = load_uea(name, "all")
    if drop > 0:
        table = irregularize(table, drop, seed)
    return long_frame(table)


def panel_datamodule(df: pd.DataFrame, seed: int, **data):
    """The generic path: ``EventDataModule`` on the long table (validation carved from train,
    stratified, with ``seed``), built."""
    from eventssm.datasets import EventDataModule

    channels = [c for c in df.columns if c not in ("id", "time", "label", "split")]
    dm = EventDataModule(df, id_col="id", time_col="time", value_cols=channels,
                         label_col="label", split_col="split", task="classification",
                         seed=seed, **data)
    dm.build()
    return dm


# ---------------------------------------------------------------------------- candidates
def load_candidates(source=None) -> dict[str, dict]:
    """Named candidates from a YAML path or a dict (None: ``readme``, the library's defaults),
    checked."""
    if source is None:
        cands = {"readme": _readme_candidate()}
    elif isinstance(source, dict):
        cands = source
    else:
        cands = yaml.safe_load(Path(source).read_text())
    if not isinstance(cands, dict) or not cands:
        raise ValueError(f"candidates must be a non-empty mapping name -> settings, got {cands!r}")
    out = {}
    for name, c in cands.items():
        c = dict(c or {})
        bad = set(c) - CANDIDATE_KEYS
        if bad:
            raise ValueError(f"candidate {name!r}: unknown keys {sorted(bad)}; use "
                             f"{sorted(CANDIDATE_KEYS)}")
        c = {k: dict(c.get(k) or {}) for k in CANDIDATE_KEYS}
        bad = set(c["trainer"]) - TRAINER_KEYS
        if bad:
            raise ValueError(f"candidate {name!r}: unknown trainer keys {sorted(bad)}; use "
                             f"{sorted(TRAINER_KEYS)}")
        if c["trainer"].get("test_ckpt", "best") not in ("best", "last"):
            raise ValueError(f"candidate {name!r}: test_ckpt must be 'best' or 'last', got "
                             f"{c['trainer']['test_ckpt']!r}")
        out[str(name)] = c
    return out


def _discretization(spec):
    """A string as it is, or ``{class_path, init_args}`` instantiated."""
    if isinstance(spec, dict):
        mod, _, cls = spec["class_path"].rpartition(".")
        return getattr(importlib.import_module(mod), cls)(**spec.get("init_args", {}))
    return spec


class History(L.Callback):
    """Validation loss and accuracy after every validation run."""

    def __init__(self):
        self.rows = []

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                          "val_loss": float(m["val/loss"]), "val_acc": float(m["val/acc"])})


def fit_candidate(dm, cand: dict, seed: int, max_steps: int | None = None,
                  accelerator: str = "auto") -> dict:
    """Train ``EventClassifier`` with ``cand``'s settings on ``dm``; its test scores with the
    checkpoint ``cand["trainer"]["test_ckpt"]`` (best validation loss by default), the validation
    scores of that checkpoint, and what the training took. ``max_steps`` caps the candidate's
    own step budget."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from eventssm.tasks import EncoderConfig, EventClassifier

    tr = cand["trainer"]
    backbone = dict(cand["backbone"])
    if "discretization" in backbone:
        backbone["discretization"] = _discretization(backbone["discretization"])
    steps = [s for s in (tr.get("max_steps"), max_steps) if s is not None]
    L.seed_everything(seed, workers=True, verbose=False)
    model = EventClassifier(num_classes=dm.num_classes, d_input=dm.d_input,
                            num_marks=dm.num_marks, use_observed=dm.use_observed,
                            time_scale=dm.time_scale, backbone=EncoderConfig(**backbone),
                            **cand["model"])
    with tempfile.TemporaryDirectory(prefix="panel-") as tmp:
        ckpt = ModelCheckpoint(dirpath=tmp, monitor="val/loss", mode="min", save_top_k=1,
                               filename="best")
        history = History()
        callbacks = [ckpt, history]
        if tr.get("early_stopping_patience") is not None:
            callbacks.append(EarlyStopping("val/loss", mode="min",
                                           patience=int(tr["early_stopping_patience"]),
                                           check_on_train_epoch_end=False, strict=False))
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False,
                            max_epochs=tr.get("max_epochs", -1 if tr.get("max_steps") else 30),
                            max_steps=min(steps) if steps else -1, callbacks=callbacks,
                            enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, default_root_dir=tmp)
        t0 = time.time()
        trainer.fit(model, datamodule=dm)
        if not history.rows or history.rows[-1]["step"] != trainer.global_step:
            # A step budget ended the run mid-epoch: the final weights are validated too.
            trainer.validate(model, datamodule=dm, verbose=False)
        fit_s = time.time() - t0
        final = history.rows[-1]
        chosen = final
        if tr.get("test_ckpt", "best") == "best":
            chosen = min(history.rows, key=lambda r: r["val_loss"])  # the first of equals
        # the best checkpoint, or the weights in memory when they are the ones chosen
        path = None if chosen is final else ckpt.best_model_path
        t0 = time.time()
        test = trainer.test(model, datamodule=dm, ckpt_path=path, verbose=False)[0]
        test_s = time.time() - t0
    return {"test": {"acc": float(test["test/acc"]), "loss": float(test["test/loss"])},
            "val": {"acc": chosen["val_acc"], "loss": chosen["val_loss"]},
            "ckpt_epoch": chosen["epoch"], "steps": int(trainer.global_step),
            "steps_per_epoch": int(trainer.num_training_batches),
            "epochs": int(trainer.current_epoch), "val_runs": len(history.rows),
            "fit_s": fit_s, "test_s": test_s,
            "device": str(trainer.strategy.root_device)}


# ---------------------------------------------------------------------------- the run
def row_key(row: dict) -> tuple:
    """What makes a row the same row: dataset, drop, seed, model and step budget."""
    return (row["dataset"], float(row["drop"]), int(row["seed"]), row["model"],
            row.get("max_steps"))


def read_rows(path) -> list[dict]:
    """The rows of a results file, or of several (a list), in order (a line cut short by an
    interrupted write is skipped)."""
    if isinstance(path, (list, tuple)):
        return [r for one in path for r in read_rows(one)]
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path, row: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = p.read_text() if p.exists() else ""
    with p.open("a") as f:
        if text and not text.endswith("\n"):  # an interrupted write left half a line
            f.write("\n")
        f.write(json.dumps(row) + "\n")


def run(datasets=PANEL, drops=DROPS, seeds=SEEDS, candidates=None, max_steps=None,
        out=DEFAULT_OUT, budget_s=None, event_model=True, classical=True,
        accelerator="auto", log=print) -> list[dict]:
    """Run the missing rows, appending each to ``out`` as it finishes; returns the new rows.
    With ``budget_s``, no row starts after that many seconds."""
    cands = load_candidates(candidates)
    done = {row_key(r) for r in read_rows(out)}
    start = time.time()
    new = []
    for name in datasets:
        if name not in PANEL + EXTRA:
            raise ValueError(f"{name!r} is not in the panel {PANEL} (or {EXTRA})")
    # Seeds outermost: a run cut short by its budget has whole seeds over every dataset.
    for seed in seeds:
        for drop in drops:
            for name in datasets:
                base = {"dataset": name, "drop": float(drop), "seed": int(seed),
                        "held_out": name in HELD_OUT}
                todo = []
                if event_model:
                    todo += [(f"eventssm:{c}", max_steps) for c in cands]
                if classical:
                    todo += [(m, None) for m in yardsticks.CLASSICAL]
                todo = [(m, s) for m, s in todo
                        if row_key({**base, "model": m, "max_steps": s}) not in done]
                if not todo:
                    continue
                if budget_s is not None and time.time() - start > budget_s:
                    log(f"budget of {budget_s:.0f} s spent: stopping before {name} drop {drop} "
                        f"seed {seed}")
                    return new
                t0 = time.time()
                df = panel_frame(name, drop, seed)
                frame_s = time.time() - t0
                dms = {}

                def dm_for(data: dict, df=df, seed=seed, dms=dms):
                    key = json.dumps(data, sort_keys=True)
                    if key not in dms:
                        t0 = time.time()
                        dms[key] = (panel_datamodule(df, seed, **data), time.time() - t0)
                    return dms[key]

                for model, steps in todo:
                    if budget_s is not None and time.time() - start > budget_s:
                        log(f"budget of {budget_s:.0f} s spent: stopping before {name} "
                            f"drop {drop} seed {seed} {model}")
                        return new
                    if model.startswith("eventssm:"):
                        cand = cands[model.split(":", 1)[1]]
                        dm, data_s = dm_for(cand["data"])
                        t0 = time.time()
                        res = fit_candidate(dm, cand, seed, steps, accelerator)
                        extra = {"candidate": cand, **{k: res[k] for k in (
                            "ckpt_epoch", "steps", "steps_per_epoch", "epochs", "val_runs",
                            "fit_s", "test_s", "device")}}
                    else:
                        dm, data_s = dm_for({})
                        t0 = time.time()
                        res = yardsticks.classical(dm, seed, models=(model,))[model]
                        extra = {"detail": res["detail"]}
                    n = {s: len(dm.split_index[s]) for s in yardsticks.SPLITS}
                    row = {**base, "model": model, "max_steps": steps,
                           "val_acc": res["val"]["acc"], "test_acc": res["test"]["acc"],
                           "val_loss": res["val"].get("loss"),
                           "seconds": time.time() - t0, "data_s": frame_s + data_s,
                           "n_train": n["train"], "n_val": n["val"], "n_test": n["test"],
                           "num_classes": dm.num_classes,
                           "max_len": int(max(dm.table.lengths())), **extra,
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
                    append_row(out, row)
                    done.add(row_key(row))
                    new.append(row)
                    log(f"{name:22s} drop {drop:.1f} seed {seed} {model:22s} "
                        f"val {row['val_acc']:.3f} test {row['test_acc']:.3f} "
                        f"({row['seconds']:.1f} s)")
    return new


# ---------------------------------------------------------------------------- the table
def _cell(rows: list[dict], split: str) -> str:
    acc = np.array([r[f"{split}_acc"] for r in rows])
    sec = np.mean([r["seconds"] for r in rows])
    spread = f" ± {acc.std():.3f}" if len(acc) > 1 else ""
    return f"{acc.mean():.3f}{spread} ({len(acc)}) · {sec:.0f} s"


def _label(model: str, max_steps) -> str:
    return model if max_steps is None else f"{model} ≤{max_steps} steps"


def table(path, split: str = "test", drops=None, datasets=None) -> str:
    """Markdown: per dataset and drop, each model's accuracy (mean ± std over seeds, the number of
    seeds in brackets) and its mean wall-clock seconds per row; then the mean over the rows.
    ``drops`` / ``datasets``: only those rows (so that every model's mean is over the same ones)."""
    rows = [r for r in read_rows(path) if (drops is None or r["drop"] in drops)
            and (datasets is None or r["dataset"] in datasets)]
    if not rows:
        return f"(no rows in {path})"
    order = {m: k for k, m in enumerate(yardsticks.CLASSICAL)}
    models = sorted({(r["model"], r.get("max_steps")) for r in rows},
                    key=lambda m: (m[0] in order, order.get(m[0], 0), m[0], m[1] or 0))
    cells = {}
    for r in rows:
        key = (r["dataset"], r["drop"], r["model"], r.get("max_steps"))
        cells.setdefault(key, {})[r["seed"]] = r  # a repeated row counts once
    groups = sorted({(r["dataset"], r["drop"]) for r in rows},
                    key=lambda g: (PANEL.index(g[0]) if g[0] in PANEL else 99, g[0], g[1]))
    head = ["dataset", "drop"] + [_label(*m) for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, drop in groups:
        cols = [name + (" (held out)" if name in HELD_OUT else ""), f"{drop:.0%}"]
        for m in models:
            got = cells.get((name, drop, *m))
            cols.append(_cell(list(got.values()), split) if got else "–")
        lines.append("| " + " | ".join(cols) + " |")
    means = ["mean over rows", ""]
    for m in models:
        per = [np.mean([r[f"{split}_acc"] for r in v.values()])
               for k, v in cells.items() if k[2:] == m]
        means.append(f"{np.mean(per):.3f} ({len(per)} rows)")
    lines.append("| " + " | ".join(means) + " |")
    lines.append("| " + " | ".join(["mean rank over rows (1 = best, ties shared)", ""]
                                  + [f"{r:.2f}" for r in _mean_ranks(cells, groups, models, split)]) + " |")
    return "\n".join(lines)


def _mean_ranks(cells: dict, groups, models, split: str) -> list[float]:
    """Each model's rank by mean accuracy within every (dataset, drop) row where all models
    have a result (ties get the mean of their ranks), averaged over those rows."""
    ranks = {m: [] for m in models}
    for name, drop in groups:
        got = {m: cells.get((name, drop, *m)) for m in models}
        if not all(got.values()):
            continue
        acc = {m: np.mean([r[f"{split}_acc"] for r in v.values()]) for m, v in got.items()}
        for m, a in acc.items():
            better = sum(b > a for b in acc.values())
            tied = sum(b == a for b in acc.values())
            ranks[m].append(better + (tied + 1) / 2)
    return [float(np.mean(ranks[m])) if ranks[m] else float("nan") for m in models]


def search_ranks(path, candidates=None, split: str = "val") -> str:
    """Markdown: each event-model candidate's mean rank over the (dataset, drop, seed) cells that
    every listed candidate has (1 = best), ranked by ``split`` accuracy with the validation loss
    breaking ties (the validation splits are small: accuracies often tie); then its mean
    accuracy and loss over those cells. Held-out datasets never count."""
    rows = [r for r in read_rows(path) if r["model"].startswith("eventssm:")
            and r.get("max_steps") is None and not r.get("held_out")]
    names = sorted({r["model"] for r in rows}) if candidates is None else \
        [f"eventssm:{c}" for c in candidates]
    cells = {}
    for r in rows:
        if r["model"] in names:
            cells.setdefault((r["dataset"], r["drop"], r["seed"]), {})[r["model"]] = r
    full = {k: v for k, v in cells.items() if len(v) == len(names)}
    if not full:
        return f"(no cell of {path} has every candidate of {names})"
    ranks = {m: [] for m in names}
    for got in full.values():
        key = {m: (-got[m][f"{split}_acc"], got[m].get("val_loss") or np.inf) for m in names}
        for m in names:
            better = sum(key[o] < key[m] for o in names)
            tied = sum(key[o] == key[m] for o in names)
            ranks[m].append(better + (tied + 1) / 2)
    lines = [f"{len(full)} cells (dataset, drop, seed) with every candidate; ranked by {split} "
             "accuracy, ties broken by validation loss", "",
             f"| candidate | mean rank | mean {split} acc | mean val loss |", "|---|---|---|---|"]
    for m in sorted(names, key=lambda m: np.mean(ranks[m])):
        acc = np.mean([got[m][f"{split}_acc"] for got in full.values()])
        losses = [got[m]["val_loss"] for got in full.values() if got[m].get("val_loss") is not None]
        loss = f"{np.mean(losses):.3f}" if len(losses) == len(full) else "– (not recorded)"
        lines.append(f"| {m.split(':', 1)[1]} | {np.mean(ranks[m]):.2f} | {acc:.3f} | {loss} |")
    return "\n".join(lines)


def estimate(path, max_steps: int) -> str:
    """What the rows of a (tiny) run in ``path`` would take with a budget of ``max_steps``
    optimisation steps: an event model row's training time scaled linearly from its own steps
    (validation runs included, one per epoch as in the run) to ``min(max_steps, max_epochs ×
    steps per epoch)``, plus its test and data time; a yardstick row as it took."""
    rows = read_rows(path)
    if not rows:
        return f"(no rows in {path})"
    lines, total = [], 0.0
    for r in rows:
        if r["model"].startswith("eventssm:"):
            natural = max_steps
            if r.get("steps_per_epoch"):
                epochs = r.get("candidate", {}).get("trainer", {}).get("max_epochs", 30)
                natural = min(max_steps, epochs * r["steps_per_epoch"])
            sec = r["fit_s"] / max(r["steps"], 1) * natural + r["test_s"] + r["data_s"]
            what = f"{r['steps']} steps in {r['fit_s']:.1f} s -> {natural} steps"
        else:
            sec, what = r["seconds"], "as measured"
        total += sec
        lines.append(f"{r['dataset']:22s} drop {r['drop']:.1f} seed {r['seed']} "
                     f"{r['model']:22s} {sec:7.1f} s  ({what})")
    lines.append(f"total: {total:.0f} s = {total / 60:.1f} min for {len(rows)} rows at "
                 f"{max_steps} steps")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true",
                    help=f"one seed, the 60 %%-dropped rows, at most {FAST_MAX_STEPS} steps "
                         f"(results to {FAST_OUT})")
    ap.add_argument("--datasets", nargs="+", default=list(PANEL), choices=PANEL + EXTRA,
                    metavar="NAME", help=f"default: {' '.join(PANEL)}; also {' '.join(EXTRA)}")
    ap.add_argument("--drops", type=float, nargs="+", default=None,
                    help=f"drop rates (default {list(DROPS)}; --fast: [0.6])")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help=f"seeds (default {list(SEEDS)}; --fast: [0])")
    ap.add_argument("--max-steps", type=int, default=None,
                    help=f"cap on the optimisation steps of every event model (--fast: "
                         f"{FAST_MAX_STEPS})")
    ap.add_argument("--candidates", default=None,
                    help="YAML of named candidates (default: the README defaults, 'readme')")
    ap.add_argument("--out", default=None,
                    help=f"results file, appended and resumed (default {DEFAULT_OUT}; --fast: "
                         f"{FAST_OUT})")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new row after this many seconds")
    ap.add_argument("--no-yardsticks", action="store_true", help="only the event model rows")
    ap.add_argument("--yardsticks-only", action="store_true", help="only the yardstick rows")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--table", action="store_true", help="print the table of --out and stop")
    ap.add_argument("--also", nargs="+", default=[], metavar="FILE",
                    help="more results files read with --out by --table and --rank (for example "
                         "the yardstick rows beside the event model's)")
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="which accuracy --table shows")
    ap.add_argument("--rank", nargs="*", default=None, metavar="CANDIDATE",
                    help="print the candidates' mean validation rank over the cells of --out "
                         "that all of them have (default: every candidate in it) and stop")
    ap.add_argument("--estimate", type=int, default=None, metavar="STEPS",
                    help="print what the rows of --out (a tiny run) would take at STEPS steps "
                         "and stop")
    args = ap.parse_args(argv)
    out = args.out or str(ROOT / (FAST_OUT if args.fast else DEFAULT_OUT))
    if args.table:
        print(table([out, *args.also], args.split, drops=args.drops, datasets=args.datasets))
        return
    if args.rank is not None:
        print(search_ranks([out, *args.also], args.rank or None))
        return
    if args.estimate is not None:
        print(estimate(out, args.estimate))
        return
    drops = args.drops or ([0.6] if args.fast else list(DROPS))
    seeds = args.seeds or ([0] if args.fast else list(SEEDS))
    max_steps = args.max_steps if args.max_steps is not None else (
        FAST_MAX_STEPS if args.fast else None)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # Lightning's advice for tiny loaders and its device banner, once per row, drown the rows.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    logging.getLogger("eventssm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*number of training batches.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own, under torch 2.13
    warnings.filterwarnings("ignore", ".*unsafe cast from uint64 to int64.*")  # aeon's DTW
    t0 = time.time()
    new = run(args.datasets, drops, seeds, args.candidates, max_steps, out, args.budget_s,
              event_model=not args.yardsticks_only, classical=not args.no_yardsticks,
              accelerator=args.accelerator)
    print(f"\n{len(new)} new rows in {time.time() - t0:.0f} s, appended to {out}\n")
    print(table(out))


if __name__ == "__main__":
    main()
