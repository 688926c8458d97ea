"""ONNX's backend node test cases for every op dlcc lowers: passed / skipped / failed per op.

    python benchmarks/onnx_node_cases.py [OP ...]

Runs the cases of `tests/test_onnx_node_cases.py` (all supported ops, or the ones named) and
prints a per-op table, then every skipped case with dlcc's reason, then every failure.
Exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict

from _common import table  # also puts tests/ on sys.path
from test_onnx_node_cases import node_cases, op_of, run_case

STATUSES = ("passed", "skipped", "failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", help="op types to run (default: every supported op)")
    args = parser.parse_args()

    start = time.perf_counter()
    counts: dict[str, Counter] = defaultdict(Counter)
    details: dict[str, list[tuple[str, str]]] = {"skipped": [], "failed": []}
    for case in node_cases():
        if args.ops and op_of(case) not in args.ops:
            continue
        with tempfile.TemporaryDirectory() as workdir:
            outcome = run_case(case, workdir)
        counts[op_of(case)][outcome.status] += 1
        if outcome.status in details:
            details[outcome.status].append((case.name, outcome.detail))

    rows = [(op, *(counts[op][s] for s in STATUSES)) for op in sorted(counts)]
    rows.append(("total", *(sum(c[s] for c in counts.values()) for s in STATUSES)))
    print(table(rows, ("op", *STATUSES)))
    for status, cases in details.items():
        if cases:
            print(f"\n{status} ({len(cases)}):")
            for name, detail in cases:
                lines = detail.splitlines() or [""]
                print(f"  {name}: {lines[0]}")
                for line in lines[1:]:
                    print(f"      {line}")
    print(f"\n{time.perf_counter() - start:.1f} s")
    return 1 if details["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
