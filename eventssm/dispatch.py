"""The one place that picks a backend: for the scan, the conv and the single decoding step.

``path(backend, device)`` resolves ``"auto" | "triton" | "torch" | "reference"`` against the
device once and returns a :class:`Path`: three functions with fixed signatures that trust their
inputs (validation happens at the public boundary: :func:`eventssm.selective_scan`,
``Mamba.forward``/``step``, the models' ``forward``). ``Mamba`` calls ``path(self.backend,
device)`` once per call and runs the conv, the scan and the step through it.

========== ============================ ============================== ======================
backend     scan                         conv                           step
========== ============================ ============================== ======================
triton      ``kernels.selective_scan``   ``kernels.causal_conv1d`` when ``kernels.selective_
            (Triton, CUDA)               present, else the torch conv   state_update``
torch       :mod:`eventssm.chunked`      :func:`eventssm.conv.causal_   :func:`~eventssm.
            (chunked, fast on the CPU)   conv1d` (channel-last taps)    reference` step
reference   :mod:`eventssm.reference`    the torch conv                 the reference step
            (the per-step oracle)
========== ============================ ============================== ======================

``"auto"`` is ``"triton"`` for CUDA tensors when the kernels import, ``"torch"`` otherwise
(with a one-time warning on CUDA). The kernels compute in float32: float64 inputs on the
``"triton"`` path go to the reference scan and step and to the torch conv, decided here.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["BACKENDS", "Path", "backend_of", "path", "resolve_backend", "triton_available"]

BACKENDS = ("auto", "triton", "torch", "reference")


# Memos as plain dicts rather than functools.cache: torch.compile traces through these calls
# and warns about every cache-wrapped function it meets.
_TRITON: dict[str, tuple[bool, str]] = {}
_PATHS: dict[str, Path] = {}


def triton_available() -> tuple[bool, str]:
    """(available, reason): whether the Triton backend can be imported here (probed once)."""
    if not _TRITON:
        try:
            import eventssm.kernels as k

            ok = hasattr(k, "selective_scan_triton")
            _TRITON["status"] = (ok, "" if ok else "eventssm.kernels has no selective_scan_triton")
        except ImportError as e:  # triton missing or broken
            _TRITON["status"] = (False, f"{type(e).__name__}: {e}")
    return _TRITON["status"]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _warn_no_triton() -> None:
    warnings.warn(
        "eventssm: CUDA tensors but the Triton kernels are unavailable "
        f"({triton_available()[1]}); using the slower PyTorch path. "
        'Install them with `pip install "eventssm[triton]"`.',
        stacklevel=4,
    )


def backend_of(use_fast_path: bool, backend: str | None) -> str:
    """A module's backend setting: ``backend`` when given (checked), else ``"auto"`` (Triton on
    CUDA) with mamba-ssm's ``use_fast_path`` and ``"torch"`` without it."""
    if backend is None:
        return "auto" if use_fast_path else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend (``"triton" | "torch" | "reference"``) for ``backend`` on ``device``.

    Raises:
        ValueError: an unknown backend, or ``"triton"`` where the kernels cannot run (Triton
        missing, or CPU tensors without ``TRITON_INTERPRET=1``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    is_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        if is_cuda and triton_available()[0]:
            return "triton"
        if is_cuda:
            _warn_no_triton()
        return "torch"
    if backend == "triton":
        ok, why = triton_available()
        if not ok:
            raise ValueError(
                f'backend="triton" but the Triton kernels cannot be used here ({why}); '
                'install the extra with `pip install "eventssm[triton]"` or pass backend="torch"'
            )
        if not is_cuda and not _interpreting():
            raise ValueError(
                f'backend="triton" needs CUDA tensors, got tensors on {device} '
                "(set TRITON_INTERPRET=1 to run the kernels on the CPU for testing)"
            )
    return backend


@dataclass(frozen=True)
class Path:
    """The functions of one backend (all trust their inputs).

    Attributes:
        name: ``"triton" | "torch" | "reference"``.
        scan: ``scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
            integration_timesteps=None, rate=None, discretization="mamba",
            initial_state=None, return_last_state=False, cu_seqlens=None)``: the signature of
            :func:`eventssm.selective_scan` less ``backend`` and ``check_values``.
        conv: ``conv(x, weight, bias=None, activation="silu", initial_state=None,
            cu_seqlens=None, lengths=None, return_final_state=False)``: see
            :func:`eventssm.conv.causal_conv1d`.
        step: ``step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
            integration_timesteps=None, rate=None, discretization="mamba")``: one recurrence
            step updating ``state`` in place, see :func:`eventssm.selective_state_update_ref`.
    """

    name: str
    scan: Callable
    conv: Callable
    step: Callable


def path(backend: str, device: torch.device) -> Path:
    """The :class:`Path` of ``backend`` (resolved by :func:`resolve_backend`) on ``device``."""
    name = resolve_backend(backend, device)
    if name not in _PATHS:
        _PATHS[name] = _build(name)
    return _PATHS[name]


def _build(name: str) -> Path:
    from eventssm.conv import causal_conv1d
    from eventssm.reference import selective_scan_ref, selective_state_update_ref

    if name == "reference":
        return Path(name, selective_scan_ref, causal_conv1d, selective_state_update_ref)
    if name == "torch":
        from eventssm.chunked import selective_scan_chunked

        return Path(name, selective_scan_chunked, causal_conv1d, selective_state_update_ref)
    import eventssm.kernels as K

    def scan(u, delta, A, B, C, *args, **kw):
        if any(t.dtype == torch.float64 for t in (u, delta, A, B, C)):
            return selective_scan_ref(u, delta, A, B, C, *args, **kw)
        return K.selective_scan_triton(u, delta, A, B, C, *args, **kw)

    def conv(x, weight, *args, **kw):
        # the Triton conv when this version of the kernels has it, else the torch conv
        kconv = getattr(K, "causal_conv1d", None)
        if kconv is None or x.dtype == torch.float64:
            return causal_conv1d(x, weight, *args, **kw)
        return kconv(x, weight, *args, **kw)

    def step(state, *args, **kw):
        if state.dtype == torch.float64:
            return selective_state_update_ref(state, *args, **kw)
        return K.selective_state_update_triton(state, *args, **kw)

    return Path(name, scan, conv, step)
