"""``EventTPP``: the temporal point process task (next event's time and type, log-likelihood,
sampling), a LightningModule on the :class:`~eventssm.EventEncoder`.

Importable as ``eventssm.tasks.EventTPP``. The head math lives in :mod:`eventssm.tpp` (core, no
Lightning); this module adds the training loop, torchmetrics and sampling of whole futures.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchmetrics
from torch import Tensor

from eventssm.packing import packed_timesteps, unpack_sequences
from eventssm.tasks.base import EventTask, _encoder
from eventssm.tasks.config import EncoderConfig
from eventssm.time import check_time_scale, timesteps_from_timestamps
from eventssm.tpp_heads import HEADS, make_head
from eventssm.tpp_sampler import sample_futures as sample_futures_stepped

__all__ = ["EventTPP"]


class EventTPP(EventTask):
    """Marked temporal point process: at every event, the distribution of the next event's gap
    and type, trained by maximum likelihood.

    Batches are next-event batches (:class:`eventssm.datasets.TPPDataModule`): ``target`` (B, L)
    the next type (-100 where there is none), ``target_gap`` (B, L) the time to it. Every event
    with a next event is scored; padding and the last event of each sequence are not.

    Logged per split: ``loss`` (negative log-likelihood per event), ``ll``, ``time_ll`` and
    ``type_ll`` per event (nats), and in val/test ``rmse`` of the predicted next gap (the
    predictive mean or median, ``time_prediction``) and ``acc`` of the predicted next type (the
    most probable one; for the intensity head marginalised over the next time).

    Args:
        num_marks: event types ``K`` (linked from ``data.num_marks``).
        d_input, use_observed: value channels and their mask, when events carry values.
        log_gap_stats: ``(mean, std)`` of the training log gaps (``data.log_gap_stats``); sets
            the heads' time unit. None: ``(0, 1)``.
        head: ``"mixture"`` (log-normal mixture, intensity-free), ``"intensity"`` (continuous
            time, a decaying projection of the features; see :mod:`eventssm.tpp`) or ``"state"``
            (continuous time, read out of the last block's own SSM state evolved between events;
            see :mod:`eventssm.tpp_state`: needs an Asymmetric or Additive discretization, and
            its futures are sampled by re-encoding, ``method="reencode"``).
        n_components: mixture components (mixture head).
        d_hidden, n_quad, n_panels: decaying state size (intensity head) and compensator
            quadrature (intensity and state heads).
        time_prediction: the predicted next gap (for ``rmse`` and ``predict``): the predictive
            ``"mean"`` or ``"median"`` (None: the median for the mixture, whose log-normal tails
            make the mean unstable, and the mean for the intensity and state heads).
        backbone: the encoder architecture and discretization.
        time_scale: the encoder's time unit (see :class:`~eventssm.tasks.EventClassifier`;
            linked from ``data.time_scale``). The heads work in the data's own time unit, set by
            ``log_gap_stats``.
        predict_horizon: ``predict`` samples futures this far past each sequence's last event
            (data time units; 0: only the next event).
        n_samples: futures per sequence in ``predict``.
        max_future_events: cap on the events of one sampled future.
        **optim: :class:`EventTask` options.
    """

    def __init__(self, num_marks: int = 1, d_input: int = 0, use_observed: bool = False,
                 log_gap_stats: tuple[float, float] | None = None,
                 head: Literal["mixture", "intensity", "state"] = "mixture", n_components: int = 8,
                 d_hidden: int = 16, n_quad: int = 8, n_panels: int = 6,
                 time_prediction: Literal["mean", "median"] | None = None,
                 backbone: EncoderConfig | None = None, time_scale: float = 1.0,
                 predict_horizon: float = 0.0,
                 n_samples: int = 1, max_future_events: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 0,
                 scheduler: Literal["cosine", "constant"] = "cosine", min_lr_ratio: float = 0.1,
                 compile: bool = False):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio, compile)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if num_marks < 1:
            raise ValueError(f"num_marks must be >= 1, got {num_marks}")
        backbone = backbone if backbone is not None else EncoderConfig()
        if log_gap_stats is not None:
            log_gap_stats = tuple(float(x) for x in log_gap_stats)
        self._save_hparams()
        self.num_marks = num_marks
        self.predict_horizon, self.n_samples = predict_horizon, n_samples
        self.max_future_events = max_future_events
        self.encoder = _encoder(backbone, d_input, num_marks, use_observed,
                                check_time_scale(time_scale))
        kw = {"mixture": dict(n_components=n_components),
              "intensity": dict(d_hidden=d_hidden, n_quad=n_quad, n_panels=n_panels),
              "state": dict(n_quad=n_quad, n_panels=n_panels)}[head]
        # the mixture's log-normal tails make its mean unstable (one wide component dominates the
        # squared error): its default is the median; the intensity head's mean is well behaved
        kw["time_prediction"] = time_prediction or ("median" if head == "mixture" else "mean")
        self.head = make_head(head, backbone.d_model, num_marks, log_gap_stats, **kw)
        if head == "state":  # it reads the encoder's last block (checks its discretization)
            self.head.bind(self.encoder)
        self.head_kind = head
        for stage in ("train", "val", "test"):
            for name in ("ll", "time_ll", "type_ll"):
                setattr(self, f"{stage}_{name}", torchmetrics.MeanMetric())
        for stage in ("val", "test"):
            setattr(self, f"{stage}_rmse", torchmetrics.MeanSquaredError(squared=False))
            setattr(self, f"{stage}_acc", torchmetrics.Accuracy(task="multiclass",
                                                                num_classes=max(num_marks, 2)))
        self.val_loss = torchmetrics.MeanMetric()
        self.test_loss = torchmetrics.MeanMetric()

    def forward(self, batch: dict) -> Tensor:
        """Per-event features ``(B, L, d_model)`` (padding 0), or ``(1, T, d_model)`` for a
        packed batch (``cu_seqlens``); for the state head its ``F`` features per event
        (:meth:`eventssm.tpp_state.StateIntensityHead.encode`)."""
        if "integration_timesteps" not in batch:  # e.g. a sampled future: form the gaps once here
            tau = (packed_timesteps(batch["timestamps"], batch["cu_seqlens"])
                   if "cu_seqlens" in batch
                   else timesteps_from_timestamps(batch["timestamps"], lengths=batch["lengths"]))
            batch = {**batch, "integration_timesteps": tau}
        if self.head_kind == "state":
            return self.head.encode(**self._encoder_kwargs(batch))
        return self.encoder.encode(**self._encoder_kwargs(batch))

    def log_likelihood(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(time part (n,), type part (n,), features (n, d), scored (B, L) bool)`` of the ``n``
        scored events (those with a next event) of a batch."""
        for key in ("target", "target_gap"):
            if key not in batch:
                raise ValueError(f"EventTPP needs next-event batches with {key!r} "
                                 f"(use a TPPDataModule or target='next_event')")
        h = self(batch)
        scored = batch["target"] >= 0
        if "mask" in batch:
            scored = scored & batch["mask"]
        hs = h[scored]
        time_ll, type_ll = self.head.log_likelihood(hs, batch["target_gap"][scored],
                                                    batch["target"][scored])
        return time_ll, type_ll, hs, scored

    def _step(self, batch: dict, stage: str) -> Tensor:
        time_ll, type_ll, hs, scored = self.log_likelihood(batch)
        n = int(time_ll.numel())
        ll = time_ll + type_ll
        loss = -ll.sum() / max(n, 1)
        self._log_loss(stage, loss, n)
        for name, v in (("ll", ll), ("time_ll", time_ll), ("type_ll", type_ll)):
            metric = getattr(self, f"{stage}_{name}")
            if n:
                metric.update(v.detach())
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=max(n, 1),
                     prog_bar=stage != "train" and name == "ll")
        if stage != "train" and n:
            with torch.no_grad():
                pred_gap, probs = self.head.predict(hs)
            rmse, acc = getattr(self, f"{stage}_rmse"), getattr(self, f"{stage}_acc")
            rmse(pred_gap, batch["target_gap"][scored].float())
            acc(probs, batch["target"][scored])
            self.log(f"{stage}/rmse", rmse, on_step=False, on_epoch=True, batch_size=n)
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, batch_size=n)
        return self._global_mean(loss, n) if stage == "train" else loss

    # ------------------------------------------------------------------ sampling
    def _last_features(self, batch: dict) -> Tensor:
        h = self(batch)
        if "cu_seqlens" in batch:  # the last event of each packed sequence
            return h[0, (batch["cu_seqlens"].to(h.device).long()[1:] - 1).clamp(min=0)]
        idx = (batch["lengths"] - 1).clamp(min=0)
        return h[torch.arange(h.shape[0], device=h.device), idx]  # (B, d)

    @torch.no_grad()
    def sample_next(self, batch: dict, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
        """One draw of the event after each sequence's last one: ``(gap (B,), mark (B,))``."""
        return self.head.sample(self._last_features(batch), generator=generator)

    @torch.no_grad()
    def sample_futures(self, batch: dict, horizon: float, n_samples: int = 1,
                       max_events: int = 64, generator: torch.Generator | None = None,
                       method: Literal["step", "reencode"] | None = None) -> dict:
        """Sample ``n_samples`` futures of every sequence up to ``horizon`` after its last event.

        Each step draws the next event from the head (thinning for the intensity head, direct
        sampling for the mixture) and appends it to the history. ``method="step"`` encodes the
        history once and each sampled event with the encoder's recurrent step
        (:mod:`eventssm.tpp_sampler`: O(1) per sampled event); ``"reencode"`` encodes the whole
        history again at every sampled event (O(steps · L)). With the same ``generator`` both
        draw the same futures (in float64; tested). None: ``"step"``, but ``"reencode"`` for the
        state head (the recurrent step does not expose the last block's readout ``C``, ``z``).

        Returns ``{"times" (B, S, E) float64, "marks" (B, S, E) long, "mask" (B, S, E) bool}``:
        absolute times (the batch's clock), ``E = max_events``; ``mask`` marks real events.
        """
        if horizon <= 0 or n_samples < 1 or max_events < 1:
            raise ValueError(f"need horizon > 0, n_samples >= 1, max_events >= 1; got {horizon}, "
                             f"{n_samples}, {max_events}")
        if method is None:
            method = "reencode" if self.head_kind == "state" else "step"
        if method == "step" and self.head_kind == "state":
            raise NotImplementedError("sample_futures(method='step') is not available for "
                                      "head='state': the encoder's recurrent step does not expose the "
                                      "last block's C and z; use method='reencode'")
        if method not in ("step", "reencode"):
            raise ValueError(f"method must be 'step' or 'reencode', got {method!r}")
        if "cu_seqlens" in batch:  # a growing history is simplest padded: unpack it
            cu = batch["cu_seqlens"]
            n = (cu[1:] - cu[:-1]).long()
            ts = unpack_sequences(batch["timestamps"], cu)
            pad = torch.arange(ts.shape[1], device=ts.device)[None] >= n[:, None]
            last = ts.gather(1, (n - 1).clamp(min=0)[:, None])
            batch = {"lengths": n, "timestamps": torch.where(pad, last, ts),  # §5: repeat the last time
                     "marks": None if batch.get("marks") is None
                     else unpack_sequences(batch["marks"], cu),
                     "values": batch.get("values")}
        B = batch["lengths"].shape[0]
        rep = lambda x: x.repeat_interleave(n_samples, 0)
        ts, lengths = rep(batch["timestamps"]), rep(batch["lengths"])
        marks = rep(batch["marks"]) if batch.get("marks") is not None else None
        if batch.get("values") is not None:
            raise ValueError("sample_futures models marks only; events with values cannot be sampled")
        R, L0 = ts.shape
        shape = (B, n_samples, max_events)
        if method == "step":
            out = sample_futures_stepped(self.encoder, self.head, ts, lengths, marks,
                                         horizon=horizon, max_events=max_events, generator=generator)
            return {k: v.reshape(shape) for k, v in zip(("times", "marks", "mask"), out)}
        rows = torch.arange(R, device=ts.device)
        t_end = ts[rows, lengths - 1]
        ts = torch.cat([ts, ts.new_zeros(R, max_events)], 1)
        marks = torch.cat([marks, marks.new_zeros(R, max_events)], 1)
        ts[:, L0:] = ts[rows, lengths - 1][:, None]
        out_t = torch.zeros(R, max_events, dtype=torch.float64, device=ts.device)
        out_m = torch.zeros(R, max_events, dtype=torch.long, device=ts.device)
        out_mask = torch.zeros(R, max_events, dtype=torch.bool, device=ts.device)
        active = torch.ones(R, dtype=torch.bool, device=ts.device)
        for e in range(max_events):
            Lc = int(lengths.max())
            cur = {"timestamps": ts[:, :Lc], "lengths": lengths, "marks": marks[:, :Lc]}
            gap, mark = self.sample_next(cur, generator=generator)
            t_new = ts[rows, lengths - 1] + gap.double()
            active = active & (t_new - t_end <= horizon)
            if not bool(active.any()):
                break
            out_t[active, e], out_m[active, e], out_mask[active, e] = t_new[active], mark[active], True
            pos = lengths[active]
            ts[rows[active], pos] = t_new[active]
            marks[rows[active], pos] = mark[active]
            lengths = lengths + active.long()
            # padding repeats the last time (gaps 0 there)
            last = ts[rows, lengths - 1]
            pad = torch.arange(ts.shape[1], device=ts.device)[None] >= lengths[:, None]
            ts = torch.where(pad, last[:, None], ts)
        return {"times": out_t.reshape(shape), "marks": out_m.reshape(shape),
                "mask": out_mask.reshape(shape)}

    def predict_step(self, batch, batch_idx) -> dict:
        """Next-event predictions at the last event of every sequence (``gap_pred``: the
        predictive mean or median,
        ``type_probs``, one ``sampled_gap``/``sampled_mark``) and, with ``predict_horizon > 0``,
        ``n_samples`` sampled futures (:meth:`sample_futures`)."""
        h = self._last_features(batch)
        pred_gap, probs = self.head.predict(h)
        gap, mark = self.head.sample(h)
        out = {"index": batch.get("index"), "gap_pred": pred_gap, "type_probs": probs,
               "sampled_gap": gap, "sampled_mark": mark}
        if self.predict_horizon > 0:
            out["futures"] = self.sample_futures(batch, self.predict_horizon, self.n_samples,
                                                 self.max_future_events)
        return out
