"""Lightning tasks on event sequences: classification, regression/forecasting, byte-level LM.

Every task takes its backbone as a small dataclass (:class:`EncoderConfig`, :class:`LMConfig`)
whose ``discretization`` field is typed with the :class:`~eventssm.Discretization` base class, so
a LightningCLI config swaps it by ``class_path``::

    model:
      class_path: eventssm.EventClassifier
      init_args:
        backbone:
          discretization: {class_path: eventssm.Asymmetric, init_args: {scheme: zoh}}

or on the command line ``--model.backbone.discretization Scaled``. Values the model takes from
the data (``d_input``, ``num_marks``, ``num_classes``, ``use_observed``, ...) are separate
arguments, linked from the DataModule by :mod:`eventssm.cli`.

Batches are the dicts of DESIGN §5 (see :mod:`eventssm.datasets.collate`): the encoder takes
the gaps (``integration_timesteps``, float64) and ``lengths`` that the collate formed once, and
scales the gaps to the model's time unit. Every task also takes packed batches
(:func:`eventssm.datasets.pack_batch`: ``cu_seqlens`` and per-step tensors ``(1, T, ...)``) and
gives the same losses and metrics as on the padded batch of the same sequences.

This module imports Lightning and torchmetrics; the ``eventssm`` core does not import it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from eventssm.checkpointing import (
    IntegrityCheckpointIO,
    add_checksums,
    checkpoint_errors,
    verify_checkpoint,
)
from eventssm.discretization import Additive, Asymmetric, Discretization, Scaled, Standard
from eventssm.models import EventEncoder, MambaLM
from eventssm.packing import packed_timesteps, seq_index
from eventssm.time import timesteps_from_timestamps

__all__ = [
    "EncoderConfig",
    "LMConfig",
    "EventTask",
    "EventClassifier",
    "EventRegressor",
    "ByteLM",
    "splice_queries",
    "EventTPP",  # noqa: F822 (in eventssm.tpp_task, served lazily by __getattr__ below)
]


@dataclass
class EncoderConfig:
    """Architecture of the :class:`~eventssm.EventEncoder` behind a task."""

    d_model: int = 64  # feature width of every block
    n_layers: int = 2  # residual Mamba blocks
    d_state: int = 16  # N, state size per channel
    d_conv: int = 4  # causal depthwise conv width
    expand: int = 2  # d_inner = expand * d_model
    # A Discretization (swap by class_path) or an lrnnx scheme string ("mamba" = Asymmetric
    # coupling with the mamba scheme whenever timestamps are given, as in lrnnx).
    discretization: Discretization | str = "mamba"
    pooling: Literal["last", "mean", "time"] = "last"  # sequence-level tasks only
    dropout: float = 0.0  # on the input embedding
    time_features: bool = True  # also feed log1p(gap) as an input feature


@dataclass
class LMConfig:
    """Architecture of the :class:`~eventssm.MambaLM` behind :class:`ByteLM`."""

    d_model: int = 128
    n_layers: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    discretization: Discretization | str = "mamba"


# Checkpoints store the backbone config (with its Discretization) in their hyperparameters; allow
# these plain config classes under torch.load(weights_only=True), the default of
# load_from_checkpoint, so that it rebuilds the same discretization without weights_only=False.
torch.serialization.add_safe_globals([EncoderConfig, LMConfig, Standard, Asymmetric, Scaled,
                                      Additive])


class EventTask(L.LightningModule):
    """Shared optimisation for the tasks: AdamW with a linear warmup and cosine decay.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, ``A_log``, ``D``, the
            rate ``rho`` and embeddings).
        warmup_steps: linear warmup steps.
        scheduler: ``"cosine"`` (decay to ``min_lr_ratio * lr`` over the run) or ``"constant"``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
    """

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 0,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1):
        super().__init__()
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.scheduler = scheduler
        self.min_lr_ratio = min_lr_ratio

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
        # Checksums of every tensor (eventssm.checkpointing); the CheckpointIO that the
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
        file with a :class:`~eventssm.checkpointing.CheckpointError` naming it."""
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


