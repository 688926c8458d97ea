"""A short, deterministic fuzz campaign: no mutated bundle may fail other than by a DlccError.

The long campaign is `python benchmarks/fuzz_bundles.py`; a failing case here replays there
with `--replay KIND:SEED:INDEX` (full traceback, `--save` writes the mutant bundle).
"""

from __future__ import annotations

import itertools
import os

import pytest

from dlcc import fuzz

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def seeds() -> list[fuzz.Seed]:
    return fuzz.compile_seeds(ROOT)


def test_seeds_load_and_run(seeds):
    for seed in seeds:
        result = fuzz.execute(seed.name, seed.blob)
        assert result.outcome == "ok", f"{seed.name}: {result.message}\n{result.trace}"


def test_cases_are_reproducible_from_their_ids(seeds):
    for kind in (*fuzz.STRUCTURED, *fuzz.BYTES):
        for index in range(3):
            case = f"{kind}:7:{index}"
            blob, note = fuzz.mutant(case, seeds)
            assert fuzz.mutant(case, seeds) == (blob, note)
    assert fuzz.mutant("truncate:7:0", seeds) != fuzz.mutant("truncate:8:0", seeds)


def test_fuzz_campaign(seeds):  # about 5 s on 2 cores
    cases = itertools.chain(
        fuzz.campaign("structured", 300, seed=0), fuzz.campaign("bytes", 200, seed=0)
    )
    results = list(fuzz.run_cases(cases, seeds, workers=2, timeout=5.0))
    assert len(results) == 500
    invalid = [f"{r.case}: {r.error} {r.message}" for r in results if r.outcome == "invalid"]
    assert not invalid, "the fuzzer could not write these mutants:\n" + "\n".join(invalid)
    groups = fuzz.failures(results)
    assert not groups, (
        f"{sum(n for n, _ in groups)} of {len(results)} mutated bundles failed other than by a "
        f"DlccError ({len(groups)} distinct; replay with benchmarks/fuzz_bundles.py --replay):\n"
        + fuzz.format_failures(groups)
    )
