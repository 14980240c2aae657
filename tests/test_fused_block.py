"""The Mamba block as one autograd node (``eventssm.kernels.mamba_inner``, issue 24 part 1)
against the same block as separate pieces (``fused=False``: the conv, the projections and the
scan, each its own node, tested against float64 in tests/test_kernels.py): outputs, ∂input, ∂τ
and every parameter's gradient, for standard and event mode, several schemes and couplings,
padded and packed batches; and the node count that is the point of it.

Interpreter cases are tiny (the kernels run in Python); the GPU cases add bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from eventssm import Additive, Asymmetric, Mamba, Scaled, Standard
from eventssm.packing import cu_seqlens_from_lengths, pack_sequences
from tests.helpers import device_cases, load_kernels, rel_err

pytest.importorskip("triton")
K = load_kernels()

LENS = [19, 7, 1]  # past the interpreter's 16-step chunks, and a single event

CASES = {
    "standard-mamba": (Standard("mamba"), False),
    "asym-mamba-no-tau": (Asymmetric("mamba"), False),  # falls back to standard: ∂ρ = 0
    "asym-zoh": (Asymmetric("zoh"), True),
    "additive-zoh": (Additive("zoh"), True),
    "scaled-bilinear": (Scaled("bilinear"), True),
}


def _pair(disc, device, d_model=8, d_state=4):
    torch.manual_seed(0)
    fused = Mamba(d_model, d_state=d_state, discretization=disc, backend="triton").to(device)
    pieces = Mamba(d_model, d_state=d_state, discretization=disc, backend="triton",
                   fused=False).to(device)
    pieces.load_state_dict(fused.state_dict())
    return fused, pieces


def _grads(block, h, tau, dy, **kw):
    h = h.detach().clone().requires_grad_(True)
    tau = None if tau is None else tau.detach().clone().requires_grad_(True)
    y = block(h, tau, **kw)
    (y.float() * dy).sum().backward()
    out = {"y": y.detach(), "input": h.grad}
    if tau is not None:
        out["tau"] = tau.grad
    out.update({n: p.grad for n, p in block.named_parameters()})
    return out, y


def _compare(a, b, tol):
    errs = {k: rel_err(a[k], b[k]) for k in b if b[k] is not None}
    missing = [k for k in b if (a[k] is None) != (b[k] is None)]
    print({k: f"{v:.1e}" for k, v in errs.items()})
    assert not missing, f"gradients present on one side only: {missing}"
    assert max(errs.values()) <= tol, errs


# (case, layout): the interpreter's default run keeps one standard and one event-mode pair, one
# of each layout; the rest are slow (each pair is about half a minute of interpreted kernels)
PAIRS = [(c, lay) for c in CASES for lay in ("padded", "packed")]
FAST = {"standard-mamba-padded", "asym-zoh-packed"}


@pytest.mark.parametrize("device, pair", device_cases(
    interpret={f"{c}-{lay}": (c, lay) for c, lay in PAIRS if c != "scaled-bilinear"},
    gpu={f"{c}-{lay}": (c, lay) for c, lay in PAIRS},
    slow=frozenset(f"{c}-{lay}" for c, lay in PAIRS) - FAST))
def test_fused_block_equals_pieces(device, pair):
    case, layout = pair
    disc, with_tau = CASES[case]
    fused, pieces = _pair(disc, device)
    lens = torch.tensor(LENS, device=device)
    B, L = len(LENS), max(LENS)
    h = torch.randn(B, L, 8, device=device)
    tau = torch.rand(B, L, device=device) * 2 if with_tau else None
    kw = {"lengths": lens}
    if layout == "packed":
        h = pack_sequences(h, lens)
        tau = None if tau is None else pack_sequences(tau, lens)
        kw = {"cu_seqlens": cu_seqlens_from_lengths(lens)}
    dy = torch.randn(*h.shape[:2], 8, device=device)
    a, y = _grads(fused, h, tau, dy, **kw)
    b, _ = _grads(pieces, h, tau, dy, **kw)
    assert type(y.grad_fn).__name__ == "_MambaInnerBackward"
    _compare(a, b, 1e-5)


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.interpret, id="interpret")])
def test_fused_block_is_one_node(device):
    """Behind the block's output: the fused node and ``in_proj``'s four (its matmul, the
    weight's transpose and two reshapes), against the separate pieces' 26 (what the host pays
    for in every training step)."""
    fused, pieces = _pair(Asymmetric("zoh"), device)
    h = torch.randn(2, 5, 8, device=device, requires_grad=True)
    tau = torch.rand(2, 5, device=device)

    def nodes(y):
        seen, todo = set(), [y.grad_fn]
        while todo:
            f = todo.pop()
            if f is None or f in seen or type(f).__name__ == "AccumulateGrad":
                continue
            seen.add(f)
            todo.extend(g for g, _ in f.next_functions)
        return sorted(type(f).__name__ for f in seen)

    n_fused, n_pieces = nodes(fused(h, tau)), nodes(pieces(h, tau))
    print(f"\nfused: {len(n_fused)} nodes {n_fused}\npieces: {len(n_pieces)} nodes")
    assert n_fused.count("_MambaInnerBackward") == 1
    assert len(n_fused) <= 5 and len(n_pieces) >= 4 * len(n_fused)


@pytest.mark.parametrize("fused", [True, False], ids=["one-node", "pieces"])
@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.interpret, id="interpret")])
def test_empty_sequence_axis(device, fused):
    """L = 0: an empty output and zero gradients, as on the torch path (the pieces then skip
    their shared ∂xz buffer, which has no rows to write in place)."""
    m = Mamba(8, d_state=4, backend="triton", fused=fused).to(device)
    h = torch.randn(2, 0, 8, device=device, requires_grad=True)
    y = m(h)
    y.sum().backward()
    assert y.shape == (2, 0, 8) and h.grad.shape == (2, 0, 8)
    assert float(m.out_proj.weight.grad.abs().sum()) == 0.0


def test_fused_only_where_it_applies():
    """The CPU (torch) path, float64 and a cache keep the pieces: the node is the Triton path's
    eager training and inference without a cache."""
    m = Mamba(8, d_state=4, backend="torch")
    assert m(torch.randn(1, 3, 8, requires_grad=True)).grad_fn is not None
    assert type(m(torch.randn(1, 3, 8, requires_grad=True)).grad_fn).__name__ != "_MambaInnerBackward"
    assert Mamba(8, fused=False).fused is False


@pytest.mark.parametrize("device, case", device_cases(gpu={k: k for k in ("standard-mamba", "asym-zoh")}))
def test_fused_block_bf16_autocast(device, case):
    """Under bf16 autocast (what Lightning's "bf16-mixed" runs) the fused node casts as the
    separate ``nn.Linear`` calls do: the same numbers up to bf16 rounding of reordered sums."""
    disc, with_tau = CASES[case]
    fused, pieces = _pair(disc, device, d_model=64, d_state=16)
    h = torch.randn(4, 300, 64, device=device)
    tau = torch.rand(4, 300, device=device) * 2 if with_tau else None
    dy = torch.randn(4, 300, 64, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, y = _grads(fused, h, tau, dy)
        b, _ = _grads(pieces, h, tau, dy)
    assert y.dtype == torch.bfloat16
    _compare(a, b, 2e-2)
