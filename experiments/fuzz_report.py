"""Fuzz report (issue 15): run the strategies of tests/fuzz_targets.py with more examples per
target than the test suite does and print, per target, how many inputs were fuzzed, how many
raised a clear error (ValueError/TypeError naming the bad argument), how many returned finite
results matching the float64 reference, and the failures (deep errors, vague errors, wrong or
non-finite numbers), grouped by message.

    python experiments/fuzz_report.py [--examples 400] [--out experiments/results/fuzz.md]

Deterministic (hypothesis ``derandomize=True``); one CPU thread; a few minutes.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.fuzz_targets import TARGETS, FuzzFailure  # noqa: E402


def fuzz(name: str, examples: int):
    strategy, run = TARGETS[name]
    counts, failures = collections.Counter(), collections.Counter()

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def check(case):
        try:
            counts[run(case)] += 1
        except FuzzFailure as e:
            counts["fail"] += 1
            failures[str(e)[:160]] += 1

    check()
    return counts, failures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=400, help="inputs per target")
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    lines = [f"# Fuzz report ({args.examples} examples per target, derandomized; "
             "`python experiments/fuzz_report.py`)", "",
             "| target | inputs fuzzed | raised a clear error | returned finite & matching float64 | failures |",
             "|---|---:|---:|---:|---:|"]
    details, total = [], collections.Counter()
    start = time.time()
    for name in TARGETS:
        t0 = time.time()
        counts, failures = fuzz(name, args.examples)
        n = sum(counts.values())
        total.update(counts)
        total["n"] += n
        lines.append(f"| {name} | {n} | {counts['error']} | {counts['ok']} | {counts['fail']} |")
        for msg, k in failures.most_common():
            details.append(f"- {name}: {k} × {msg}")
        print(f"{name}: {dict(counts)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    lines.append(f"| **all** | {total['n']} | {total['error']} | {total['ok']} | {total['fail']} |")
    lines += ["", "Failures:" if details else "Failures: none.", *details, "",
              f"torch {torch.__version__}, {time.time() - start:.0f} s on one CPU thread."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