def _check_time_scale(time_scale: float) -> float:
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or not (
            math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
    return float(time_scale)


def _encoder_kwargs(batch: dict) -> dict:
    """The encoder's inputs from a §5 batch: the gaps the collate formed once (float64), and the
    lengths (padded) or ``cu_seqlens`` (packed); the encoder scales the gaps to the model's time
    unit."""
    packed = batch.get("cu_seqlens")
    return dict(values=batch.get("values"), marks=batch.get("marks"),
                integration_timesteps=batch["integration_timesteps"],
                lengths=batch["lengths"] if packed is None else None, cu_seqlens=packed,
                observed=batch.get("observed"))


class EventClassifier(EventTask):
    """Classify event sequences (one label each), or every event (``per_event``: e.g. the next
    event's mark in a point process, targets ``-100`` where there is none).

    Args:
        num_classes: number of classes (linked from ``data.num_classes``).
        d_input: value channels (``data.d_input``; 0 for marks only).
        num_marks: event types (``data.num_marks``; 0 without marks).
        use_observed: batches carry an ``observed`` mask (``data.use_observed``).
        per_event: one prediction per event from the per-event features (``data.per_event``).
        backbone: the encoder architecture and discretization.
        time_scale: the model's time unit, as the factor applied to every gap of the batches
            (linked from ``data.time_scale``: by default 1 / the median training gap).
        label_smoothing: of the cross-entropy.
        **optim: :class:`EventTask` options (lr, weight_decay, warmup_steps, scheduler, ...).
    """

    def __init__(self, num_classes: int = 2, d_input: int = 0, num_marks: int = 0,
                 use_observed: bool = False, per_event: bool = False,
                 backbone: EncoderConfig | None = None, time_scale: float = 1.0,
                 label_smoothing: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 0,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        backbone = backbone if backbone is not None else EncoderConfig()
        self._save_hparams()
        self.per_event = per_event
        self.num_classes = num_classes
        self.encoder = _encoder(backbone, d_input, num_marks, use_observed,
                                _check_time_scale(time_scale))
        self.head = nn.Linear(backbone.d_model, num_classes)
        self.label_smoothing = label_smoothing
        kw = dict(task="multiclass", num_classes=num_classes, ignore_index=-100)
        self.train_acc = torchmetrics.Accuracy(**kw)
        self.val_acc = torchmetrics.Accuracy(**kw)
        self.test_acc = torchmetrics.Accuracy(**kw)
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()

    def forward(self, batch: dict) -> Tensor:
        """Logits ``(B, K)``, or ``(B, L, K)`` with ``per_event`` (``(1, T, K)`` for a packed
        batch, whose per-event targets are packed alike)."""
        if self.per_event:
            return self.head(self.encoder.encode(**_encoder_kwargs(batch)))
        return self.head(self.encoder(**_encoder_kwargs(batch)))

    def _step(self, batch: dict, stage: str, acc: torchmetrics.Metric) -> Tensor:
        logits = self(batch)
        y = batch["target"]
        loss = F.cross_entropy(logits.reshape(-1, self.num_classes).float(), y.reshape(-1),
                               ignore_index=-100, label_smoothing=self.label_smoothing)
        acc(logits.reshape(-1, self.num_classes), y.reshape(-1))
        n = int((y != -100).sum())
        self._log_loss(stage, loss, n)
        self.log(f"{stage}/acc", acc, prog_bar=stage != "train", on_epoch=True,
                 on_step=False, batch_size=n)
        return self._global_mean(loss, n) if stage == "train" else loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx) -> dict:
        probs = self(batch).float().softmax(-1)
        return {"index": batch.get("index"), "probs": probs, "pred": probs.argmax(-1)}


def splice_queries(batch: dict) -> tuple[dict, Tensor]:
    """Append each sequence's query times after its history as unobserved events.

    The history ``(B, L)`` and queries ``(B, Q)`` (``query_times``, ``query_mask``) become one
    right-padded sequence of ``L + Q`` steps: sequence ``b`` has its ``n_b`` events, then its
    ``q_b`` queries (values 0, ``observed`` False, mark 0), then padding. A causal encoder reads
    the query steps' features as forecasts: the state has evolved over the gap from the last
    observation to each query time, and no target value enters the input.

    Returns the spliced encoder inputs and the ``(B, Q)`` positions of the queries.
    """
    lengths, ts = batch["lengths"], batch["timestamps"]
    qt, qm = batch["query_times"], batch["query_mask"]
    Bsz, L = ts.shape
    Q = qt.shape[1]
    dev = ts.device
    q_count = qm.long().sum(1)
    new_len = lengths + q_count
    pos = lengths[:, None] + torch.arange(Q, device=dev)[None]  # (B, Q)
    real_q = qm
    last_q = torch.where(q_count > 0, q_count - 1, torch.zeros_like(q_count))
    Lp = L + Q
    hist = torch.arange(Lp, device=dev)[None] < lengths[:, None]  # (B, Lp)
    t = torch.zeros(Bsz, Lp, dtype=ts.dtype, device=dev)
    t[:, :L] = ts
    t = t.masked_fill(~hist, 0)
    t.scatter_(1, pos, torch.where(real_q, qt.to(ts.dtype), torch.zeros((), dtype=ts.dtype,
                                                                          device=dev)))
    # Padding repeats the last real time (gaps 0 there).
    last_t = torch.where(q_count > 0, qt.gather(1, last_q[:, None])[:, 0].to(ts.dtype),
                         ts.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0])
    pad = torch.arange(Lp, device=dev)[None] >= new_len[:, None]
    t = torch.where(pad, last_t[:, None], t)
    out = {"timestamps": t, "lengths": new_len,
           "integration_timesteps": timesteps_from_timestamps(t, lengths=new_len)}
    if batch.get("values") is not None:
        v = torch.zeros(Bsz, Lp, batch["values"].shape[-1], dtype=batch["values"].dtype,
                        device=dev)
        v[:, :L] = batch["values"]
        v = v * hist[..., None]
        out["values"] = v
        obs = batch.get("observed")
        if obs is None:
            obs = torch.ones_like(batch["values"], dtype=torch.bool)
        o = torch.zeros(Bsz, Lp, obs.shape[-1], dtype=torch.bool, device=dev)
        o[:, :L] = obs
        out["observed"] = o & hist[..., None]
    if batch.get("marks") is not None:
        m = torch.zeros(Bsz, Lp, dtype=batch["marks"].dtype, device=dev)
        m[:, :L] = batch["marks"]
        out["marks"] = m * hist
    return out, pos.clamp(max=Lp - 1)


