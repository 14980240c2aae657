"""Kill a real ``eventssm fit`` with SIGKILL at many places, resume each with ``--ckpt_path last``,
and compare with one uninterrupted run: weights, optimizer state and metrics.csv, bit for bit.

    python experiments/resume_check.py -o experiments/results/resume_check.md

The run is the tiny sinusoid classifier of tests/test_resume.py (dropout 0.3, 8 steps per epoch,
3 epochs, last checkpoint refreshed every 3 steps and at each epoch's end). Each kill point is a
(global step, hook) at which a callback (tests/resume_helpers.py ``KillAt``) SIGKILLs its own
process; ``--resume-twice`` kills the resumed run again at a later point before the final resume;
``--ddp`` trains with 2 processes (every rank kills itself at the point); ``--accelerator gpu``
trains on the GPU (bit-identical only where training itself is deterministic: ``--baseline``
compares two uninterrupted runs first). Prints a markdown table (one row per kill point).

    python experiments/resume_check.py --accelerator gpu --baseline -o experiments/results/resume_check_gpu.md
"""

from __future__ import annotations

import argparse
import filecmp
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_resume import FIT, _tensors  # noqa: E402

POINTS = [
    (7, "on_before_optimizer_step"),  # mid-step, mid-epoch 0 (last checkpoint: step 6)
    (8, "on_validation_batch_end"),  # during epoch 0's validation
    (8, "on_train_epoch_end"),  # after the epoch-end checkpoint was taken, before it was written
    (9, "on_train_batch_start"),  # first batch of epoch 1 (resume from the epoch-end checkpoint)
    (10, "on_train_batch_end"),  # right after a step
    (13, "on_before_optimizer_step"),  # mid-epoch 1 (the slow test's point)
    (16, "on_train_batch_start"),  # start of epoch 2, epoch-end checkpoint not yet written
    (23, "on_before_optimizer_step"),  # in the last step of the run
]


EXTRA: list[str] = []


def fit(out: Path, *extra: str) -> int:
    cmd = [sys.executable, "-m", "eventssm.tasks.cli", *FIT, "--trainer.logger.init_args.save_dir",
           str(out / "runs"), *EXTRA, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    # A session of its own: under DDP every rank kills itself, and any straggler goes with it.
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    _, err = p.communicate()
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if p.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(err[-3000:])
    return p.returncode


def kill_at(step: int, hook: str) -> list[str]:
    return ["--trainer.callbacks+=tests.resume_helpers.KillAt", f"--trainer.callbacks.step={step}",
            f"--trainer.callbacks.hook={hook}"]


def compare(ref: Path, out: Path) -> dict:
    ra = ref / "runs" / "sinusoid_classification" / "version_0"
    rb = out / "runs" / "sinusoid_classification" / "version_0"
    a = torch.load(ra / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(rb / "checkpoints" / "last.ckpt", weights_only=True)
    same = {}
    for key in ("state_dict", "optimizer_states"):
        ta, tb = dict(_tensors(a[key])), dict(_tensors(b[key]))
        same[key] = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    same["metrics.csv"] = filecmp.cmp(ra / "metrics.csv", rb / "metrics.csv", shallow=False)
    same["versions"] = sorted(os.listdir(rb.parent))
    return same


def resumed_from(out: Path) -> str:
    ckpt = torch.load(out / "runs" / "sinusoid_classification" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)
    pos = ckpt["loops"]["fit_loop"]["state_dict"].get("combined_loader", [{}])[0]
    return f"step {ckpt['global_step']} (epoch {pos.get('epoch')}, {pos.get('batches')} batches in)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", help="also write the table to this file")
    ap.add_argument("--resume-twice", action="store_true",
                    help="kill the resumed run again (8 steps later) before the final resume")
    ap.add_argument("--ddp", action="store_true", help="train with 2 processes (strategy ddp)")
    ap.add_argument("--accelerator", default="cpu", help="cpu or gpu (one device, two with --ddp)")
    ap.add_argument("--points", type=int, nargs="*", help="indices into the kill point list")
    ap.add_argument("--baseline", action="store_true",
                    help="first compare a second uninterrupted run (is training itself deterministic?)")
    args = ap.parse_args(argv)
    EXTRA.extend(["--trainer.accelerator", args.accelerator, "--trainer.devices", "2" if args.ddp else "1"])
    if args.ddp:
        EXTRA.extend(["--trainer.strategy", "ddp"])
    points = [POINTS[i] for i in args.points] if args.points else POINTS
    lines = ["| killed at (global step, hook) | resumed from | weights | optimizer | metrics.csv | version dirs |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref"
        assert fit(ref) == 0
        yes = lambda v: "equal" if v else "**differ**"
        if args.baseline:
            again = Path(tmp) / "ref2"
            assert fit(again) == 0
            s = compare(ref, again)
            lines.append(f"| not killed (a second uninterrupted run) | - | {yes(s['state_dict'])} | "
                         f"{yes(s['optimizer_states'])} | {yes(s['metrics.csv'])} | {s['versions']} |")
            print(lines[-1], flush=True)
        for i, (step, hook) in enumerate(points):
            out = Path(tmp) / f"k{i}"
            assert fit(out, *kill_at(step, hook)) == -signal.SIGKILL
            start = resumed_from(out)
            if args.resume_twice and step + 8 < 24:
                assert fit(out, "--ckpt_path", "last", *kill_at(step + 8, hook)) == -signal.SIGKILL
                start += f", then killed at {step + 8} and resumed from {resumed_from(out)}"
            assert fit(out, "--ckpt_path", "last") == 0
            s = compare(ref, out)
            lines.append(f"| {step}, {hook} | {start} | {yes(s['state_dict'])} | "
                         f"{yes(s['optimizer_states'])} | {yes(s['metrics.csv'])} | {s['versions']} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + f"\n\n{len(points)} kill points.\n"
    print(text)
    if args.output:
        Path(args.output).write_text(
            f"# SIGKILL and resume vs an uninterrupted run\n\n`python experiments/resume_check.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n{text}")


if __name__ == "__main__":
    main()
