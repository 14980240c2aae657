"""Data-parallel scaling of an event classifier: 1 process vs N processes (Lightning DDP).

Trains the same EventClassifier (synthetic irregular sinusoids, same seed, same *global* batch)
once per device count and prints throughput (samples/s), scaling efficiency
(throughput_N / (N x throughput_1)) and the loss curves side by side. Every configuration runs in
its own subprocess (Lightning's DDP launcher re-runs this script for the other ranks).

    python experiments/bench/ddp.py                          # GPUs: 1 and 2 devices, NCCL
    python experiments/bench/ddp.py --accelerator cpu --steps 20 --d-model 32 --global-batch 32

The loss printed is the mean over the global batch (all-reduced across ranks), so curves from
different device counts are comparable step by step. Throughput counts steps after
``--warmup`` steps, timed with the device synchronised.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def worker(args) -> None:
    import lightning as L
    import torch
    import torch.distributed as dist

    from eventssm import Asymmetric
    from eventssm.datasets import SyntheticDataModule
    from eventssm.tasks import EncoderConfig, EventClassifier

    class Meter(L.Callback):
        """Global-mean loss per step and wall time of the steps after warm-up."""

        def __init__(self):
            self.losses, self.t0, self.t1 = [], None, None

        def _sync(self, trainer):
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"].detach().float().clone()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(loss)
                loss /= dist.get_world_size()
            self.losses.append(loss.item())
            step = trainer.global_step
            if step == args.warmup:
                self._sync(trainer)
                self.t0 = time.perf_counter()
            if step == args.steps:
                self._sync(trainer)
                self.t1 = time.perf_counter()

    L.seed_everything(args.seed, workers=True)
    dm = SyntheticDataModule(kind="sinusoid", n_sequences=args.sequences, min_len=args.seq_len,
                             max_len=args.seq_len, num_classes=4, batch_size=args.global_batch,
                             num_workers=args.num_workers, val_fraction=0.05, test_fraction=0.05,
                             seed=args.seed, data_seed=args.seed)
    dm.build()
    model = EventClassifier(
        num_classes=dm.num_classes, d_input=dm.d_input, use_observed=dm.use_observed,
        backbone=EncoderConfig(d_model=args.d_model, n_layers=args.layers, d_state=16,
                               discretization=Asymmetric("zoh"), pooling="mean"),
        lr=1e-3, scheduler="constant")
    meter = Meter()
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", max_steps=args.steps,
        precision=args.precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[meter], deterministic=False)
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        n = args.steps - args.warmup
        with open(args.out, "w") as f:
            json.dump({"devices": args.devices, "losses": meter.losses,
                       "seconds": meter.t1 - meter.t0, "samples": n * args.global_batch,
                       "throughput": n * args.global_batch / (meter.t1 - meter.t0)}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices-list", default="1,2")
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--global-batch", type=int, default=256)
    p.add_argument("--sequences", type=int, default=0, help="default: enough for --steps batches")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    p.add_argument("--save", default="", help="also write the report (markdown) here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.sequences:
        args.sequences = int((args.steps + 2) * args.global_batch / 0.9) + 1
    if args.worker:
        return worker(args)

    results = []
    tmp = tempfile.mkdtemp()
    for n in [int(x) for x in args.devices_list.split(",")]:
        out = os.path.join(tmp, f"ddp{n}.json")
        cmd = [sys.executable, __file__, "--worker", "--devices", str(n), "--out", out] + [
            a for a in sys.argv[1:] if a != "--worker"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"[{n} device(s)] finished in {time.perf_counter() - t:.0f} s", flush=True)
        with open(out) as f:
            results.append(json.load(f))

    import torch

    dev = torch.cuda.get_device_name(0) if args.accelerator == "gpu" and torch.cuda.is_available() else "CPU"
    lines = [f"# DDP scaling: EventClassifier, {dev}, precision {args.precision}", "",
             f"global batch {args.global_batch}, L {args.seq_len}, d_model {args.d_model}, "
             f"{args.layers} layers, Asymmetric(zoh), {args.steps} steps ({args.warmup} warm-up), seed {args.seed}",
             "", "| devices | samples/s | s per step | scaling efficiency |", "|---|---|---|---|"]
    base = results[0]["throughput"]
    for r in results:
        eff = r["throughput"] / (r["devices"] * base)
        lines.append(f"| {r['devices']} | {r['throughput']:.1f} | "
                     f"{r['seconds'] / (args.steps - args.warmup):.4f} | {eff:.3f} |")
    lines += ["", "loss (global-batch mean) per step:", "",
              "| step | " + " | ".join(f"{r['devices']} dev" for r in results) + " | max abs diff |",
              "|---" * (len(results) + 2) + "|"]
    every = max(1, args.steps // 20)
    worst = 0.0
    for i in range(len(results[0]["losses"])):
        vals = [r["losses"][i] for r in results]
        diff = max(vals) - min(vals)
        worst = max(worst, diff)
        if i % every == 0 or i == len(results[0]["losses"]) - 1:
            lines.append(f"| {i} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {diff:.2e} |")
    lines += ["", f"largest loss difference over all steps: {worst:.2e}"]
    report = "\n".join(lines)
    print(report)
    if args.save:
        with open(args.save, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