def splice_queries_packed(batch: dict) -> tuple[dict, Tensor]:
    """:func:`splice_queries` for a packed batch: each sequence's real queries are inserted
    right after its events along the packed axis (no padding anywhere).

    ``batch`` holds the packed history (``cu_seqlens (B + 1,)``, ``timestamps (1, T)``,
    ``values``/``observed``/``marks`` ``(1, T, ...)``) and the padded queries ``query_times``,
    ``query_mask`` ``(B, Q)``. Returns the packed encoder inputs (with their own
    ``cu_seqlens`` and gaps) and the ``(B, Q)`` packed positions of the queries (positions of
    padded queries point at a real step; their predictions are masked out by ``target_mask``).
    """
    cu, ts = batch["cu_seqlens"], batch["timestamps"]
    qt, qm = batch["query_times"], batch["query_mask"]
    dev = ts.device
    cu = cu.to(dev).long()
    T = ts.shape[1]
    Bsz, Q = qt.shape
    n = cu[1:] - cu[:-1]  # (B,) events per sequence
    q = qm.long().sum(1)  # (B,) queries per sequence
    cu_new = torch.zeros_like(cu)
    cu_new[1:] = torch.cumsum(n + q, 0)
    Tn = T + int(q.sum())
    seq = seq_index(cu, T)
    dest_h = torch.arange(T, device=dev) + (cu_new[:-1] - cu[:-1])[seq]  # (T,)
    pos = cu_new[:-1, None] + n[:, None] + torch.arange(Q, device=dev)[None]  # (B, Q)
    dest_q = pos[qm]
    t = torch.zeros(1, Tn, dtype=ts.dtype, device=dev)
    t[0, dest_h] = ts[0]
    t[0, dest_q] = qt[qm].to(ts.dtype)
    out = {"timestamps": t, "cu_seqlens": cu_new.to(batch["cu_seqlens"].dtype),
           "lengths": n + q, "integration_timesteps": packed_timesteps(t, cu_new)}
    if batch.get("values") is not None:
        v = batch["values"]
        vn = v.new_zeros(1, Tn, v.shape[-1])
        vn[0, dest_h] = v[0]
        out["values"] = vn
        obs = batch.get("observed")
        if obs is None:
            obs = torch.ones_like(v, dtype=torch.bool)
        on = torch.zeros(1, Tn, obs.shape[-1], dtype=torch.bool, device=dev)
        on[0, dest_h] = obs[0]
        out["observed"] = on
    if batch.get("marks") is not None:
        m = batch["marks"]
        mn = m.new_zeros(1, Tn)
        mn[0, dest_h] = m[0]
        out["marks"] = mn
    # a padded query points at its sequence's last step (any real step would do)
    last = (cu_new[1:] - 1).clamp(min=0)[:, None].expand(Bsz, Q)
    return out, torch.where(qm, pos, last)


