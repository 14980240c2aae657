"""Launch-configuration pruning of the Triton kernels (pure Python: no GPU, no interpreter)."""

from __future__ import annotations

import pytest
import torch

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


def test_prefetch_distance(monkeypatch):
    monkeypatch.delenv("EVENTSSM_PREFETCH", raising=False)
    default = utils.prefetch_distance()
    print("default L2 prefetch distance (chunks)", default)
    assert 1 <= default <= 64
    for value, want in (("0", 0), ("2", 2), ("64", 64)):
        monkeypatch.setenv("EVENTSSM_PREFETCH", value)
        assert utils.prefetch_distance() == want
    for bad in ("-1", "65", "two", "2,4"):
        monkeypatch.setenv("EVENTSSM_PREFETCH", bad)
        with pytest.raises(ValueError, match="EVENTSSM_PREFETCH"):
            utils.prefetch_distance()


@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_lanes_per_channel(monkeypatch, kernel):
    var = "EVENTSSM_FWD_LANES" if kernel == "forward" else "EVENTSSM_BWD_LANES"
    monkeypatch.delenv(var, raising=False)
    got = {N: utils.lanes_per_channel(N, kernel) for N in (3, 6, 16, 64)}
    print(kernel, "lanes per channel", got)
    # S must divide N (each lane holds N / S whole states)
    assert all(N % S == 0 for N, S in got.items())
    assert got[3] == 1 and got[6] == 2 and got[16] == 4
    monkeypatch.setenv(var, "2")
    assert utils.lanes_per_channel(16, kernel) == 2
    monkeypatch.setenv(var, "4")
    with pytest.raises(ValueError, match=var):
        utils.lanes_per_channel(6, kernel)
    # 8 lanes a channel only in the forward (its per-channel sums are the y of each step)
    monkeypatch.setenv(var, "8")
    if kernel == "forward":
        assert utils.lanes_per_channel(64, kernel) == 8
    else:
        with pytest.raises(ValueError, match=var):
            utils.lanes_per_channel(64, kernel)


@pytest.mark.parametrize("autotune", ["1", "0"])
def test_prune_limits_states_per_lane(monkeypatch, autotune):
    monkeypatch.setenv("EVENTSSM_AUTOTUNE", autotune)
    cfgs = [triton.Config({"K": k}, num_warps=1) for k in (4, 2)]
    for N, S in ((16, 4), (16, 1), (64, 4), (64, 1)):
        ks = [c.kwargs["K"] for c in utils.prune_unrolled(32)(cfgs, {}, N=N, S=S)]
        print(f"N={N} S={S} kept K", ks)
        assert ks, "at least one config must survive"
        assert all(k * N // S <= 32 for k in ks) or ks == [2]
        if autotune == "0":
            assert len(ks) == 1


def test_vector_bytes_checks_span_row_and_alignment():
    f32 = torch.zeros(4 * 16 + 1)
    bf16 = torch.zeros(4 * 16 + 8, dtype=torch.bfloat16)
    got = {
        "fp32 N16 S4": utils.vector_bytes(16, 4, f32[:64]),
        "fp32 N16 S4 offset 1": utils.vector_bytes(16, 4, f32[1:]),
        "fp32 N6 S2": utils.vector_bytes(6, 3, f32[:60]),
        "bf16 N16 S4": utils.vector_bytes(16, 4, bf16[:64]),
        "bf16 N16 S2": utils.vector_bytes(16, 8, bf16[:64]),
        "bf16 N6 S2 (3 values, 6 bytes)": utils.vector_bytes(6, 3, bf16[:60]),
        "bf16 one tensor misaligned": utils.vector_bytes(16, 8, bf16[:64], bf16[1:65]),
    }
    print(got)
    # the access divides each lane's span and each row, and every base address
    assert got["fp32 N16 S4"] == 16 and got["bf16 N16 S2"] == 16 and got["bf16 N16 S4"] == 8
    assert got["fp32 N16 S4 offset 1"] == 4  # 4-byte aligned only: word loads
    assert got["fp32 N6 S2"] == 4 and got["bf16 N6 S2 (3 values, 6 bytes)"] == 0
    assert got["bf16 one tensor misaligned"] == 0
