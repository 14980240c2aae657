"""Shared test helpers: random scan inputs, error metrics, the kernel suites' devices and the
repository's scripts as modules."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eventssm import SCHEMES, Additive, Asymmetric, Scaled, Standard

ROOT = Path(__file__).resolve().parents[1]

COUPLINGS = (Standard, Asymmetric, Scaled, Additive)
ALL_DISCRETIZATIONS = [c(scheme=s) for c, s in itertools.product(COUPLINGS, SCHEMES)]
DISC_IDS = [f"{type(d).__name__}-{d.scheme}" for d in ALL_DISCRETIZATIONS]


# What reads a value back from the device (a host sync on a GPU; forbidden in a CUDA-graph capture).
DEVICE_READS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")


def count_device_reads(monkeypatch) -> list[str]:
    """Spy on every :data:`DEVICE_READS` method of ``torch.Tensor`` for the rest of the test (or
    until ``monkeypatch.undo()``); returns the list each read appends its method name to."""
    reads: list[str] = []
    for name in DEVICE_READS:
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads



def count_calls(monkeypatch, owner, name: str) -> list[int]:
    """Spy on ``owner.<name>`` (a module's function) for the rest of the test (or until
    ``monkeypatch.undo()``); returns the list each call appends ``1`` to, the real function
    still running."""
    calls: list[int] = []
    real = getattr(owner, name)

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(owner, name, spy)
    return calls

def spy_value_checks(monkeypatch) -> dict[str, list]:
    """Record every :class:`~eventssm.checks.ValueChecks` for the rest of the test: ``added``
    gets the name of each check a call gathers, ``runs`` the names of the checks of each run
    (one list per run, in order)."""
    from eventssm.checks import ValueChecks

    seen: dict[str, list] = {"added": [], "runs": []}
    add, run = ValueChecks.add, ValueChecks.run

    def spy_add(self, what, flag, explain):
        seen["added"].append(what)
        return add(self, what, flag, explain)

    def spy_run(self):
        seen["runs"].append(self.names)
        return run(self)

    monkeypatch.setattr(ValueChecks, "add", spy_add)
    monkeypatch.setattr(ValueChecks, "run", spy_run)
    return seen


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (max-norm relative error, with a floor so zeros compare)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) if b.numel() else 0.0


def scan_inputs(b=2, L=9, D=6, N=4, G=None, dtype=torch.float64, tau_max=5.0, z=True,
                h0=True, softplus=True, requires_grad=False, generator=None):
    """Fresh random inputs for selective_scan with steps and gaps large enough to matter."""
    g = generator
    r = lambda *s: torch.randn(*s, dtype=dtype, generator=g)
    Bshape = (b, L, N) if G is None else (b, L, G, N)
    kw = dict(
        u=r(b, L, D), delta=r(b, L, D) * 0.5 + (0.5 if softplus else 1.5),
        A=-(torch.rand(D, N, dtype=dtype, generator=g) * 2 + 0.1), B=r(*Bshape), C=r(*Bshape),
        D=r(D), z=r(b, L, D) if z else None, delta_bias=r(D) * 0.3,
        integration_timesteps=torch.rand(b, L, dtype=dtype, generator=g) * tau_max,
        rate=torch.rand(D, dtype=dtype, generator=g) + 0.2,
        initial_state=r(b, D, N) if h0 else None,
    )
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    if requires_grad:
        for v in kw.values():
            if v is not None:
                v.requires_grad_(True)
    return kw


def softplus_error_ratio(y: torch.Tensor, x: torch.Tensor, base: float) -> tuple[float, float]:
    """A float32 softplus ``y`` of ``x`` (the float32 inputs, any device) against float64:
    ``(max relative error, max of error / bound)``.

    The bound is ``base`` (the formula's and the hardware's error) plus what float32 itself puts
    in: it rounds δ·log2 e by up to 2^-24 of itself, and 2^(δ·log2 e) carries that into
    w = e^-|δ| (Δ ~ w when δ << 0), so the bound grows with |δ|."""
    x64 = x.double()
    ref = torch.nn.functional.softplus(x64.cpu(), threshold=1e9).to(x64.device)
    rel = (y.double() - ref).abs() / ref
    bound = base + 2.0 ** -24 * 1.4427 * x64.abs()
    return rel.max().item(), (rel / bound).max().item()


# The kernel suites run each test on one of two devices, a parameter named ``device``:
# - ``interpret`` ("cpu"): Triton kernels under ``TRITON_INTERPRET=1`` on the CPU, tiny shapes.
#   The interpreter is chosen when triton *decorates* a kernel, and setting the variable inside a
#   pytest process would leak into every other test module of that process (e.g. make
#   ``backend="triton"`` accept CPU tensors), so these run in their own pytest invocation with
#   the variable set from outside: ``TRITON_INTERPRET=1 pytest -m interpret`` (``make test`` does).
# - ``gpu`` ("cuda"): compiled kernels on a CUDA device, real sizes and bf16.
# tests/conftest.py skips each where it cannot run: ``interpret`` without the variable, ``gpu``
# without CUDA or under the interpreter.
INTERPRET = pytest.param("cpu", marks=pytest.mark.interpret, id="interpret")
GPU = pytest.param("cuda", marks=pytest.mark.gpu, id="gpu")
DEVICES = [INTERPRET, GPU]


def interpreting() -> bool:
    """Whether this process runs Triton kernels in the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def device_cases(interpret: dict | None = None, gpu: dict | None = None,
                 slow: frozenset[str] = frozenset()) -> list:
    """pytest params ``(device, case)`` for ``parametrize("device, case", ...)``: each value of
    ``interpret`` on the interpreter, each of ``gpu`` on CUDA, with ids ``interpret-<key>`` and
    ``gpu-<key>``, for checks whose cases (sizes, dtypes) differ per device. The interpreter cases
    named in ``slow`` are also marked ``slow`` (``make test-slow``, not ``make test``)."""
    return ([pytest.param("cpu", c, marks=[pytest.mark.interpret, *([pytest.mark.slow] if k in slow else [])],
                          id=f"interpret-{k}")
             for k, c in (interpret or {}).items()]
            + [pytest.param("cuda", c, marks=pytest.mark.gpu, id=f"gpu-{k}")
               for k, c in (gpu or {}).items()])


