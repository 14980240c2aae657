"""Triton kernels of eventssm (installed as ``eventssm.kernels``).

* :func:`selective_scan_triton`: fused forward/backward selective scan for every scheme ×
  coupling (DESIGN §2-3), a ``torch.library`` custom op with autograd.
* :func:`selective_state_update_triton`: one decode step, the state updated in place.
* :func:`mamba_inner_triton`: a Mamba block from ``in_proj``'s output to ``out_proj``'s as
  one autograd node (conv, projections, scan, gate), for eager training.
* :func:`causal_conv1d`: Mamba's causal depthwise conv1d (channel-last, any strides, bias and
  SiLU fused, conv states in and out, packed and padded batches), forward and backward;
  :func:`causal_conv1d_update` one decoding step; ``*_ref`` their plain-torch references.

Importing this package raises ``ImportError`` when Triton is not installed (or is unusable),
which :func:`eventssm.scan.triton_available` reports; nothing else in eventssm imports it at
import time.
"""

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as e:  # a broken install must not crash `import eventssm`
    raise ImportError(f"eventssm.kernels needs Triton (pip install 'eventssm[triton]'): {e}") from e

from .causal_conv1d import causal_conv1d, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
from .mamba_inner import mamba_inner_triton
from .selective_scan import selective_scan_triton
from .selective_state_update import selective_state_update_triton

__all__ = [
    "selective_scan_triton",
    "selective_state_update_triton",
    "mamba_inner_triton",
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "causal_conv1d_update_ref",
]
