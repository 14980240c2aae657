"""Sequence tasks on the :class:`~eventssm.EventEncoder`: classification (per sequence or per
event) and regression/forecasting at query times."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from eventssm.packing import packed_timesteps, seq_index
from eventssm.tasks.base import EventTask, _encoder
from eventssm.tasks.config import EncoderConfig
from eventssm.time import check_time_scale, real_mask, timesteps_from_timestamps

__all__ = ["EventClassifier", "EventRegressor", "splice_queries", "splice_queries_packed"]


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
        ensemble: members trained side by side, each an encoder and head of its own from its
            own initialisation, on the same batches, each on its own loss; the prediction
            averages their class probabilities (what several seeds' models averaged give, in
            one run, at ``ensemble`` times the cost). 1: a single model.
        **optim: :class:`EventTask` options (lr, weight_decay, warmup_steps, scheduler,
            min_lr_ratio, compile). The classifier's defaults (lr 3e-3, weight decay 0.05, 20
            warm-up steps) were chosen on the panel of docs/panel.md.
    """

    def __init__(self, num_classes: int = 2, d_input: int = 0, num_marks: int = 0,
                 use_observed: bool = False, per_event: bool = False,
                 backbone: EncoderConfig | None = None, time_scale: float = 1.0,
                 label_smoothing: float = 0.0, ensemble: int = 1,
                 lr: float = 3e-3, weight_decay: float = 0.05, warmup_steps: int = 20,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1,
                 compile: bool = False):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio, compile)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not isinstance(ensemble, int) or isinstance(ensemble, bool) or ensemble < 1:
            raise ValueError(f"ensemble must be a positive integer (members), got {ensemble!r}")
        backbone = backbone if backbone is not None else EncoderConfig()
        self._save_hparams()
        self.per_event = per_event
        self.num_classes = num_classes
        self.ensemble = ensemble
        time_scale = check_time_scale(time_scale)
        self.encoder = _encoder(backbone, d_input, num_marks, use_observed, time_scale)
        self.head = nn.Linear(backbone.d_model, num_classes)
        # the first member keeps the names of a single model (its checkpoints, EventStream)
        self.members = nn.ModuleList(
            nn.ModuleDict(dict(encoder=_encoder(backbone, d_input, num_marks, use_observed, time_scale),
                               head=nn.Linear(backbone.d_model, num_classes)))
            for _ in range(ensemble - 1))
        self.label_smoothing = label_smoothing
        kw = dict(task="multiclass", num_classes=num_classes, ignore_index=-100)
        self.train_acc = torchmetrics.Accuracy(**kw)
        self.val_acc = torchmetrics.Accuracy(**kw)
        self.test_acc = torchmetrics.Accuracy(**kw)
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()

    def forward(self, batch: dict, members: bool = False) -> Tensor | list[Tensor]:
        """Logits ``(B, K)``, or ``(B, L, K)`` with ``per_event`` (``(1, T, K)`` for a packed
        batch, whose per-event targets are packed alike). With ``ensemble > 1``: the log of the
        members' mean class probabilities (a softmax of them gives that mean). ``members``:
        each member's logits instead, a list of ``ensemble`` tensors. The steps call this (not
        :meth:`member_logits`) so that the ``compile`` option, which compiles ``__call__``,
        covers training too."""
        logits = self.member_logits(batch)
        return logits if members else _mean_probs_log(logits)

    def member_logits(self, batch: dict) -> list[Tensor]:
        """Each member's logits, shaped as :meth:`forward`'s (one entry without an ensemble)."""
        kw = self._encoder_kwargs(batch)
        logits = [self._logits(self.encoder, self.head, kw)]
        # No loop around a single model: under the ``compile`` option a loop whose body breaks
        # the graph (the CPU scan does) runs eagerly, its callees compiled one by one.
        for member in self.members:
            logits.append(self._logits(member["encoder"], member["head"], kw))
        return logits

    def _logits(self, encoder, head, kw: dict) -> Tensor:
        return head(encoder.encode(**kw) if self.per_event else encoder(**kw))

    def _step(self, batch: dict, stage: str) -> Tensor:
        acc = getattr(self, f"{stage}_acc")
        members = self(batch, members=True)
        logits = _mean_probs_log(members)
        y = batch["target"]

        def ce(z: Tensor) -> Tensor:
            return F.cross_entropy(z.reshape(-1, self.num_classes).float(), y.reshape(-1),
                                   ignore_index=-100, label_smoothing=self.label_smoothing)

        # training: each member on its own loss (their mean), as if trained alone; evaluation:
        # the ensemble's own loss, which early stopping and the best checkpoint then follow
        loss = (torch.stack([ce(z) for z in members]).mean() if stage == "train" and len(members) > 1
                else ce(logits))
        acc(logits.reshape(-1, self.num_classes), y.reshape(-1))
        # one label per sequence: the count is the batch size, known without reading the device
        n = int((y != -100).sum()) if self.per_event else y.shape[0]
        self._log_loss(stage, loss, n)
        self.log(f"{stage}/acc", acc, prog_bar=stage != "train", on_epoch=True,
                 on_step=False, batch_size=n)
        return self._global_mean(loss, n) if stage == "train" else loss

    def predict_step(self, batch, batch_idx) -> dict:
        probs = self(batch).float().softmax(-1)
        return {"index": batch.get("index"), "probs": probs, "pred": probs.argmax(-1)}


def _mean_probs_log(logits: list[Tensor]) -> Tensor:
    """``log(mean_m softmax(logits_m))`` of a list of ``(..., K)`` logits; one entry as it is."""
    if len(logits) == 1:
        return logits[0]
    logp = torch.stack([z.float().log_softmax(-1) for z in logits])
    return torch.logsumexp(logp, 0) - math.log(len(logits))


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
    hist = real_mask(lengths, Lp)  # (B, Lp)
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
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1,
                 compile: bool = False):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio, compile)
        if d_target < 1:
            raise ValueError(f"d_target must be >= 1, got {d_target}")
        if loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {loss!r}")
        backbone = backbone if backbone is not None else EncoderConfig()
        self._save_hparams()
        self.use_observed = use_observed
        self.loss_name = loss
        self.encoder = _encoder(backbone, d_input, num_marks, use_observed,
                                check_time_scale(time_scale))
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
                h = self.encoder.encode(**self._encoder_kwargs(inputs))[0]  # (T + ΣQ, d_model)
                return self.head(h[pos])  # (B, Q, d_target)
            inputs, pos = splice_queries(batch)
            h = self.encoder.encode(**self._encoder_kwargs(inputs))  # (B, L + Q, d_model)
            h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))  # (B, Q, d_model)
            return self.head(h)
        return self.head(self.encoder(**self._encoder_kwargs(batch)))

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

    def predict_step(self, batch, batch_idx) -> dict:
        return {"index": batch.get("index"), "pred": self(batch)}
