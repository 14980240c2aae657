"""A minimal plain-PyTorch example (no Lightning): classify irregularly sampled sinusoids by
frequency with an EventEncoder whose discretization is driven by the time between samples.

    python experiments/demo.py [--steps 150] [--discretization zoh]

Prints the training loss and the held-out accuracy.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from eventssm import Asymmetric, EventEncoder


def make_batch(n: int, L: int, g: torch.Generator):
    """Sinusoids of 2 classes (frequency 1 or 2) observed at random times in [0, 2π]."""
    label = torch.randint(0, 2, (n,), generator=g)
    t = torch.sort(torch.rand(n, L, generator=g) * 2 * math.pi, dim=1).values
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    x = torch.sin((1 + label[:, None]) * t + phase) + 0.1 * torch.randn(n, L, generator=g)
    return x[..., None], t, label


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--discretization", default="zoh")
    args = p.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = EventEncoder(d_model=32, n_layers=2, d_input=1, d_state=8,
                         discretization=Asymmetric(args.discretization), pooling="mean")
    head = torch.nn.Linear(32, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, t, y = make_batch(32, 48, g)
        loss = F.cross_entropy(head(model(x, timestamps=t)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    with torch.no_grad():
        x, t, y = make_batch(512, 48, torch.Generator().manual_seed(1))
        acc = (head(model(x, timestamps=t)).argmax(-1) == y).float().mean().item()
    print(f"held-out accuracy {acc:.3f}  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
