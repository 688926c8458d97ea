"""Structure-aware fuzzing of bundles: a developer tool (no dependency beyond the runtime's).

A case is named `KIND:SEED:INDEX` and is fully determined by that name: the mutation KIND is
applied, with the random generator of (SEED, INDEX, KIND), to one of the seed bundles (the
shipped samples and test models compiled at -O0 to -O3, see `compile_seeds`).

- STRUCTURED kinds edit the parsed BundleFile (tensor, buffer and attribute records,
  instructions, the program, the IO bindings, META, the Huffman streams in DATA) and
  re-serialize it, so every CRC is right and the mutation reaches the parsers, the verifier
  and the kernels. Out-of-enum values are stored as raw ints in the dataclass fields, which
  Construct writes as they are.
- BYTES kinds flip, set, insert or delete bytes inside one section and recompute the CRCs,
  rewrite the section table (with a valid header CRC), or truncate the file.

`execute` loads a blob, renders `dlcc explain --asm` of it and runs it on every target at
batch 1 and 2 with zero and random inputs, and classifies the outcome: ok, rejected (a
DlccError), traceback (any other exception: a bug), memory (MemoryError, or the loader
accepted an input too large to build). `run_cases` executes cases in spawned worker processes
(address space limited to 4 GB); a worker that dies is a "crash", one that exceeds the timeout
is killed and is a "hang". With `trace_memory`, each case also records its tracemalloc peak
against its declared need (file + decoded weights + every buffer at batch 2), see
`Result.overallocated`. `benchmarks/fuzz_bundles.py` runs long campaigns and replays cases.
"""

from dlcc.fuzz import bytelevel, structured  # noqa: F401  (register the mutation kinds)
from dlcc.fuzz.harness import (
    FAILURES,
    OUTCOMES,
    Result,
    execute,
    failures,
    format_failures,
    run_case,
    run_cases,
)
from dlcc.fuzz.mutant import BYTES, STRUCTURED, Seed, campaign, compile_seeds, mutant

__all__ = [
    "BYTES", "FAILURES", "OUTCOMES", "STRUCTURED", "Result", "Seed", "campaign", "compile_seeds",
    "execute", "failures", "format_failures", "mutant", "run_case", "run_cases",
]  # fmt: skip
