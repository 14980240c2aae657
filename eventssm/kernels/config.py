"""Tuning knobs of the kernels, read once into one object (not from the environment per launch).

``get_config()`` returns the current :class:`KernelConfig`; the first call reads the environment
variables below (so a job can still be tuned from the shell), later calls return the same object.
``set_config(...)`` replaces it (benchmarks sweeping a knob; tests), ``override(...)`` does so
for a ``with`` block. A changed knob that enters a kernel as a ``tl.constexpr`` (lanes, prefetch
distance, tile rows) compiles a new specialization on the next launch.

=========================  =================  ===============================================
environment variable       field              meaning
=========================  =================  ===============================================
EVENTSSM_FWD_LANES         fwd_lanes          lanes sharing a channel in the forward scan (1, 2,
                                              4, 8; default: 4 when 4 divides N, else 2 or 1)
EVENTSSM_BWD_LANES         bwd_lanes          same for the backward scan (1, 2, 4)
EVENTSSM_PREFETCH          prefetch           L2 prefetch distance of the scans, in chunks
                                              (0 = off, ≤ 64; default 4)
EVENTSSM_AUTOTUNE          autotune           0: only the first config of each autotuned
                                              kernel (one compilation per specialization)
EVENTSSM_CONV_FWD_ROWS     conv_fwd_rows      steps a causal-conv forward program computes
EVENTSSM_CONV_BWD_ROWS     conv_bwd_rows      steps a causal-conv backward tile computes
EVENTSSM_CONV_BWD_TILES    conv_bwd_tiles     tiles a causal-conv backward program walks
=========================  =================  ===============================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["KernelConfig", "ENV_VARS", "get_config", "set_config", "override"]

#: environment variable -> field of KernelConfig
ENV_VARS = {
    "EVENTSSM_FWD_LANES": "fwd_lanes",
    "EVENTSSM_BWD_LANES": "bwd_lanes",
    "EVENTSSM_PREFETCH": "prefetch",
    "EVENTSSM_AUTOTUNE": "autotune",
    "EVENTSSM_CONV_FWD_ROWS": "conv_fwd_rows",
    "EVENTSSM_CONV_BWD_ROWS": "conv_bwd_rows",
    "EVENTSSM_CONV_BWD_TILES": "conv_bwd_tiles",
}
_VAR = {field: var for var, field in ENV_VARS.items()}


@dataclass(frozen=True)
class KernelConfig:
    """The kernels' tuning knobs (defaults: the measured best on an H100, kernel_notes.md)."""

    #: lanes a channel in the forward scan; None: 4 when 4 divides N, else 2 or 1
    fwd_lanes: int | None = None
    #: lanes a channel in the backward scan; None: as the forward
    bwd_lanes: int | None = None
    #: chunks ahead that the scans prefetch their inputs into L2 (0: off)
    prefetch: int = 4
    #: False: only the first config of each autotuned kernel (tests: one compile each)
    autotune: bool = True
    #: causal conv1d: steps a forward program computes (a power of two ≥ 4; None: 32 on a GPU,
    #: 8 under the interpreter)
    conv_fwd_rows: int | None = None
    #: causal conv1d: steps a backward tile computes (a power of two ≥ 4; None: 8, or 4)
    conv_bwd_rows: int | None = None
    #: causal conv1d: tiles a backward program walks (its ∂w partial sums cover rows·tiles
    #: steps; None: 16, or 2)
    conv_bwd_tiles: int | None = None

    def __post_init__(self):
        def bad(field, allowed, got):
            raise ValueError(f"{field} ({_VAR[field]}) must be {allowed}, got {got!r}")

        if self.fwd_lanes not in (None, 1, 2, 4, 8):
            bad("fwd_lanes", "one of 1, 2, 4, 8", self.fwd_lanes)
        if self.bwd_lanes not in (None, 1, 2, 4):
            bad("bwd_lanes", "one of 1, 2, 4", self.bwd_lanes)
        if not isinstance(self.prefetch, int) or not 0 <= self.prefetch <= 64:
            bad("prefetch", "a number of chunks in 0..64", self.prefetch)
        if not isinstance(self.autotune, bool):
            bad("autotune", "a bool", self.autotune)
        for f in ("conv_fwd_rows", "conv_bwd_rows"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 4 or v > 128 or v & (v - 1)):
                bad(f, "a power of two in 4..128 (or None)", v)
        t = self.conv_bwd_tiles
        if t is not None and (not isinstance(t, int) or not 1 <= t <= 64):
            bad("conv_bwd_tiles", "in 1..64 (or None)", t)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KernelConfig:
        """The defaults with every variable of ``ENV_VARS`` set (and non-empty) in ``environ``
        (``os.environ`` by default) applied; a malformed value raises ``ValueError`` naming it."""
        environ = os.environ if environ is None else environ
        changes = {}
        for var, field in ENV_VARS.items():
            raw = environ.get(var, "")
            if raw == "":
                continue
            if field == "autotune":
                if raw not in ("0", "1"):
                    raise ValueError(f"{var} must be 0 or 1, got {raw!r}")
                changes[field] = raw == "1"
                continue
            try:
                changes[field] = int(raw)
            except ValueError:
                raise ValueError(f"{var} must be an integer, got {raw!r}") from None
        return cls(**changes)


_config: KernelConfig | None = None


def get_config() -> KernelConfig:
    """The current configuration (read from the environment on the first call)."""
    global _config
    if _config is None:
        _config = KernelConfig.from_env()
    return _config


def set_config(config: KernelConfig | None = None, **changes) -> KernelConfig:
    """Make ``config`` (or the current one with ``changes`` applied) current; returns the
    previous one."""
    global _config
    prev = get_config()
    new = config if config is not None else prev
    if not isinstance(new, KernelConfig):
        raise TypeError(f"config must be a KernelConfig, got {type(new).__name__}")
    _config = dataclasses.replace(new, **changes) if changes else new
    return prev


@contextlib.contextmanager
def override(**changes):
    """``with override(prefetch=0): ...`` runs the block with those fields changed."""
    prev = set_config(**changes)
    try:
        yield get_config()
    finally:
        set_config(prev)
