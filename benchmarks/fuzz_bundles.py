"""Fuzz the bundle reader, verifier, runtime and explain with mutated bundles (issue 9).

    python benchmarks/fuzz_bundles.py [--structured N] [--bytes N] [--workers W] [--seed S]
    python benchmarks/fuzz_bundles.py --replay KIND:SEED:INDEX [--save mutant.bin]

Seeds are the samples and tests/data/torch models compiled at -O0 to -O3 (kept in memory).
Runs N structure-aware and N byte-level cases (dlcc/fuzz.py) in W worker processes, each
case limited to --timeout seconds and 4 GB of address space, and prints per mutation kind
how many cases loaded and ran (ok), were refused with a DlccError (rejected), or raised
anything else (traceback), killed the worker (crash), timed out (hang) or ran out of memory
(memory); then every distinct failure (exception type and innermost dlcc frame) with a
replay id. `--trace-memory` also counts the cases whose traced peak exceeds twice their
declared need plus 16 MB (column mem>2x). Exits 1 on any traceback, crash, hang or memory.
`--replay` rebuilds one case and runs it in this process, printing its full traceback.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter, defaultdict

from _common import ROOT, table

from dlcc import fuzz

COLUMNS = ("ok", "rejected", "traceback", "crash", "hang", "memory")


def replay(case: str, seeds: list[fuzz.Seed], save: str | None) -> int:
    """Rebuild and run one case in this process; 1 if it fails."""
    blob, note = fuzz.mutant(case, seeds)
    print(f"{case}: {note} ({len(blob):,} bytes)")
    if save:
        with open(save, "wb") as f:
            f.write(blob)
        print(f"mutant written to {save}")
    result = fuzz.execute(case, blob)
    print(f"{result.outcome} during {result.stage}: {result.error} {result.message}")
    if result.trace:
        print(result.trace, end="")
    return int(result.outcome in fuzz.FAILURES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structured", type=int, default=100_000, metavar="N")
    parser.add_argument("--bytes", type=int, default=100_000, metavar="N")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--trace-memory", action="store_true", help="tracemalloc each case")
    parser.add_argument("--show", type=int, default=20, help="distinct failures to print")
    parser.add_argument("--replay", metavar="KIND:SEED:INDEX")
    parser.add_argument("--save", metavar="PATH", help="with --replay: write the mutant")
    args = parser.parse_args()

    start = time.perf_counter()
    seeds = fuzz.compile_seeds(ROOT)
    print(f"{len(seeds)} seeds compiled in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.replay:
        return replay(args.replay, seeds, args.save)

    cases = itertools.chain(
        fuzz.campaign("structured", args.structured, args.seed),
        fuzz.campaign("bytes", args.bytes, args.seed),
    )
    total = args.structured + args.bytes
    counts: dict[str, Counter] = defaultdict(Counter)
    results, done, start, shown = [], 0, time.perf_counter(), time.perf_counter()
    for r in fuzz.run_cases(
        cases, seeds, args.workers, args.timeout, trace_memory=args.trace_memory
    ):
        done += 1
        counts[r.kind][r.outcome] += 1
        counts[r.kind]["mem>2x"] += r.overallocated
        if r.outcome in fuzz.FAILURES or r.overallocated:
            results.append(r)
        if time.perf_counter() - shown >= 5 or done == total:
            shown, elapsed = time.perf_counter(), time.perf_counter() - start
            print(
                f"[{elapsed:6.0f} s] {done:,}/{total:,} cases, {done / elapsed:.0f}/s, "
                f"{sum(r.outcome in fuzz.FAILURES for r in results):,} failures",
                file=sys.stderr,
            )

    columns = COLUMNS + ("invalid",) * any(c["invalid"] for c in counts.values())
    columns += ("mem>2x",) * args.trace_memory
    rows = [(kind, sum(c[o] for o in fuzz.OUTCOMES), *(c[o] for o in columns)) for kind, c in
            sorted(counts.items())]  # fmt: skip
    rows.append(("total", *(sum(r[i] for r in rows) for i in range(1, len(columns) + 2))))
    print(table(rows, ("kind", "cases", *columns)))
    groups = fuzz.failures(results)
    if groups:
        print(f"\n{len(groups)} distinct failures (first {min(args.show, len(groups))}):")
        print(fuzz.format_failures(groups, args.show))
    heavy = sorted((r for r in results if r.overallocated), key=lambda r: -r.peak)
    for r in heavy[: args.show]:
        print(f"mem>2x {r.peak / 2**20:,.0f} MB traced, need {r.need / 2**20:,.1f} MB: "
              f"replay {r.case} ({r.note[:100]})")  # fmt: skip
    return int(bool(groups))


if __name__ == "__main__":
    sys.exit(main())
