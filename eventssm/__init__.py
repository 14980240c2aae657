"""eventssm: Mamba selective state space models for event-driven, irregularly sampled sequences.

The core (this package's top level) imports only torch: Lightning tasks live in
``eventssm.tasks`` (with the command line) and event data in ``eventssm.datasets``.
"""

from eventssm.cache import EncoderCache, InferenceCache
from eventssm.discretization import (
    SCHEMES,
    Additive,
    Asymmetric,
    Discretization,
    Scaled,
    Standard,
    as_discretization,
)
from eventssm.mamba import Mamba
from eventssm.models import (
    EventEncoder,
    MambaBackbone,
    MambaLM,
    ResidualBlock,
    convert_mamba_state_dict,
    pool,
)
from eventssm.reference import selective_scan_ref, selective_state_update_ref
from eventssm.scan import selective_scan
from eventssm.ssm import SelectiveSSM
from eventssm.time import timesteps_from_timestamps

__version__ = "0.1.0"

__all__ = [
    "SCHEMES",
    "Additive",
    "Asymmetric",
    "Discretization",
    "Scaled",
    "Standard",
    "as_discretization",
    "EncoderCache",
    "EventEncoder",
    "InferenceCache",
    "Mamba",
    "MambaBackbone",
    "MambaLM",
    "ResidualBlock",
    "SelectiveSSM",
    "convert_mamba_state_dict",
    "pool",
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update_ref",
    "timesteps_from_timestamps",
]
