"""Packed batches on the Triton path (conv and scan kernels, which take ``cu_seqlens`` natively)
under ``TRITON_INTERPRET=1`` on the CPU: a Mamba block and an event encoder on a packed batch
against the torch path on the padded batch of the same sequences (forward and gradients).

Run in its own pytest invocation with the variable set from outside (see
tests/test_kernels_interpret.py): ``TRITON_INTERPRET=1 pytest -m interpret tests/test_packed_interpret.py``.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton interpreter tests: run `TRITON_INTERPRET=1 pytest -m interpret` (make test does)",
                allow_module_level=True)
pytest.importorskip("triton")

from eventssm import Asymmetric, EventEncoder, Mamba, Scaled, Standard  # noqa: E402
from eventssm.packing import cu_seqlens_from_lengths, pack_sequences  # noqa: E402

pytestmark = pytest.mark.interpret

LENS = [5, 1, 19, 3]  # longer than the interpreter's 16-step chunks, and a single event


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


@pytest.mark.parametrize("disc", [Asymmetric("zoh"), Scaled("mamba"), Standard("bilinear")],
                         ids=["asym-zoh", "scaled-mamba", "std-bilinear"])
def test_mamba_triton_packed_equals_torch_padded(disc):
    torch.manual_seed(0)
    ref = Mamba(8, d_state=4, discretization=disc, backend="torch")
    fast = Mamba(8, d_state=4, discretization=disc, backend="triton")
    fast.load_state_dict(ref.state_dict())
    lens = torch.tensor(LENS)
    B, L = len(LENS), max(LENS)
    X = torch.randn(B, L, 8)
    ts = (torch.rand(B, L, dtype=torch.float64) * 2).cumsum(1)
    cu = cu_seqlens_from_lengths(lens)
    Y = ref(X, lengths=lens, timestamps=ts)
    Yp = fast(pack_sequences(X, lens), timestamps=pack_sequences(ts, lens), cu_seqlens=cu)
    err = _rel(Yp, pack_sequences(Y, lens))
    print(f"y: rel err {err:.2e}")
    assert err < 1e-4
    G = torch.randn_like(Yp)
    g_ref = torch.autograd.grad((pack_sequences(Y, lens) * G).sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad((Yp * G).sum(), list(fast.parameters()))
    for (name, _), a, b in zip(ref.named_parameters(), g_fast, g_ref):
        err = _rel(a, b)
        print(f"d{name}: rel err {err:.2e}")
        assert err < 1e-4, name


def test_encoder_triton_packed_equals_torch_padded():
    torch.manual_seed(1)
    ref = EventEncoder(8, 1, d_input=2, d_state=4, discretization=Asymmetric("zoh"),
                       pooling="time", backend="torch")
    fast = EventEncoder(8, 1, d_input=2, d_state=4, discretization=Asymmetric("zoh"),
                        pooling="time", backend="triton")
    fast.load_state_dict(ref.state_dict())
    lens = torch.tensor(LENS)
    V = torch.randn(len(LENS), max(LENS), 2)
    ts = (torch.rand(len(LENS), max(LENS), dtype=torch.float64) * 2).cumsum(1)
    f = ref(V, timestamps=ts, lengths=lens)
    fp = fast(pack_sequences(V, lens), timestamps=pack_sequences(ts, lens),
              cu_seqlens=cu_seqlens_from_lengths(lens))
    err = _rel(fp, f)
    print(f"pooled: rel err {err:.2e}")
    assert err < 1e-4
