"""Freed memory stays with the process, so each run reuses the last one's, as in an arena.

A run allocates the same activations and temporaries as the run before (a few hundred KB
to tens of MB each) and frees them. glibc's malloc maps blocks above its mmap threshold
(128 KB, raised only as such blocks are freed) afresh, and returns the free top of its heap
to the OS beyond a trim threshold: either way the next run faults the same pages in again,
4 KB at a time, at 2-6 us a fault on this project's VMs. A Conv of 256 small images in
chunks took 1,423 faults and 3 ms of its 5; MobileNetV3-small at batch 64 ran 1.3x slower.
onnxruntime keeps its memory in an arena for the same reason.

`keep_freed_memory()`, which every run calls, sets glibc's M_MMAP_THRESHOLD to 32 MB (its
largest) and M_TRIM_THRESHOLD to 256 MB, once per process: blocks below 32 MB come from the
heap and are reused, and up to 256 MB of freed heap stays mapped. The resident size then
stays near its high-water mark, as with an arena. Nothing is changed where malloc is not
glibc's, or where the environment sets glibc's own variables (MALLOC_MMAP_THRESHOLD_, ...):
a choice already made.
"""

from __future__ import annotations

import ctypes
import functools
import os

MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the (reused) heap
TRIM_THRESHOLD = 256 << 20  # freed heap kept mapped before any is returned to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def keep_freed_memory() -> bool:
    """Set the thresholds above, once per process; whether they are set."""
    if any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no glibc's mallopt: macOS, Windows
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
