"""The Lightning layer: tasks (LightningModules), the ``eventssm`` command line, checkpoints with
checksums and exact resume.

Everything here imports Lightning and torchmetrics; the ``eventssm`` core below it does not.

* :mod:`~eventssm.tasks.config`: :class:`EncoderConfig`, :class:`LMConfig` (the backbones).
* :mod:`~eventssm.tasks.base`: :class:`EventTask` (optimisation, logging, checkpoints).
* :mod:`~eventssm.tasks.sequence`: :class:`EventClassifier`, :class:`EventRegressor`.
* :mod:`~eventssm.tasks.lm`: :class:`ByteLM`; :mod:`~eventssm.tasks.tpp`: :class:`EventTPP`.
* :mod:`~eventssm.tasks.stream`: :class:`EventStream` (online inference: events in one at a
  time, the tasks' answers out).
* :mod:`~eventssm.tasks.cli`: the ``eventssm`` entry point; :mod:`~eventssm.tasks.checkpointing`
  and :mod:`~eventssm.tasks.resume`: integrity checks and resuming a killed run.
"""

from eventssm.tasks.base import EventTask
from eventssm.tasks.config import EncoderConfig, LMConfig
from eventssm.tasks.lm import ByteLM
from eventssm.tasks.sequence import EventClassifier, EventRegressor, splice_queries, splice_queries_packed
from eventssm.tasks.stream import EventStream
from eventssm.tasks.tpp import EventTPP

__all__ = [
    "EncoderConfig",
    "LMConfig",
    "EventTask",
    "EventClassifier",
    "EventRegressor",
    "ByteLM",
    "EventTPP",
    "EventStream",
    "splice_queries",
    "splice_queries_packed",
]
