"""Launch-configuration pruning of the Triton kernels (pure Python: no GPU, no interpreter)."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from eventssm.kernels import utils  # noqa: E402


def _configs(*ks):
    return [triton.Config({"BD": 32, "K": k}, num_warps=1) for k in ks]


@pytest.mark.parametrize("autotune", ["1", "0"])
def test_prune_unrolled_limits_k_times_n(monkeypatch, autotune):
    monkeypatch.setenv("EVENTSSM_AUTOTUNE", autotune)
    prune = utils.prune_unrolled(128)
    kept = prune(_configs(4, 2, 8), {}, N=16)
    ks = [c.kwargs["K"] for c in kept]
    print("N=16 kept K", ks)
    assert all(k * 16 <= 128 for k in ks)
    assert ks == ([4, 2, 8] if autotune == "1" else [4])
    kept = prune(_configs(4, 2), {}, N=64)
    print("N=64 kept K", [c.kwargs["K"] for c in kept])
    assert [c.kwargs["K"] for c in kept] == [2]


def test_prune_unrolled_keeps_smallest_k_when_none_fit(monkeypatch):
    monkeypatch.setenv("EVENTSSM_AUTOTUNE", "1")
    kept = utils.prune_unrolled(128)(_configs(4, 2), {}, N=256)
    assert [c.kwargs["K"] for c in kept] == [2]
