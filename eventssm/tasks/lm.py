"""``ByteLM``: a byte-level causal language model on :class:`~eventssm.MambaLM`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from eventssm.models import MambaLM
from eventssm.tasks.base import EventTask
from eventssm.tasks.config import LMConfig

__all__ = ["ByteLM"]


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
                 min_lr_ratio: float = 0.1,
                 compile: bool = False):
        super().__init__(lr, weight_decay, warmup_steps, scheduler, min_lr_ratio, compile)
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
        one each start from a fresh state. The ids' range is checked (a host sync) only with
        :attr:`validate_batches`: a ByteDataModule's ids are bytes by construction."""
        return self.lm(input_ids, cu_seqlens=cu_seqlens, check_values=self.validate_batches)

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        logits = self(batch["input_ids"], batch.get("cu_seqlens"))
        loss = F.cross_entropy(logits.reshape(-1, self.vocab_size).float(),
                               batch["target"].reshape(-1))
        return loss, logits

    def _step(self, batch: dict, stage: str) -> Tensor:
        loss, logits = self._loss(batch)
        n = batch["target"].numel()
        if stage == "val":
            self.val_ppl(logits.float(), batch["target"])
            self.log("val/ppl", self.val_ppl, on_epoch=True, on_step=False, batch_size=n)
        self._log_loss(stage, loss, n)
        return loss

    def _log_loss(self, stage: str, loss: Tensor, n: int) -> None:
        super()._log_loss(stage, loss, n)
        if stage == "train":
            self.log("train/bpb", loss / math.log(2), batch_size=n)
        else:  # bits per byte of the whole split, exact across processes like the loss
            metric = getattr(self, f"{stage}_bpb")
            metric.update(loss.detach() / math.log(2), weight=n)
            self.log(f"{stage}/bpb", metric, on_step=False, on_epoch=True, batch_size=n)

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
