"""Exact resume: a real `eventssm fit` killed with SIGKILL mid-epoch and resumed with
`--ckpt_path last` ends with the weights, optimizer state and metrics.csv of an uninterrupted run,
bit for bit, with dropout on; plus the pieces (random states, the resumable loader, finding the
last checkpoint)."""

from __future__ import annotations

import filecmp
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from eventssm.datasets import GlobalBatchSampler, ResumableDataLoader
from eventssm.tasks.cli import main
from eventssm.tasks.resume import (
    capture_rng_state,
    find_last_checkpoint,
    resolve_ckpt_path,
    restore_rng_state,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "sinusoid_classification.yaml"
# 67 training sequences / batch 8 = 8 steps per epoch (drop_last), 3 epochs; the last checkpoint
# is refreshed every 3 steps (mid-epoch resume points) and at every epoch's end; dropout on the
# input.
FIT = ["fit", "--config", str(CONFIG), "--model.backbone.d_model", "16",
       "--model.backbone.n_layers", "1", "--model.backbone.d_state", "4",
       "--model.backbone.dropout", "0.3", "--data.n_sequences", "96", "--data.batch_size", "8",
       "--data.drop_last", "true", "--data.max_len", "24", "--trainer.max_epochs", "3",
       "--trainer.log_every_n_steps", "1",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--resume.every_n_train_steps", "3"]


# ---------------------------------------------------------------------------------------------- pieces
def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    def draw():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                np.random.randn(), random.gauss(0, 1))

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in python's
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    first = draw()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    assert restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)) == []
    assert draw() == first


@pytest.mark.parametrize("fast", [True, False], ids=["skip-in-sampler", "drop-loaded"])
def test_resumable_loader_continues_at_the_next_batch(fast):
    ds = list(range(37))
    if fast:
        sampler = GlobalBatchSampler(ds, 4, shuffle=True, seed=5, drop_last=False)
    else:
        sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(5))
    make = lambda: ResumableDataLoader(ds, batch_size=4, sampler=sampler)
    first = make()
    if fast:
        first.sampler.set_epoch(2)
    it = iter(first)
    served = [next(it).tolist() for _ in range(3)]
    state = first.state_dict()
    rest = [b.tolist() for b in it]
    assert state == {"epoch": 2 if fast else 0, "batches": 3} and len(served) + len(rest) == 10
    if not fast:  # a RandomSampler reshuffles: give the resumed pass the same generator state
        sampler.generator.manual_seed(5)
    again = make()
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == rest
    assert len([b for b in again]) == 10  # one pass only: the next epoch is whole
    other = make()
    other.load_state_dict({"epoch": 7, "batches": 3})
    if fast:
        other.sampler.set_epoch(8)  # Lightning moved on: epoch 7's position does not apply to 8
    assert len(list(other)) == 10


def _trainer(tmp_path: Path, **logger_kw) -> L.Trainer:
    logger = CSVLogger(tmp_path / "runs", name="exp", **logger_kw)
    return L.Trainer(logger=logger, callbacks=[ModelCheckpoint(save_last=True)],
                     enable_progress_bar=False, enable_model_summary=False)


def test_find_last_checkpoint_takes_the_highest_version_that_has_one(tmp_path):
    root = tmp_path / "runs" / "exp"
    for v, files in {0: ["last.ckpt"], 1: ["last.ckpt", "best.ckpt"], 2: ["best.ckpt"], 3: []}.items():
        (root / f"version_{v}" / "checkpoints").mkdir(parents=True)
        for f in files:
            (root / f"version_{v}" / "checkpoints" / f).write_bytes(b"x")
    trainer = _trainer(tmp_path)
    assert find_last_checkpoint(trainer) == str(root / "version_1" / "checkpoints" / "last.ckpt")
    assert trainer.logger.version == 1  # the resumed run logs where the interrupted one did
    pinned = _trainer(tmp_path, version=0)
    assert find_last_checkpoint(pinned) == str(root / "version_0" / "checkpoints" / "last.ckpt")