def load_kernels():
    """``eventssm.kernels`` as this process runs them: decorated for the interpreter under
    ``TRITON_INTERPRET=1`` (a module imported earlier in the session without the variable holds
    compiled JIT functions, so then its kernel modules are reloaded, dependencies first),
    compiled otherwise. Returns the package."""
    import eventssm.kernels as K

    if not interpreting():
        return K
    if type(K.selective_scan_fwd.selective_scan_fwd_kernel.fn.fn).__name__ != "InterpretedFunction":
        for name in ("utils", "selective_scan_fwd", "selective_scan_bwd", "selective_state_update",
                     "selective_scan", "causal_conv1d", "mamba_inner"):
            importlib.reload(importlib.import_module(f"eventssm.kernels.{name}"))
        K = importlib.reload(K)
    return K


def load_script(path: str):
    """A script of the repository (``"experiments/plot_tpp.py"``) imported as a module under its
    file's stem, without putting its folder on ``sys.path``; loaded once per process."""
    file = ROOT / path
    name = file.stem
    mod = sys.modules.get(name)
    if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve() == file:
        return mod
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # as an import would (dataclasses, pickling and mp look it up)
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def bench_table_rows(script: str, *args: str, out: Path, timeout: float) -> list[str]:
    """Run the benchmark ``script`` (``"experiments/bench/fit.py"``) with ``args`` and
    ``--out out`` in a subprocess (one thread, kernels compiled, not interpreted), assert it
    exits 0 and return the body rows of the markdown table it wrote (``| ...`` lines, the header
    and separator dropped)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(ROOT / script), *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    print(proc.stdout[-4000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    return [r for r in out.read_text().splitlines() if r.startswith("| ") and "---" not in r][1:]


def tpp_batch(seqs) -> dict:
    """A padded next-event batch (``collate_events``) of ``(times, marks)`` numpy pairs: each
    event's target is the next mark and gap (-100 and 0 at a sequence's last event)."""
    import numpy as np

    from eventssm.datasets.collate import collate_events

    samples = []
    for t, m in seqs:
        nxt = np.full(len(m), -100)
        nxt[:-1] = m[1:]
        gap = np.zeros(len(m), dtype=np.float32)
        gap[:-1] = np.diff(t)
        samples.append({"timestamps": t, "marks": m, "target": nxt, "target_gap": gap})
    return collate_events(samples)
