"""Helpers for tests/test_resume.py that a training subprocess imports (``tests.resume_helpers``)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """SIGKILL this process (no cleanup, as a crash or an OOM kill) in hook ``hook`` once the
    trainer's global step is ``step``: a deterministic place to interrupt a real ``eventssm fit``."""

    def __init__(self, step: int, hook: str = "on_before_optimizer_step"):
        self.step = step
        self.hook = hook

    def _maybe_kill(self, trainer, hook: str) -> None:
        if hook == self.hook and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._maybe_kill(trainer, "on_before_optimizer_step")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe_kill(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe_kill(trainer, "on_train_batch_end")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._maybe_kill(trainer, "on_validation_batch_end")

    def on_validation_end(self, trainer, pl_module):
        self._maybe_kill(trainer, "on_validation_end")

    def on_train_epoch_end(self, trainer, pl_module):
        self._maybe_kill(trainer, "on_train_epoch_end")

