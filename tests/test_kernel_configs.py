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


def test_backward_lanes_per_channel(monkeypatch):
    from eventssm.kernels import selective_scan_bwd as bwd

    monkeypatch.delenv("EVENTSSM_BWD_LANES", raising=False)
    got = {N: bwd.lanes_per_channel(N) for N in (3, 6, 16, 64)}
    print("lanes per channel", got)
    # S must divide N (each lane holds N / S whole states)
    assert all(N % S == 0 for N, S in got.items())
    assert got[3] == 1 and got[6] == 2 and got[16] == 4
    monkeypatch.setenv("EVENTSSM_BWD_LANES", "2")
    assert bwd.lanes_per_channel(16) == 2
    monkeypatch.setenv("EVENTSSM_BWD_LANES", "4")
    with pytest.raises(ValueError, match="EVENTSSM_BWD_LANES"):
        bwd.lanes_per_channel(6)


@pytest.mark.parametrize("autotune", ["1", "0"])
def test_backward_prune_limits_states_per_lane(monkeypatch, autotune):
    from eventssm.kernels import selective_scan_bwd as bwd

    monkeypatch.setenv("EVENTSSM_AUTOTUNE", autotune)
    cfgs = [triton.Config({"K": k}, num_warps=1) for k in (4, 2)]
    for N, S in ((16, 4), (16, 1), (64, 4), (64, 1)):
        ks = [c.kwargs["K"] for c in bwd._prune_bwd(cfgs, {}, N=N, S=S)]
        print(f"N={N} S={S} kept K", ks)
        assert ks, "at least one config must survive"
        assert all(k * N // S <= 32 for k in ks) or ks == [2]
        if autotune == "0":
            assert len(ks) == 1
