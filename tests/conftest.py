import functools
import os

import pytest
import torch

# Under pytest-xdist each worker gets one thread: two workers on two cores, no oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests are skipped without CUDA, and in a process that interprets the kernels;
    ``interpret`` tests without ``TRITON_INTERPRET=1`` (which must be set before triton decorates
    a kernel, so from outside: tests/helpers.py)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    skip_gpu = None
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    elif interpret:
        skip_gpu = pytest.mark.skip(reason="kernels are interpreted in this process")
    skip_interpret = None if interpret else pytest.mark.skip(
        reason="Triton interpreter tests: run `TRITON_INTERPRET=1 pytest -m interpret` (make test does)")
    for item in items:
        if skip_gpu and item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)
        elif skip_interpret and item.get_closest_marker("interpret") is not None:
            item.add_marker(skip_interpret)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _nan_filled(alloc):
    @functools.wraps(alloc)
    def wrapper(*args, **kwargs):
        t = alloc(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() and t.numel() else t

    return wrapper


@pytest.fixture(autouse=True)
def _poison_outputs(request, monkeypatch):
    """In `interpret`-marked tests every ``torch.empty``/``empty_like``/``empty_strided`` (the
    kernels' output buffers) comes filled with NaN, so an element a kernel fails to write shows up
    in the comparison. The hook lives here, not in the kernels (as fla patches ``torch.empty``
    from its conftest)."""
    if request.node.get_closest_marker("interpret") is not None:
        for name in ("empty", "empty_like", "empty_strided"):
            monkeypatch.setattr(torch, name, _nan_filled(getattr(torch, name)))
    yield


@pytest.fixture
def fresh_ddp_port(monkeypatch):
    """For tests that start a process group: Lightning writes the port it picked into
    ``os.environ["MASTER_PORT"]`` of the launching process, so a second DDP run in the same
    pytest worker would reuse it (and a group still closing there makes a rank abort). Each test
    starts without one and leaves none behind; the ``ddp`` xdist group keeps such tests on one
    worker, one at a time."""
    for var in ("MASTER_PORT", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    yield
    # what the test's launcher wrote (monkeypatch only undoes what it changed itself)
    for var in ("MASTER_PORT", "MASTER_ADDR"):
        os.environ.pop(var, None)
