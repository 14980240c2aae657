"""Event data for eventssm: long pandas tables, splits, collation and LightningDataModules.

This package imports pandas and Lightning; the ``eventssm`` core does not.
"""

from .augment import EventDropout
from .collate import EventCollator, collate_events, pack_batch, unpack_batch
from .datamodule import EventDataModule, EventDataset
from .gaps import GapStats, gap_statistics, resolve_time_scale
from .normalize import Standardizer
from .point_process import (
    PointProcessDataModule,
    make_point_processes,
    simulate_hawkes,
    simulate_poisson,
)
from .sampling import GlobalBatchSampler, ResumableDataLoader, ShardSampler
from .splits import split_from_labels, split_indices
from .survival import NAFLDDataModule, PBCSeqDataModule, nafld_cohort, pbcseq_cohort
from .synthetic import SyntheticDataModule, make_sinusoids, make_spirals
from .table import EventTable, read_table
from .text import ByteDataModule, ByteWindows, read_bytes, window_offsets
from .time_tasks import (
    TimeDecayDataModule,
    TimeFrequencyDataModule,
    leaky_integral,
    make_decay_task,
    make_frequency_task,
)
from .tpp import (
    EasyTPPDataModule,
    NAFLD3DataModule,
    SyntheticTPPDataModule,
    TPPDataModule,
    read_easytpp,
    write_easytpp,
)
from .uea import UEADataModule, available_uea, drop_time_indices, load_uea

__all__ = [
    "ByteDataModule", "ByteWindows", "EventCollator", "EventDataModule", "EventDataset", "EventDropout",
    "EventTable", "GapStats", "GlobalBatchSampler", "NAFLDDataModule", "PBCSeqDataModule",
    "PointProcessDataModule", "ResumableDataLoader", "ShardSampler", "Standardizer", "SyntheticDataModule",
    "TimeDecayDataModule", "TimeFrequencyDataModule", "UEADataModule", "available_uea",
    "collate_events", "drop_time_indices", "gap_statistics", "leaky_integral", "load_uea",
    "make_decay_task", "make_frequency_task", "make_point_processes", "make_sinusoids",
    "make_spirals", "nafld_cohort", "pack_batch", "pbcseq_cohort", "read_bytes", "read_table",
    "unpack_batch",
    "resolve_time_scale", "simulate_hawkes", "simulate_poisson", "split_from_labels",
    "split_indices", "window_offsets",
    # temporal point processes
    "EasyTPPDataModule", "NAFLD3DataModule", "SyntheticTPPDataModule", "TPPDataModule",
    "read_easytpp", "write_easytpp",
]
