"""The three EventTPP heads side by side on synthetic Hawkes data, against the true process.

::

    python experiments/tpp_heads.py --seeds 0                       # one seed
    python experiments/tpp_heads.py --seeds 0 1 2 --out experiments/results/tpp_heads_cpu.md

Heads (:mod:`eventssm.tpp`, :mod:`eventssm.tpp_state`): ``mixture`` (log-normal mixture,
intensity-free), ``intensity`` (a decaying projection of the encoder's features, NHP style) and
``state`` (intensities read out of the last block's own SSM state evolved between events). Every
head gets the same encoder (``--layers`` blocks of width ``--d-model``, ``d_state`` 8, the
``--coupling`` discretization), data, optimiser and epochs; the epoch with the best validation
loss is tested. Per seed (the data's simulation, its split and the model's initialisation all
use it): test log-likelihood per scored event (nats), its time and type parts, the distance to
the true process's log-likelihood on the same events (true − model: 0 is a perfect model),
next-gap RMSE (the predictive median for the mixture, the mean for the others), next-type
accuracy, training seconds per epoch and parameters. Then the mean and standard deviation over
seeds. CPU, one thread.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from eventssm import Additive, Asymmetric
from eventssm.datasets import SyntheticTPPDataModule
from eventssm.tasks import EncoderConfig, EventTPP

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from tpp import EpochTimer  # noqa: E402  (experiments/bench/tpp.py)

HEADS = ("mixture", "intensity", "state")
COUPLINGS = {"asymmetric": Asymmetric, "additive": Additive}


def run(head: str, seed: int, dm, args, work: Path) -> dict:
    """Train one head on one seed's data, test the best-validation epoch."""
    L.seed_everything(seed)
    model = EventTPP(num_marks=dm.num_marks, log_gap_stats=dm.log_gap_stats, head=head,
                     time_scale=dm.time_scale, lr=args.lr,
                     backbone=EncoderConfig(d_model=args.d_model, n_layers=args.layers, d_state=8,
                                            discretization=COUPLINGS[args.coupling](args.scheme)))
    timer = EpochTimer()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=work / f"{head}-{seed}", monitor="val/loss",
                                               mode="min", save_top_k=1)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                        callbacks=[timer, ckpt], enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(model, dm)
    res = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return {"ll": res["test/ll"], "time_ll": res["test/time_ll"], "type_ll": res["test/type_ll"],
            "rmse": res["test/rmse"], "acc": res["test/acc"], "epoch_s": float(np.mean(timer.times)),
            "params": sum(p.numel() for p in model.parameters())}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--coupling", default="asymmetric", choices=sorted(COUPLINGS))
    p.add_argument("--scheme", default="mamba")
    p.add_argument("--sequences", type=int, default=256, help="Hawkes sequences (70/15/15 split)")
    p.add_argument("--events", type=int, default=48, help="events per sequence at most")
    p.add_argument("--out", default=None, help="also write the printed text (markdown) here")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    load0 = tuple(round(x, 1) for x in os.getloadavg())
    rows = []  # (seed, head, ll, time_ll, type_ll, gap, rmse, acc, epoch_s, params)
    trues = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            dm = SyntheticTPPDataModule(process="hawkes", num_marks=2, n_sequences=args.sequences,
                                        max_events=args.events, batch_size=args.batch_size,
                                        data_seed=seed, seed=seed)
            dm.build()
            true = dm.true_log_likelihood("test")
            trues.append(true["ll"])
            rows.append((seed, "true process", true["ll"], true["time_ll"], true["type_ll"], 0.0,
                         math.nan, math.nan, math.nan, 0))
            for head in args.heads:
                t0 = time.perf_counter()
                r = run(head, seed, dm, args, Path(tmp))
                rows.append((seed, head, r["ll"], r["time_ll"], r["type_ll"], true["ll"] - r["ll"],
                             r["rmse"], r["acc"], r["epoch_s"], r["params"]))
                print(f"  seed {seed} {head}: ll {r['ll']:.4f} (true {true['ll']:.4f}) "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    f = lambda x, d=4: "" if isinstance(x, float) and math.isnan(x) else f"{x:.{d}f}"
    lines = [f"Hawkes (2 types), {args.sequences} sequences of at most {args.events} events, seeds "
             f"{args.seeds}; every head: {args.layers} {args.coupling.capitalize()}({args.scheme}) "
             f"block(s), d_model {args.d_model}, d_state 8, {args.epochs} epochs, batch "
             f"{args.batch_size}, lr {args.lr}, best-validation epoch tested; torch "
             f"{torch.__version__}, 1 CPU thread", "",
             "| seed | head | test LL/event | time LL | type LL | true − model | RMSE | type acc | s/epoch | params |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {f(r[2])} | {f(r[3])} | {f(r[4])} | {f(r[5])} | {f(r[6])} | "
                     f"{f(r[7])} | {f(r[8], 2)} | {r[9] or ''} |")
    lines += ["", f"Mean ± std over {len(args.seeds)} seed(s) (std over seeds; 0 with one seed):", "",
              "| head | test LL/event | true − model | RMSE | type acc | s/epoch |", "|---|---|---|---|---|---|"]
    def cell(sel: list, i: int, d: int = 4) -> str:
        vals = [r[i] for r in sel]
        return "" if math.isnan(vals[0]) else f"{np.mean(vals):.{d}f} ± {np.std(vals):.{d}f}"

    for head in ("true process", *args.heads):
        sel = [r for r in rows if r[1] == head]
        lines.append(f"| {head} | {cell(sel, 2)} | {cell(sel, 5)} | {cell(sel, 6)} | {cell(sel, 7)} | "
                     f"{cell(sel, 8, 2)} |")
    lines += ["", f"total {time.perf_counter() - t_start:.0f} s; load average (1, 5, 15 min) at the "
              f"start {load0}, at the end {tuple(round(x, 1) for x in os.getloadavg())} (the CPU "
              f"is shared: times are indicative)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
