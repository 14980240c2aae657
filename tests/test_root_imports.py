"""A Python started in the repository root imports the installed `transformers`, `datasets` and
`kernels` (Hugging Face's), not folders of this checkout, and transformers' Mamba round trip works.

`python -c`, `python -` (stdin, as an interactive interpreter) and pytest all put the root first
on ``sys.path``; `eventssm` must be the only importable name there.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in the root; prints where each package came from, then the round-trip error.
PROBE = r"""
import sys, pathlib
root = pathlib.Path.cwd().resolve()
assert sys.path[0] in ("", str(root)), sys.path[:2]
import transformers, datasets, kernels
for mod in (transformers, datasets, kernels):
    where = pathlib.Path(mod.__file__).resolve()
    assert "site-packages" in where.parts and root / mod.__name__ not in where.parents, (
        f"{mod.__name__} came from the checkout: {where}")
    print(mod.__name__, where)
import torch
from eventssm import MambaLM
cfg = transformers.MambaConfig(vocab_size=37, hidden_size=16, state_size=4, num_hidden_layers=2,
                               expand=2, conv_kernel=4, time_step_rank=3, use_mambapy=False)
torch.manual_seed(0)
hf = transformers.MambaForCausalLM(cfg).eval()
ours = MambaLM.from_state_dict(hf.state_dict()).eval()
ids = torch.randint(0, 37, (2, 9))
with torch.no_grad():
    ref, out = hf(ids).logits, ours(ids)
err = ((out - ref).abs().max() / ref.abs().max()).item()
print("round trip rel err", err)
assert err < 1e-4, err
"""


def _installed(name):
    """The package `name` as the interpreter finds it from outside the checkout."""
    code = f"import {name}, sys; print({name}.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["python -c", "python - (stdin)"])
def test_root_imports_installed_packages(how):
    for name in ("transformers", "datasets", "kernels"):
        if not _installed(name):  # the dev extra installs all three; say so rather than skip
            pytest.fail(f"{name} is not installed: pip install -e '.[dev]' provides it")
    if how == "python -c":
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    else:
        done = subprocess.run([sys.executable, "-"], input=PROBE, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round trip rel err" in done.stdout


def test_only_eventssm_is_importable_at_the_root():
    """No folder or module at the root besides `eventssm` (and the test and experiment trees)
    would be found by `import <name>` from there."""
    names = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    names |= {p.stem for p in ROOT.glob("*.py")}
    print(sorted(names))
    assert names <= {"eventssm", "tests"}, names