def test_find_last_checkpoint_fails_loudly_when_there_is_none(tmp_path):
    (tmp_path / "runs" / "exp" / "version_0" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no last checkpoint") as e:
        find_last_checkpoint(_trainer(tmp_path))
    print(e.value)
    assert str(tmp_path / "runs" / "exp" / "version_*" / "checkpoints") in str(e.value)


def test_resolve_ckpt_path_continues_the_run_and_finds_its_best(tmp_path):
    ckpts = tmp_path / "runs" / "exp" / "version_3" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"state_dict": {}}, ckpts / "best-1.ckpt")
    torch.save({"callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}":
                              {"best_model_path": str(ckpts / "best-1.ckpt")}}}, ckpts / "last.ckpt")
    (ckpts.parent / "metrics.csv").write_text("epoch,step\n0,0\n")
    trainer = _trainer(tmp_path)
    assert resolve_ckpt_path(trainer, "best", "test") == str(ckpts / "best-1.ckpt")
    assert trainer.logger._version is None  # a test run logs into a new version
    assert resolve_ckpt_path(trainer, "last", "fit") == str(ckpts / "last.ckpt")
    assert trainer.logger.version == 3
    # set aside so that the CSV logger, which deletes metrics.csv when fit starts, cannot
    assert (ckpts.parent / "metrics.csv.resume").read_text() == "epoch,step\n0,0\n"
    assert not (ckpts.parent / "metrics.csv").exists()
    # an explicit path of an auto-versioned run continues that version too
    other = _trainer(tmp_path)
    assert resolve_ckpt_path(other, str(ckpts / "last.ckpt"), "fit") == str(ckpts / "last.ckpt")
    assert other.logger.version == 3


def test_cli_ckpt_path_last_without_a_run_is_an_error(tmp_path):
    args = [*FIT, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", "last"]
    with pytest.raises(FileNotFoundError, match="no last checkpoint") as e:
        main(args)
    assert str(tmp_path / "runs") in str(e.value)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing trained from scratch


# ---------------------------------------------------------------------------------------------- SIGKILL
def _fit(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "eventssm.tasks.cli", *FIT, "--trainer.logger.init_args.save_dir",
           str(out / "runs"), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait(p: subprocess.Popen) -> tuple[int, str]:
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def _kill_at(step: int, hook: str) -> list[str]:
    """A callback in the subprocess that SIGKILLs it at a fixed place (tests/resume_helpers.py)."""
    return ["--trainer.callbacks+=tests.resume_helpers.KillAt", f"--trainer.callbacks.step={step}",
            f"--trainer.callbacks.hook={hook}"]


def _tensors(obj, path=""):
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}/{i}")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    ref, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"
    # Killed in the middle of step 13 (epoch 1, its 6th batch; after forward and backward,
    # before the optimizer step): the last checkpoint on disk is step 12's.
    procs = [_fit(ref), _fit(cut, *_kill_at(13, "on_before_optimizer_step"))]
    (rc_ref, err_ref), (rc_cut, _) = map(_wait, procs)
    assert rc_ref == 0, err_ref[-3000:]
    assert rc_cut == -signal.SIGKILL
    run = cut / "runs" / "sinusoid_classification" / "version_0"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    position = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    print("interrupted run's last checkpoint: step", ckpt["global_step"], "loader", position)
    assert ckpt["global_step"] == 12 and position == {"epoch": 1, "batches": 4}  # mid-epoch
    assert ckpt["callbacks"]["ResumeCallback"]["taken"] == "next_step"

    rc, err = _wait(_fit(cut, "--ckpt_path", "last"))
    assert rc == 0, err[-3000:]
    assert "may differ" not in err and "history not continued" not in err, err[-3000:]

    runs = ref / "runs" / "sinusoid_classification"
    assert sorted(os.listdir(run.parent)) == sorted(os.listdir(runs)) == ["version_0"]
    a = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        ta, tb = dict(_tensors(a[key])), dict(_tensors(b[key]))
        assert ta.keys() == tb.keys()
        diff = {k: (ta[k].double() - tb[k].double()).abs().max().item() for k in ta
                if not torch.equal(ta[k], tb[k])}
        print(key, "tensors that differ:", diff)
        assert not diff
    assert sorted(os.listdir(runs / "version_0" / "checkpoints")) == sorted(os.listdir(run / "checkpoints"))
    same_csv = filecmp.cmp(runs / "version_0" / "metrics.csv", run / "metrics.csv", shallow=False)
    if not same_csv:
        print((runs / "version_0" / "metrics.csv").read_text()[-2000:])
        print((run / "metrics.csv").read_text()[-2000:])
    assert same_csv
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) > 24  # the history before the kill is there
