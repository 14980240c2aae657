"""Launch configuration of the Triton kernels: the one config object, config pruning, the codes
shared with the core, and the kernels' independence from the core (pure Python: no GPU, no
interpreter)."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

triton = pytest.importorskip("triton")

from eventssm.kernels import config, constants, utils  # noqa: E402
from eventssm.kernels.config import KernelConfig  # noqa: E402

KERNELS = pathlib.Path(utils.__file__).parent


def _configs(*ks):
    return [triton.Config({"BD": 32, "K": k}, num_warps=1) for k in ks]


def test_config_is_read_once_from_the_environment(monkeypatch):
    env = {"EVENTSSM_FWD_LANES": "2", "EVENTSSM_BWD_LANES": "", "EVENTSSM_PREFETCH": "0",
           "EVENTSSM_AUTOTUNE": "0", "EVENTSSM_CONV_BWD_ROWS": "8"}
    cfg = KernelConfig.from_env(env)
    print(cfg)
    assert cfg == KernelConfig(fwd_lanes=2, prefetch=0, autotune=False, conv_bwd_rows=8)
    assert KernelConfig.from_env({}) == KernelConfig()
    # get_config() reads os.environ once: a later change of the variable does not reach it
    monkeypatch.setattr(config, "_config", None)
    monkeypatch.setenv("EVENTSSM_PREFETCH", "2")
    assert config.get_config().prefetch == 2
    monkeypatch.setenv("EVENTSSM_PREFETCH", "8")
    assert config.get_config().prefetch == 2 and utils.prefetch_distance() == 2


@pytest.mark.parametrize("var, bad", [
    ("EVENTSSM_PREFETCH", "-1"), ("EVENTSSM_PREFETCH", "65"), ("EVENTSSM_PREFETCH", "two"),
    ("EVENTSSM_PREFETCH", "2,4"), ("EVENTSSM_FWD_LANES", "3"), ("EVENTSSM_BWD_LANES", "8"),
    ("EVENTSSM_AUTOTUNE", "yes"), ("EVENTSSM_CONV_FWD_ROWS", "12"),
    ("EVENTSSM_CONV_BWD_TILES", "0"),
])
def test_bad_environment_values_name_the_variable(var, bad):
    with pytest.raises(ValueError, match=var):
        KernelConfig.from_env({var: bad})


def test_set_config_and_override():
    before = config.get_config()
    with config.override(prefetch=0, autotune=False) as cfg:
        assert cfg.prefetch == 0 and utils.prefetch_distance() == 0
        assert len(utils.autotune_configs(_configs(4, 2))) == 1
    assert config.get_config() is before
    prev = config.set_config(KernelConfig(prefetch=3))
    try:
        assert utils.prefetch_distance() == 3 and prev is before
    finally:
        config.set_config(prev)
    with pytest.raises(TypeError, match="KernelConfig"):
        config.set_config("fast")


@pytest.mark.parametrize("autotune", [True, False])
def test_prune_unrolled_limits_k_times_n(autotune):
    with config.override(autotune=autotune):
        prune = utils.prune_unrolled(128)
        kept = prune(_configs(4, 2, 8), {}, N=16)
        ks = [c.kwargs["K"] for c in kept]
        print("N=16 kept K", ks)
        assert all(k * 16 <= 128 for k in ks)
        assert ks == ([4, 2, 8] if autotune else [4])
        kept = prune(_configs(4, 2), {}, N=64)
        print("N=64 kept K", [c.kwargs["K"] for c in kept])
        assert [c.kwargs["K"] for c in kept] == [2]


def test_deterministic_mode_runs_the_first_config(monkeypatch):
    """Under torch's deterministic mode the autotuner is offered one config: a choice by timing
    could differ between two runs."""
    monkeypatch.setattr(utils, "is_interpreting", lambda: False)
    prev = torch.are_deterministic_algorithms_enabled()
    with config.override(autotune=True):
        try:
            torch.use_deterministic_algorithms(True)
            on = [c.kwargs["K"] for c in utils.prune_unrolled(128)(_configs(4, 2), {}, N=16)]
            torch.use_deterministic_algorithms(False)
            off = [c.kwargs["K"] for c in utils.prune_unrolled(128)(_configs(4, 2), {}, N=16)]
        finally:
            torch.use_deterministic_algorithms(prev)
    print("kept K, deterministic mode on:", on, "off:", off)
    assert on == [4] and off == [4, 2]


def test_unfilled_skips_the_deterministic_fill_and_restores_it(monkeypatch):
    """Kernel outputs (written in full) skip the NaN fill torch gives ``torch.empty`` under
    deterministic mode; the setting is restored afterwards, also after an error."""
    det = torch.utils.deterministic
    assert det.fill_uninitialized_memory
    with utils.unfilled():
        assert not det.fill_uninitialized_memory
    assert det.fill_uninitialized_memory
    with pytest.raises(RuntimeError), utils.unfilled():
        raise RuntimeError("inside")
    assert det.fill_uninitialized_memory
    seen = []
    real = torch.empty

    def spy(*a, **k):
        seen.append(det.fill_uninitialized_memory)
        return real(*a, **k)

    monkeypatch.setattr(torch, "empty", spy)
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        for on in (False, True):
            torch.use_deterministic_algorithms(on)
            utils.new_empty(3, like=torch.zeros(1))
    finally:
        torch.use_deterministic_algorithms(prev)
    print("fill setting at each new_empty (mode off, on):", seen)
    assert seen == [True, False]


def test_prune_unrolled_keeps_smallest_k_when_none_fit():
    with config.override(autotune=True):
        kept = utils.prune_unrolled(128)(_configs(4, 2), {}, N=256)
    assert [c.kwargs["K"] for c in kept] == [2]


def test_prefetch_distance_default():
    default = KernelConfig().prefetch
    print("default L2 prefetch distance (chunks)", default)
    assert 1 <= default <= 64
    for value in (0, 2, 64):
        with config.override(prefetch=value):
            assert utils.prefetch_distance() == value


@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_lanes_per_channel(kernel):
    field = "fwd_lanes" if kernel == "forward" else "bwd_lanes"
    with config.override(**{field: None}):
        got = {N: utils.lanes_per_channel(N, kernel) for N in (3, 6, 16, 64)}
    print(kernel, "lanes per channel", got)
    # S must divide N (each lane holds N / S whole states)
    assert all(N % S == 0 for N, S in got.items())
    assert got[3] == 1 and got[6] == 2 and got[16] == 4
    with config.override(**{field: 2}):
        assert utils.lanes_per_channel(16, kernel) == 2
    with config.override(**{field: 4}), pytest.raises(ValueError, match="must divide N = 6"):
        utils.lanes_per_channel(6, kernel)
    # 8 lanes a channel only in the forward (its per-channel sums are the y of each step)
    if kernel == "forward":
        with config.override(fwd_lanes=8):
            assert utils.lanes_per_channel(64, kernel) == 8
    else:
        with pytest.raises(ValueError, match="EVENTSSM_BWD_LANES"):
            KernelConfig(bwd_lanes=8)


@pytest.mark.parametrize("autotune", [True, False])
def test_prune_limits_states_per_lane(autotune):
    cfgs = [triton.Config({"K": k}, num_warps=1) for k in (4, 2)]
    with config.override(autotune=autotune):
        for N, S in ((16, 4), (16, 1), (64, 4), (64, 1)):
            ks = [c.kwargs["K"] for c in utils.prune_unrolled(32)(cfgs, {}, N=N, S=S)]
            print(f"N={N} S={S} kept K", ks)
            assert ks, "at least one config must survive"
            assert all(k * N // S <= 32 for k in ks) or ks == [2]
            if not autotune:
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


def test_core_codes_equal_the_kernel_constants():
    """The core maps its discretizations onto the kernels' codes: the two tables must agree."""
    from eventssm import discretization

    print(discretization.SCHEME_IDS, constants.SCHEMES)
    assert dict(discretization.SCHEME_IDS) == constants.SCHEMES
    assert dict(discretization.COUPLING_IDS) == constants.COUPLINGS
    assert (constants.SCHEME_MAMBA, constants.SCHEME_ZOH, constants.SCHEME_BILINEAR,
            constants.SCHEME_DIRAC) == tuple(discretization.SCHEME_IDS[s] for s in
                                             ("mamba", "zoh", "bilinear", "dirac"))
    for cls in (discretization.Standard, discretization.Asymmetric, discretization.Scaled):
        assert cls().coupling_id == constants.COUPLINGS[cls.coupling]


def test_kernels_import_nothing_from_the_core():
    """eventssm/kernels/ imports eventssm.kernels.* (or relative) and third-party modules only: the
    dependency runs one way (DESIGN §8)."""
    offenders = []
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                if name == "eventssm" or (name.startswith("eventssm.")
                                          and not name.startswith("eventssm.kernels")):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    print(offenders)
    assert not offenders