class EventRegressor(EventTask):
    """Regress a value per sequence, or forecast values at query times after the history.

    The mode follows the batch: with ``query_times`` (a forecasting DataModule) the model
    forecasts the ``(B, Q, d_target)`` values at those times (see :func:`splice_queries`);
    otherwise it predicts ``(B, d_target)`` from the pooled sequence features.

    Args:
        d_target: outputs per sequence or per query (``data.d_target``).
        d_input, num_marks, use_observed: from the data (see :class:`EventClassifier`);
            forecasting needs ``use_observed`` (queries are the unobserved steps).
        backbone: the encoder architecture and discretization.
        time_scale: the model's time unit (see :class:`EventClassifier`).
        loss: ``"mse"`` or ``"l1"``.
        **optim: :class:`EventTask` options.
    """

    def __init__(self, d_target: int = 1, d_input: int = 0, num_marks: int = 0,
                 use_observed: bool = False, backbone: EncoderConfig | None = None,
                 time_scale: float = 1.0, loss: Literal["mse", "l1"] = "mse", lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 0,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio)
        if d_target < 1:
            raise ValueError(f"d_target must be >= 1, got {d_target}")
        if loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {loss!r}")
        backbone = backbone if backbone is not None else EncoderConfig()
        self._save_hparams()
        self.use_observed = use_observed
        self.loss_name = loss
        self.encoder = _encoder(backbone, d_input, num_marks, use_observed,
                                _check_time_scale(time_scale))
        self.head = nn.Linear(backbone.d_model, d_target)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_mse", torchmetrics.MeanSquaredError())
            setattr(self, f"{stage}_mae", torchmetrics.MeanAbsoluteError())
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()

    def forward(self, batch: dict) -> Tensor:
        """``(B, d_target)`` per sequence, or ``(B, Q, d_target)`` at the query times (packed
        batches too: their queries stay ``(B, Q)``)."""
        if "query_times" in batch:
            if not self.use_observed:
                raise ValueError(
                    "forecasting needs use_observed=True (query steps are the unobserved ones); "
                    "link it from data.use_observed or set model.use_observed=true"
                )
            if "cu_seqlens" in batch:
                inputs, pos = splice_queries_packed(batch)
                h = self.encoder.encode(**_encoder_kwargs(inputs))[0]  # (T + ΣQ, d_model)
                return self.head(h[pos])  # (B, Q, d_target)
            inputs, pos = splice_queries(batch)
            h = self.encoder.encode(**_encoder_kwargs(inputs))  # (B, L + Q, d_model)
            h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))  # (B, Q, d_model)
            return self.head(h)
        return self.head(self.encoder(**_encoder_kwargs(batch)))

    def _step(self, batch: dict, stage: str) -> Tensor:
        pred = self(batch).float()
        y = batch["target"].float()
        if "query_times" in batch:
            m = batch["target_mask"]
            pred, y = pred[m], y[m]
        if pred.shape != y.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(y.shape)}; "
                             f"check d_target (data.d_target)")
        loss = F.mse_loss(pred, y) if self.loss_name == "mse" else F.l1_loss(pred, y)
        n = y.numel()
        mse, mae = getattr(self, f"{stage}_mse"), getattr(self, f"{stage}_mae")
        mse(pred, y)
        mae(pred, y)
        self._log_loss(stage, loss, n)
        self.log(f"{stage}/mse", mse, on_epoch=True, on_step=False, batch_size=n)
        self.log(f"{stage}/mae", mae, on_epoch=True, on_step=False, batch_size=n,
                 prog_bar=stage != "train")
        return self._global_mean(loss, n) if stage == "train" else loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx) -> dict:
        return {"index": batch.get("index"), "pred": self(batch)}


