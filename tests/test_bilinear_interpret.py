"""The Triton backward's bilinear gradients at large τ·|A|, under TRITON_INTERPRET=1 (tiny
sizes): the kernels use the closed forms dĀ/dx = 1/(1 − x/2)², ∂k/∂dtB = 1/(1 − dtB·A/2)²,
∂k/∂A = k²/2 (eventssm/kernels/utils.py ``discretize_grad``); this checks them against the float64
reference one τ·|A| decade at a time, as tests/test_bilinear_numerics.py does for the CPU paths.
Runs only with ``TRITON_INTERPRET=1 pytest -m interpret`` (see test_kernels_interpret.py)."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton interpreter tests: run `TRITON_INTERPRET=1 pytest -m interpret` (make test does)",
                allow_module_level=True)
pytest.importorskip("triton")

from eventssm import Additive, Asymmetric, Scaled  # noqa: E402
from tests.helpers import interpreted_kernels, rel_err  # noqa: E402
from tests.test_bilinear_numerics import XS, _grads, _inputs  # noqa: E402

pytestmark = pytest.mark.interpret


interpreted_kernels()


@pytest.mark.parametrize("coupling", [Asymmetric, Scaled, Additive], ids=lambda c: c.__name__)
def test_triton_bilinear_gradients_match_float64_across_tau_A(coupling):
    disc = coupling("bilinear")
    worst = {}
    for x in XS:
        ref = _grads(_inputs(x, coupling), disc, "reference")
        got = _grads(_inputs(x, coupling, torch.float32), disc, "triton")
        for k, g in ref.items():
            if g is None or float(g.abs().max()) == 0:
                continue
            worst[k] = max(worst.get(k, (0.0, x)), (rel_err(got[k], g), x))
    print(f"\n{coupling.__name__} triton (interpreter): worst relative error (error, τ·|A|):",
          {k: (f"{e:.1e}", x) for k, (e, x) in worst.items()})
    for k, (e, x) in worst.items():
        assert e < 1e-4, (k, x, e)
