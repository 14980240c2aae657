"""The backbone configs of the tasks: small dataclasses that a LightningCLI config fills in.

``discretization`` is typed with the :class:`~eventssm.Discretization` base class, so a config
swaps it by ``class_path``::

    model:
      class_path: eventssm.tasks.EventClassifier
      init_args:
        backbone:
          discretization: {class_path: eventssm.Asymmetric, init_args: {scheme: zoh}}

or on the command line ``--model.backbone.discretization Scaled``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from eventssm.discretization import Additive, Asymmetric, Discretization, Scaled, Standard

__all__ = ["EncoderConfig", "LMConfig"]


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
    # The defaults of these two, and of EventClassifier's optimiser and the CLI's training
    # budget, were chosen on the panel of real datasets in docs/panel.md.
    pooling: Literal["last", "mean", "time"] = "mean"  # sequence-level tasks only
    dropout: float = 0.1  # on the input embedding
    time_features: bool = True  # also feed log1p(gap) as an input feature
    # scan/conv/step backend of every block: None = "auto" (Triton on CUDA), or "triton",
    # "torch", "reference" (see eventssm.dispatch)
    backend: Literal["auto", "triton", "torch", "reference"] | None = None


@dataclass
class LMConfig:
    """Architecture of the :class:`~eventssm.MambaLM` behind :class:`ByteLM`."""

    d_model: int = 128
    n_layers: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    discretization: Discretization | str = "mamba"
    backend: Literal["auto", "triton", "torch", "reference"] | None = None  # as EncoderConfig's


# Checkpoints store the backbone config (with its Discretization) in their hyperparameters; allow
# these plain config classes under torch.load(weights_only=True), the default of
# load_from_checkpoint, so that it rebuilds the same discretization without weights_only=False.
# Checkpoints written while these classes lived in the module eventssm.tasks name them there.
torch.serialization.add_safe_globals([EncoderConfig, LMConfig, Standard, Asymmetric, Scaled, Additive,
                                      (EncoderConfig, "eventssm.tasks.EncoderConfig"),
                                      (LMConfig, "eventssm.tasks.LMConfig")])
