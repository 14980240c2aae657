"""Temporal point processes side by side: eventssm's EventTPP heads against EasyTPP's models on
the same splits, with the true process's log-likelihood beside them (synthetic Hawkes).

::

    python experiments/bench/tpp.py                                  # both datasets, all models
    python experiments/bench/tpp.py --datasets hawkes --epochs 5 --models mixture RMTPP S2P2
    python experiments/bench/tpp.py --out experiments/results/tpp.md

Per model and dataset: test log-likelihood per event (nats; every event after the first of a
sequence is scored given its history, as in EasyTPP), next-time RMSE, next-type accuracy,
training seconds per epoch (train loop only, mean over epochs), parameters. Each model trains
``--epochs`` epochs with Adam(W) at ``--lr`` and batch ``--batch-size``; the epoch with the best
validation log-likelihood is tested.

EasyTPP (``pip install easy-tpp==0.3.0``, not an eventssm dependency) runs through its own
``Runner`` / ``run_one_epoch`` training loop and YAML config; its models' log-likelihoods are
EasyTPP's own estimates (Monte-Carlo compensator with ``loss_integral_num_sample_per_step``
samples; IntensityFree is exact), its RMSE/accuracy its thinning-based one-step predictions.
Without EasyTPP the script still runs eventssm's heads and says why EasyTPP's rows are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning as L
import numpy as np
import torch

from eventssm import Asymmetric
from eventssm.datasets import NAFLD3DataModule, SyntheticTPPDataModule, write_easytpp
from eventssm.tasks import EncoderConfig, EventTPP

OURS = ("mixture", "intensity")
EASYTPP = ("RMTPP", "NHP", "THP", "IntensityFree", "S2P2")


def make_data(name: str, args) -> object:
    if name == "hawkes":
        return SyntheticTPPDataModule(process="hawkes", num_marks=2, n_sequences=args.hawkes_sequences,
                                      max_events=args.hawkes_events, batch_size=args.batch_size)
    if name == "nafld":
        return NAFLD3DataModule(batch_size=args.nafld_batch_size)
    raise ValueError(f"unknown dataset {name!r}")


# ---------------------------------------------------------------------------- eventssm

class EpochTimer(L.Callback):
    """Seconds of every training epoch (``times``), for the per-epoch columns."""

    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._t)


def run_ours(head: str, dm, args, workdir: Path) -> dict:
    L.seed_everything(0)
    model = EventTPP(num_marks=dm.num_marks, log_gap_stats=dm.log_gap_stats, head=head,
                     time_prediction=args.time_prediction, time_scale=dm.time_scale,
                     backbone=EncoderConfig(d_model=args.d_model, n_layers=args.layers, d_state=8,
                                            discretization=Asymmetric(args.scheme)), lr=args.lr)
    timer = EpochTimer()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=workdir / f"ours-{head}", monitor="val/loss",
                                               mode="min", save_top_k=1)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if args.device == "cuda" else "cpu",
                        devices=1, logger=False,
                        callbacks=[timer, ckpt], enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(model, dm)
    res = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return {"ll": res["test/ll"], "time_ll": res["test/time_ll"], "type_ll": res["test/type_ll"],
            "rmse": res["test/rmse"], "acc": res["test/acc"], "epoch_s": float(np.mean(timer.times)),
            "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------- EasyTPP

def easytpp_yaml(model_id: str, data_dir: Path, out_dir: Path, K: int, args, batch_size: int,
                 max_len: int, dtime_max: float) -> str:
    specs = {"IntensityFree": "model_specs: {num_mix_components: 8}",
             "S2P2": "model_specs: {P: 16}",
             "NHP": "model_specs: {beta: 1.0, bias: true}"}.get(model_id, "")
    return f"""
pipeline_config_id: runner_config
data:
  bench:
    data_format: pkl
    train_dir: {data_dir / 'train.pkl'}
    valid_dir: {data_dir / 'dev.pkl'}
    test_dir: {data_dir / 'test.pkl'}
    data_specs:
      num_event_types: {K}
      pad_token_id: {K}
      padding_side: right
      truncation_side: right
      max_len: {max_len}
