"""The one place that picks a backend: for the scan, the conv and the single decoding step.

``path(backend, device)`` resolves ``"auto" | "triton" | "torch" | "reference"`` against the
device once and returns a :class:`Path`: three functions with fixed signatures that trust their
inputs (validation happens at the public boundary: :func:`eventssm.selective_scan`,
``Mamba.forward``/``step``, the models' ``forward``). ``Mamba`` calls ``path(self.backend,
device)`` once per call and runs the conv, the scan and the step through it.

========== ============================= ================================ ====================
backend    scan                          conv and conv step               step
========== ============================= ================================ ====================
triton     ``kernels.selective_scan_     ``kernels.causal_conv1d`` /      ``kernels.selective_
           triton`` (CUDA)               ``causal_conv1d_update`` when    state_update_triton``
                                         present, else the torch conv
torch      :mod:`eventssm.chunked`       :mod:`eventssm.conv` (channel-   the reference step
           (chunked, fast on the CPU)    last taps)
reference  :mod:`eventssm.reference`     :mod:`eventssm.conv`             the reference step
           (the per-step oracle)
========== ============================= ================================ ====================

``"auto"`` is ``"triton"`` for CUDA tensors when the kernels import, ``"torch"`` otherwise
(with a one-time warning on CUDA). The kernels compute in float32: float64 inputs on the
``"triton"`` path go to the reference scan and step and to the torch conv, decided here; the
kernels take the discretization as integer codes (``scheme_id``, ``coupling_id``), converted
here too, so that ``eventssm.kernels`` needs nothing from the core.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from eventssm.chunked import selective_scan_chunked
from eventssm.discretization import as_discretization

__all__ = ["BACKENDS", "Path", "backend_of", "path", "resolve_backend", "triton_available"]

BACKENDS = ("auto", "triton", "torch", "reference")


# Memos as plain dicts rather than functools.cache: torch.compile traces through these calls
# and warns about every cache-wrapped function it meets.
_TRITON: dict[str, tuple[bool, str]] = {}
_PATHS: dict[str, Path] = {}


# The torch path's scan under torch.compile: the chunked scan's autograd.Function calls
# torch.autograd.grad in its backward, which dynamo cannot trace; left to find that out, it
# tries, gives up and compiles the scan's helpers one frame at a time. Disabled, the scan is one
# graph break and runs eagerly between the compiled parts of a block (eager calls are
# unchanged). Wrapped at import: a wrapper made while tracing (the first path() call may happen
# inside a compiled function) would itself be a graph break.
_chunked_scan = torch.compiler.disable(selective_scan_chunked)


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
            :func:`eventssm.selective_scan` less ``backend`` and ``check_values``. The Triton
            path also takes ``dz_out`` (see :mod:`eventssm.shared_grad`).
        conv: ``conv(x, weight, bias=None, activation=None, initial_state=None,
            cu_seqlens=None, lengths=None, return_final_state=False)``: see
            :func:`eventssm.conv.causal_conv1d`; the Triton path also takes ``dx_out``.
        conv_step: ``conv_step(x, conv_state, weight, bias=None, activation=None)``: one
            decoding step of the conv, the ``(B, D, K)`` window updated in place, see
            :func:`eventssm.conv.causal_conv1d_update`.
        step: ``step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
            integration_timesteps=None, rate=None, discretization="mamba")``: one recurrence
            step updating ``state`` in place, see :func:`eventssm.selective_state_update_ref`.
        block: the Triton path only (None elsewhere): ``block(xz, conv_weight, conv_bias,
            x_proj_weight, dt_proj_weight, dt_bias, A_log, D, rho, out_proj_weight,
            out_proj_bias, discretization=..., integration_timesteps=None, mask=None,
            cu_seqlens=None)``, a Mamba block after ``in_proj`` as one autograd node, see
            :func:`eventssm.kernels.mamba_inner.mamba_inner_triton`.
    """

    name: str
    scan: Callable
    conv: Callable
    conv_step: Callable
    step: Callable
    block: Callable | None = None


def path(backend: str, device: torch.device) -> Path:
    """The :class:`Path` of ``backend`` (resolved by :func:`resolve_backend`) on ``device``."""
    name = resolve_backend(backend, device)
    if name not in _PATHS:
        _PATHS[name] = _build(name)
    return _PATHS[name]


def _build(name: str) -> Path:
    from eventssm.conv import causal_conv1d, causal_conv1d_update
    from eventssm.reference import selective_scan_ref, selective_state_update_ref

    if name == "reference":
        return Path(name, selective_scan_ref, causal_conv1d, causal_conv1d_update,
                    selective_state_update_ref)
    if name == "torch":
        return Path(name, _chunked_scan, causal_conv1d, causal_conv1d_update,
                    selective_state_update_ref)
    import eventssm.kernels as K

    # Kernels that take the discretization as integer codes know nothing of the core; earlier
    # ones took the Discretization object itself.
    codes = "scheme" in inspect.signature(K.selective_scan_triton).parameters

    def disc_args(kw):
        if codes:
            disc = as_discretization(kw.pop("discretization", "mamba"))
            kw.update(scheme=disc.scheme_id, coupling=disc.coupling_id)
        return kw

    def scan(u, delta, A, B, C, **kw):
        if any(t.dtype == torch.float64 for t in (u, delta, A, B, C)):
            kw.pop("dz_out", None)  # the reference returns a fresh ∂z
            return selective_scan_ref(u, delta, A, B, C, **kw)
        return K.selective_scan_triton(u, delta, A, B, C, **disc_args(kw))

    def conv(x, weight, *args, **kw):
        # the Triton conv when the kernels have it and the width is one it compiles (2..4);
        # ``dx_out`` / ``dz_out`` (Mamba's shared ∂xz buffer) are dropped where a fallback
        # cannot write into them, and the split's backward then concatenates instead
        kconv = getattr(K, "causal_conv1d", None)
        if kconv is None or x.dtype == torch.float64 or not 2 <= weight.shape[-1] <= 4 \
                or x.shape[1] == 0:
            kw.pop("dx_out", None)  # the torch conv returns a fresh ∂x
            return causal_conv1d(x, weight, *args, **kw)
        return kconv(x, weight, *args, **kw)

    def conv_step(x, conv_state, weight, *args, **kw):
        kstep = getattr(K, "causal_conv1d_update", None)
        if kstep is None or torch.float64 in (x.dtype, conv_state.dtype, weight.dtype):
            return causal_conv1d_update(x, conv_state, weight, *args, **kw)
        return kstep(x, conv_state, weight, *args, **kw)

    def step(state, *args, **kw):
        # the decode kernel updates a contiguous float32 state in place; float64 (tests) and
        # anything else go to the reference step
        if state.dtype != torch.float32 or not state.is_contiguous():
            return selective_state_update_ref(state, *args, **kw)
        return K.selective_state_update_triton(state, *args, **disc_args(kw))

    def block(xz, *weights, **kw):
        return K.mamba_inner_triton(xz, *weights, **disc_args(kw))

    if not hasattr(K, "mamba_inner_triton"):
        block = None
    return Path(name, scan, conv, conv_step, step, block)
