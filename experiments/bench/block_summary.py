"""The block bench's rows (``block.py`` output, the markdown table lines) pivoted into a compact
table: one row per model, one column per (dtype, depth), each cell ``ms (ratio to
mamba-ssm's fast path)``; plus the targets' verdicts.

    python experiments/bench/block_summary.py experiments/results/block_h200_log.txt
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

TARGET_STANDARD, TARGET_EVENT = 0.8, 0.9  # issue 12: ≤ 0.8× standard mode, ≤ 0.9× event mode


def parse(lines):
    """{(model, dtype, depth): (ms, ratio)} from the ``| block | ...`` rows."""
    out = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or cells[0] != "block":
            continue
        m = re.match(r"(1 block|4-layer stack): (.*)", cells[1])
        if not m:
            continue
        depth = 1 if m.group(1) == "1 block" else 4
        out[(m.group(2), cells[2], depth)] = (float(cells[3]), float(cells[5]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    a = ap.parse_args(argv)
    rows = parse(open(a.log).read().splitlines())
    cols = sorted({(dt, d) for _, dt, d in rows}, key=lambda c: (c[0] != "bfloat16", c[1]))
    models = list(dict.fromkeys(m for m, _, _ in rows))
    head = ["model"] + [f"{dt} {'1 block' if d == 1 else f'{d} layers'}" for dt, d in cols]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in models:
        cells = [f"{rows[(m, *c)][0]:.2f} ({rows[(m, *c)][1]:.2f}×)" if (m, *c) in rows else "-"
                 for c in cols]
        print(f"| {m} | " + " | ".join(cells) + " |")
    # the targets: ratios to mamba-ssm's fast path, standard mode ≤ 0.8, event mode ≤ 0.9
    verdict = defaultdict(list)
    for (m, dt, d), (_, ratio) in rows.items():
        if m.startswith("mamba-ssm"):
            continue
        event = "no timesteps" not in m
        verdict[(dt, d, event)].append(ratio)
    print()
    for (dt, d, event), rs in sorted(verdict.items()):
        target = TARGET_EVENT if event else TARGET_STANDARD
        print(f"- {dt}, {'1 block' if d == 1 else f'{d} layers'}, {'event' if event else 'standard'} "
              f"mode: ratios {min(rs):.2f}–{max(rs):.2f} against the target ≤ {target}: "
              f"{sum(r <= target for r in rs)} of {len(rs)} meet it")


if __name__ == "__main__":
    main()