run:
  base_config:
    stage: train
    backend: torch
    dataset_id: bench
    runner_id: std_tpp
    model_id: {model_id}
    base_dir: {out_dir}
  trainer_config:
    batch_size: {batch_size}
    max_epoch: {args.epochs}
    shuffle: true
    optimizer: adam
    learning_rate: {args.lr}
    valid_freq: 1
    use_tfb: false
    metrics: [acc, rmse]
    seed: 2019
    gpu: {0 if args.device == "cuda" else -1}
  model_config:
    hidden_size: {args.d_model}
    time_emb_size: 16
    num_layers: 2
    num_heads: 2
    mc_num_sample_per_step: 20
    sharing_param_layer: false
    loss_integral_num_sample_per_step: 20
    dropout_rate: 0.0
    use_ln: false
    {specs}
    thinning:
      num_seq: 10
      num_sample: 1
      num_exp: 200
      look_ahead_time: 10
      patience_counter: 5
      over_sample_rate: 5
      num_samples_boundary: 5
      dtime_max: {dtime_max}
      num_step_gen: 1
"""


def run_easytpp(model_id: str, dm, args, workdir: Path) -> dict:
    from easy_tpp.config_factory import Config
    from easy_tpp.runner import Runner
    from easy_tpp.utils import RunnerPhase

    data_dir = workdir / "easytpp_data"
    max_len = int(max(dm.table.lengths()))
    gaps = np.concatenate([np.diff(t) for t in dm.datasets["train"].table.times])
    cfg_path = workdir / f"easytpp_{model_id}.yaml"
    cfg_path.write_text(easytpp_yaml(model_id, data_dir, workdir / f"easytpp_{model_id}", dm.num_marks,
                                     args, dm.batch_size, max_len, float(np.quantile(gaps, 0.999) * 2)))
    with contextlib.redirect_stdout(io.StringIO()):
        config = Config.build_from_yaml_file(str(cfg_path), experiment_id="run")
        runner = Runner.build_from_config(config)
    train, valid, test = (runner._data_loader.train_loader(), runner._data_loader.valid_loader(),
                          runner._data_loader.test_loader())
    model = runner.model
    sampler = model.event_sampler
    model.event_sampler = None  # validation log-likelihood only: thinning predictions at test time
    times, best, best_state = [], -math.inf, None
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        runner.run_one_epoch(train, RunnerPhase.TRAIN)
        times.append(time.perf_counter() - t0)
        val = runner.run_one_epoch(valid, RunnerPhase.VALIDATE)["loglike"]
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    # EasyTPP's compensator is the mean intensity on an evenly spaced grid of
    # loss_integral_num_sample_per_step points over each gap (endpoints included): a biased
    # quadrature. Test with its training setting and with a finer grid (reported).
    ll_train_grid = runner.run_one_epoch(test, RunnerPhase.VALIDATE)["loglike"]
    model.loss_integral_num_sample_per_step = args.easytpp_eval_points
    model.event_sampler = sampler
    res = runner.run_one_epoch(test, RunnerPhase.VALIDATE)
    note = f"LL with its 20-point training grid: {ll_train_grid:.4f}" if model_id != "IntensityFree" else ""
    return {"ll": float(res["loglike"]), "time_ll": math.nan, "type_ll": math.nan,
            "rmse": float(res.get("rmse", math.nan)), "acc": float(res.get("acc", math.nan)),
            "epoch_s": float(np.mean(times)), "params": sum(p.numel() for p in model.parameters()),
            "note": note}


def easytpp_available() -> str | None:
    try:
        from importlib.metadata import version

        import easy_tpp  # noqa: F401

        return None if version("easy_tpp") == "0.3.0" else f"easy_tpp {version('easy_tpp')} != 0.3.0"
    except ImportError as err:
        return f"easy_tpp is not installed ({err}); pip install easy-tpp==0.3.0"


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's options: datasets, models, training and model sizes, device, output."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["hawkes", "nafld"])
    p.add_argument("--models", nargs="+", default=[*OURS, *EASYTPP])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--d-model", type=int, default=32, help="width of every model")
    p.add_argument("--layers", type=int, default=1, help="eventssm's Mamba blocks")
    p.add_argument("--scheme", default="mamba", help="eventssm's Asymmetric(scheme) discretization")
    p.add_argument("--easytpp-eval-points", type=int, default=200,
                   help="grid points of EasyTPP's compensator at test time (it trains with 20)")
    p.add_argument("--time-prediction", default=None, choices=["mean", "median"],
                   help="eventssm's predicted next gap (RMSE); default: median for the mixture, "
                        "mean for the intensity head")
    p.add_argument("--nafld-batch-size", type=int, default=64)
    p.add_argument("--hawkes-sequences", type=int, default=1024)
    p.add_argument("--hawkes-events", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: every model on GPU 0 (eventssm through Lightning, EasyTPP gpu: 0)")
    p.add_argument("--out", default=None, help="also write the table (markdown) here")
    return p.parse_args(argv)


def bench_model(model: str, name: str, dm, args, work: Path) -> tuple:
    """Train and test one model on one dataset: its table row (a failure is a row with a note)."""
    t0 = time.perf_counter()
    try:
        if model in OURS:
            r = run_ours(model, dm, args, work)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                r = run_easytpp(model, dm, args, work)
        note = r.pop("note", "")
    except Exception as err:  # a failing rival is a result, not a crash
        tb_txt = traceback.format_exc().strip().splitlines()
        note = f"failed: {type(err).__name__}: {err} ({tb_txt[-3].strip()})"
        r = dict(ll=math.nan, time_ll=math.nan, type_ll=math.nan, rmse=math.nan,
                 acc=math.nan, epoch_s=math.nan, params=0)
    label = f"eventssm {model}" if model in OURS else f"EasyTPP {model}"
    print(f"  {name} {label}: ll {r['ll']:.4f} rmse {r['rmse']:.4f} acc {r['acc']:.4f} "
          f"{r['epoch_s']:.2f} s/epoch ({time.perf_counter() - t0:.0f} s) {note}",
          file=sys.stderr, flush=True)
    return (name, label, r["ll"], r["time_ll"], r["type_ll"], r["rmse"], r["acc"],
            r["epoch_s"], r["params"], note)


def bench_dataset(name: str, args, missing: str | None, work: Path, lines: list, rows: list) -> None:
    """Every model of ``--models`` on one dataset: its description to ``lines``, its rows to ``rows``."""
    try:
        dm = make_data(name, args)
        dm.build()
    except ImportError as err:
        lines.append(f"{name}: skipped ({err})")
        return
    (work / "easytpp_data").mkdir(parents=True)
    for split, key in (("train", "train"), ("val", "dev"), ("test", "test")):
        tb = dm.datasets[split].table
        write_easytpp(work / "easytpp_data" / f"{key}.pkl", tb.times, tb.marks, dm.num_marks, split)
    n_ev = {s: int(sum(len(t) - 1 for t in dm.datasets[s].table.times)) for s in dm.datasets}
    lines.append(f"{name}: {len(dm.table)} sequences, {dm.num_marks} types, scored events "
                 f"train/val/test {n_ev['train']}/{n_ev['val']}/{n_ev['test']}")
    true = dm.true_log_likelihood("test")
    if true is not None:
        rows.append((name, "true process", true["ll"], true["time_ll"], true["type_ll"],
                     math.nan, math.nan, math.nan, 0, ""))
    for model in args.models:
        if model not in OURS and missing:
            continue
        rows.append(bench_model(model, name, dm, args, work))


def results_table(rows: list) -> list[str]:
    """The markdown table of the rows (NaN cells left empty)."""
    f = lambda x, d=4: "" if isinstance(x, float) and math.isnan(x) else f"{x:.{d}f}"
    table = ["| data | model | test LL/event | time LL | type LL | RMSE | type acc | s/epoch | params | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r[0]} | {r[1]} | {f(r[2])} | {f(r[3])} | {f(r[4])} | {f(r[5])} | {f(r[6])} | "
                     f"{f(r[7], 2)} | {r[8] or ''} | {r[9]} |")
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    logging.getLogger("easy_tpp").setLevel(logging.ERROR)
    load0 = tuple(round(x, 1) for x in os.getloadavg())
    missing = easytpp_available()
    lines = [f"eventssm TPP bench: epochs={args.epochs}, batch={args.batch_size} (nafld "
             f"{args.nafld_batch_size}), lr={args.lr}, "
             f"width={args.d_model}, eventssm: {args.layers} Asymmetric({args.scheme}) layer(s), next gap = "
             f"predictive {args.time_prediction or 'median (mixture) / mean (intensity)'}, "
             f"torch {torch.__version__}, "
             + ("1 CPU thread" if args.device == "cpu" else torch.cuda.get_device_name(0))]
    if missing:
        lines.append(f"EasyTPP rows skipped: {missing}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            bench_dataset(name, args, missing, Path(tmp) / name, lines, rows)
    lines.append(f"EasyTPP test LL: compensator on {args.easytpp_eval_points} grid points per gap "
                 f"(IntensityFree: exact); eventssm: exact (mixture) / Gauss-Legendre to ~1e-7 (intensity)")
    if args.device == "cpu":
        lines.append(f"load average (1, 5, 15 min) at the start {load0}, at the end "
                     f"{tuple(round(x, 1) for x in os.getloadavg())}: the CPU is shared with other "
                     f"jobs, so times are indicative; every model ran in the same conditions, one "
                     f"after another")
    text = "\n".join(lines + [""] + results_table(rows))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
