"""The base of every task: optimisation (AdamW, warmup, cosine decay), loss logging that is exact
over a split and under DDP, checkpoints with checksums, and the encoder built from a config.

Batches are the dicts of DESIGN §5 (see :mod:`eventssm.datasets.collate`): the encoder takes the
gaps (``integration_timesteps``, float64) and ``lengths`` that the collate formed once, and
scales the gaps to the model's time unit. Packed batches (``cu_seqlens``) are taken alike.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from typing import Literal

import lightning as L
import torch
from torch import Tensor

from eventssm.models import EventEncoder
from eventssm.tasks.checkpointing import (
    IntegrityCheckpointIO,
    add_checksums,
    checkpoint_errors,
    verify_checkpoint,
)
from eventssm.tasks.config import EncoderConfig

__all__ = ["EventTask"]


class EventTask(L.LightningModule):
    """Shared optimisation for the tasks: AdamW with a linear warmup and cosine decay.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, ``A_log``, ``D``, the
            rate ``rho`` and embeddings).
        warmup_steps: linear warmup steps.
        scheduler: ``"cosine"`` (decay to ``min_lr_ratio * lr`` over the run) or ``"constant"``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        compile: run the task's ``forward`` (encoder or language model and head) under
            ``torch.compile`` once a Trainer sets the model up (fit, validate, test, predict);
            see :meth:`configure_model`. The loss, metrics and logging stay eager.
    """

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 0,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1,
                 compile: bool = False):
        super().__init__()
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.scheduler = scheduler
        self.min_lr_ratio = min_lr_ratio
        # not ``self.compile``: that name is nn.Module.compile, which configure_model calls
        self.compile_forward = compile

    # Batches from the DataModules' collate are valid by construction (the table checked the
    # times, values and marks when it was built), so the tasks skip the encoder's value checks,
    # each a host sync. Set True on an instance that is fed batches from elsewhere.
    validate_batches: bool = False

    def _step(self, batch: dict, stage: str) -> Tensor:
        """Loss of one batch, logged under ``stage`` (``train``, ``val`` or ``test``); what
        each task fills in. The training loss it returns is what is optimised."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _encoder_kwargs(self, batch: dict) -> dict:
        """The encoder's inputs from a §5 batch: the gaps the collate formed once (float64), and
        the lengths (padded) or ``cu_seqlens`` (packed); the encoder scales the gaps to the
        model's time unit and checks values only with :attr:`validate_batches`."""
        packed = batch.get("cu_seqlens")
        return dict(values=batch.get("values"), marks=batch.get("marks"),
                    integration_timesteps=batch["integration_timesteps"],
                    lengths=batch["lengths"] if packed is None else None, cu_seqlens=packed,
                    observed=batch.get("observed"), check_values=self.validate_batches)

    def configure_model(self) -> None:
        """With ``compile``, compile this module's ``__call__`` (``forward``) in place with
        ``nn.Module.compile``: parameter names, hence checkpoints, are the eager module's.

        Lightning calls this hook in every process before the first step of each
        fit/validate/test/predict; compiling in ``__init__`` instead would be lost in the
        processes of ``ddp_spawn`` (a pickled module drops its compiled ``__call__``).

        The compiled region is ``forward`` alone: the steps' losses, torchmetrics and
        ``self.log`` read values back or mutate Python state, each a graph break. ``forward``
        makes no host sync on padded DataModule batches (``validate_batches`` is False, so the
        encoder runs with ``check_values=False``). The default mode on every device: batch
        shapes change from batch to batch (padded to the longest sequence, or packed to the
        batch's event count), so after one recompilation they become symbolic, where
        ``"reduce-overhead"`` would record a CUDA graph per shape and ``"max-autotune"`` would
        spend its compile time tuning GEMMs around a scan and conv that are custom ops it does
        not tune. What cannot be traced runs eagerly between compiled graphs (a graph break, not
        an error): on the CPU the chunked scan (:mod:`eventssm.dispatch` says why); on CUDA the
        Triton scan and conv are custom ops, which stay in the graph as one node each.
        """
        if self.compile_forward and self._compiled_call_impl is None:
            self.compile()

    def _save_hparams(self) -> None:
        """``save_hyperparameters()`` of the subclass's ``__init__``, keeping only its own
        arguments: LightningCLI records every linked data value (``d_target`` for a classifier,
        say) in the hyperparameters, and ``--ckpt_path`` would then pass it back to a class
        that does not take it."""
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        params = inspect.signature(type(self).__init__).parameters
        for key in list(self.hparams):
            if key not in params and not key.startswith("_"):
                del self.hparams[key]

    def _global_mean(self, loss: Tensor, n: int) -> Tensor:
        """The loss to optimise: this process's mean over ``n`` items, rescaled so that DDP's
        gradient average equals the gradient of the mean over the whole global batch.

        Processes can hold different numbers of targets in one step (per-event targets of
        sequences of different lengths, masked forecasts); averaging per-process means would
        then weight items unequally and differ from one process with the same global batch.
        """
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        if world == 1:
            return loss
        count = torch.tensor(float(n), device=loss.device)
        total = trainer.strategy.reduce(count, reduce_op="sum")
        return loss * (n * world) / total.clamp(min=1)

    def _log_loss(self, stage: str, loss: Tensor, n: int) -> None:
        """Log the loss: per step in training, as the exact mean over the split (weighted by
        ``n`` items per batch, synced across processes by torchmetrics) in val/test."""
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return
        metric = getattr(self, f"{stage}_loss")
        metric.update(loss.detach(), weight=n)
        self.log(f"{stage}/loss", metric, prog_bar=True, on_step=False, on_epoch=True,
                 batch_size=n)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Checksums of every tensor (eventssm.tasks.checkpointing); the CheckpointIO that the
        # ResumeCallback installs adds them itself when it writes the file.
        trainer = self._trainer
        if trainer is None or not isinstance(trainer.strategy.checkpoint_io, IntegrityCheckpointIO):
            add_checksums(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Already checked when a trainer's IntegrityCheckpointIO loaded the file.
        verify_checkpoint(checkpoint)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """``LightningModule.load_from_checkpoint`` that refuses an empty, truncated or altered
        file with a :class:`~eventssm.tasks.checkpointing.CheckpointError` naming it."""
        if not isinstance(checkpoint_path, (str, os.PathLike)) or "://" in os.fspath(checkpoint_path):
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        with checkpoint_errors(checkpoint_path):
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            skip = (p.dim() < 2 or getattr(p, "_no_weight_decay", False)
                    or name.endswith(("A_log", ".D", "rho")) or "embedding" in name)
            (no_decay if skip else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        if self.scheduler == "constant" and self.warmup_steps == 0:
            return opt
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warm, floor = self.warmup_steps, self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if self.scheduler == "constant":
                return 1.0
            frac = min((step - warm) / max(total - warm, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _encoder(backbone: EncoderConfig, d_input: int, num_marks: int, use_observed: bool,
             time_scale: float):
    cfg = dataclasses.asdict(backbone) if dataclasses.is_dataclass(backbone) else dict(backbone)
    cfg["discretization"] = backbone.discretization  # asdict would deep-copy; keep the object
    # Checkpoints written before time_scale moved to the task carry it in the backbone config.
    legacy = cfg.pop("time_scale", None) or getattr(backbone, "time_scale", None)
    if legacy not in (None, 1.0) and time_scale == 1.0:
        time_scale = float(legacy)
    return EventEncoder(d_input=d_input, num_marks=num_marks, use_observed=use_observed,
                        time_scale=time_scale, **cfg)