class ByteLM(EventTask):
    """Byte-level causal language model (vocabulary 256) with sampling.

    Batches: ``{"input_ids": (B, L), "target": (B, L)}`` (see
    :class:`eventssm.datasets.ByteDataModule`). Logs the loss and bits per byte.

    Args:
        backbone: the :class:`~eventssm.MambaLM` sizes and discretization.
        vocab_size: 256 for bytes.
        sample_every_n_epochs: log a short sample to the console every n validation epochs
            (0: never).
        **optim: :class:`EventTask` options.
    """

    def __init__(self, backbone: LMConfig | None = None, vocab_size: int = 256,
                 sample_every_n_epochs: int = 0, lr: float = 2e-3, weight_decay: float = 0.1,
                 warmup_steps: int = 50, scheduler: Literal["cosine", "constant"] = "cosine",
                 min_lr_ratio: float = 0.1):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio)
        backbone = backbone if backbone is not None else LMConfig()
        self._save_hparams()
        cfg = dataclasses.asdict(backbone)
        cfg["discretization"] = backbone.discretization
        self.lm = MambaLM(vocab_size, **cfg)
        self.vocab_size = vocab_size
        self.sample_every_n_epochs = sample_every_n_epochs
        self.val_ppl = torchmetrics.text.Perplexity()
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()
        self.val_bpb = torchmetrics.MeanMetric()
        self.test_bpb = torchmetrics.MeanMetric()

    def forward(self, input_ids: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """Logits ``(B, L, V)``; with ``cu_seqlens`` the documents packed along L of a batch of
        one each start from a fresh state."""
        return self.lm(input_ids, cu_seqlens=cu_seqlens)

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        logits = self(batch["input_ids"], batch.get("cu_seqlens"))
        loss = F.cross_entropy(logits.reshape(-1, self.vocab_size).float(),
                               batch["target"].reshape(-1))
        return loss, logits

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        n = batch["target"].numel()
        self._log_loss("train", loss, n)
        return loss

    def _log_loss(self, stage: str, loss: Tensor, n: int) -> None:
        super()._log_loss(stage, loss, n)
        if stage == "train":
            self.log("train/bpb", loss / math.log(2), batch_size=n)
        else:  # bits per byte of the whole split, exact across processes like the loss
            metric = getattr(self, f"{stage}_bpb")
            metric.update(loss.detach() / math.log(2), weight=n)
            self.log(f"{stage}/bpb", metric, on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx):
        loss, logits = self._loss(batch)
        n = batch["target"].numel()
        self.val_ppl(logits.float(), batch["target"])
        self._log_loss("val", loss, n)
        self.log("val/ppl", self.val_ppl, on_epoch=True, on_step=False, batch_size=n)

    def test_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self._log_loss("test", loss, batch["target"].numel())

    def on_validation_epoch_end(self) -> None:
        k = self.sample_every_n_epochs
        if k and self.trainer.is_global_zero and (self.current_epoch + 1) % k == 0:
            text = self.sample("def ", max_new_tokens=120, temperature=0.8, top_k=40)
            print(f"\n[sample, epoch {self.current_epoch}] {text!r}")

    @torch.no_grad()
    def sample(self, prompt: str | bytes = "\n", max_new_tokens: int = 200,
               temperature: float = 1.0, top_k: int | None = None, seed: int | None = None) -> str:
        """Continue ``prompt`` byte by byte; returns prompt + continuation as text (bytes that
        are not valid UTF-8 are replaced)."""
        data = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        if not data:
            raise ValueError("prompt must hold at least one byte")
        ids = torch.tensor(list(data), dtype=torch.long, device=self.device)[None]
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            out = self.lm.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                   generator=gen)
        finally:
            self.train(was_training)
        return bytes(out[0].tolist()).decode("utf-8", errors="replace")

    def predict_step(self, batch, batch_idx) -> Any:
        """Greedy next-byte predictions ``(B, L)`` for the batch's inputs."""
        return self(batch["input_ids"], batch.get("cu_seqlens")).argmax(-1)


def __getattr__(name: str):
    # EventTPP (temporal point processes) lives in eventssm.tpp_task, which builds on EventTask:
    # importing it lazily here avoids a circular import either way round.
    if name == "EventTPP":
        from eventssm.tpp_task import EventTPP

        return EventTPP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
