"""Import-level checks, also run by CI against the non-editable installed package."""

import importlib.metadata

import torch


def test_public_names_and_subpackages():
    import eventssm
    import eventssm.datasets  # noqa: F401
    import eventssm.kernels  # noqa: F401

    for name in ("selective_scan", "Mamba", "MambaLM", "EventEncoder", "Standard", "Asymmetric",
                 "Scaled", "Discretization", "SelectiveSSM", "ResidualBlock"):
        assert hasattr(eventssm, name), name


def test_console_script_declared():
    eps = importlib.metadata.entry_points(group="console_scripts")
    assert any(ep.name == "eventssm" and ep.value == "eventssm.tasks.cli:main" for ep in eps)


def test_scan_runs_from_installed_package():
    import eventssm

    u = torch.randn(1, 5, 3)
    y = eventssm.selective_scan(u, u, -torch.rand(3, 2) - 0.1, torch.randn(1, 5, 2), torch.randn(1, 5, 2))
    assert y.shape == (1, 5, 3) and torch.isfinite(y).all()


def test_core_does_not_import_lightning_or_pandas():
    import subprocess
    import sys

    code = ("import sys, eventssm, eventssm.models, eventssm.mamba, eventssm.tpp; "
            "bad=[m for m in ('lightning','pandas','pytorch_lightning') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
