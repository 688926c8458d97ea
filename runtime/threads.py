"""How many threads a run's BLAS (numpy's matrix products) may use: one setting per run.

    with blas_threads(n):       # n threads for the block; None: the physical cores
        ...                     # (nested blocks keep the outermost block's setting)

numpy's BLAS starts one thread per logical CPU and spins them while it waits for work; on a
shared or hyper-threaded machine that oversubscribes the cores and slows small products many
times. A run therefore sets the count explicitly, for the whole run, and restores it after.
The outermost block wins, so `dlcc run --threads 1` or `bundle.run(x, threads=1)` holds for
every product below it, however the targets nest their calls.

The count is a ceiling: a product below PARALLEL_WORK multiply-adds runs on one thread
(`product_threads`, which the interpreter's matrix engine calls before each product). Waking
a second thread costs a scheduler time slice when the cores are busy: on a loaded 2-core
machine, products of 8e6 to 7e7 multiply-adds took 6-65x longer on 2 threads than on one,
1.3e8 about as long (1.1x), 3e8 to 6e8 0.5-0.9x; OpenBLAS itself runs still smaller
products on one thread. The switch is sticky (set only when it changes, ~1-5 us), and the
block restores the libraries' own counts when it ends.

Two ways to apply it, the first available:
- threadpoolctl (a small, well-kept package): sets the thread count of the BLAS libraries
  already loaded into the process (OpenBLAS, MKL, BLIS), at a cost of about a microsecond;
- the environment (OPENBLAS_NUM_THREADS and its peers): only BLAS libraries loaded after
  it, and child processes, see it. numpy has loaded its BLAS by the time a bundle runs, so
  without threadpoolctl an explicit count reaches the worker processes only (a warning
  says so once); the runtime itself needs numpy and construct alone.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy  # noqa: F401  (loads the BLAS this module controls before anyone looks for it)

from dlcc.errors import ExecutionError

ENVIRONMENT = (
    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)  # fmt: skip

_active: list[int] = []  # the count set by the outermost open block (at most one entry)
_current: list[int] = []  # the count the libraries run at now, inside that block
PARALLEL_WORK = 1 << 27  # multiply-adds of the smallest product worth more than one thread


@functools.cache
def physical_cores() -> int:
    """The physical cores this process may run on: CPUs in its affinity mask, SMT siblings
    counted once, within a cgroup CPU quota when one is set (at least 1)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2 or 1)
    cores = set()
    for cpu in cpus:
        path = f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        try:
            with open(path) as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, min(len(cores), _cgroup_quota() or len(cores)))


def _cgroup_quota() -> int | None:
    """The CPUs a cgroup v2 quota allows (`cpu.max`: "max 100000" or "200000 100000")."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def check_threads(n: int | None) -> int | None:
    """`n` itself when it is None or a positive int; ExecutionError otherwise."""
    if n is not None and (type(n) is not int or n < 1):
        raise ExecutionError(f"threads must be a positive integer (or None), not {n!r}")
    return n


@functools.cache
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded now; () without it."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def backend() -> str:
    """How the count is applied: "threadpoolctl" or "environment"."""
    return "threadpoolctl" if _blas_libraries() else "environment"


class blas_threads:  # noqa: N801 (used as a function: `with blas_threads(n) as count:`)
    """BLAS runs on `n` threads inside the block (None: `physical_cores()`); `as` gives the
    count. Inside another block the outer setting holds and this one changes nothing.

    A class, not a generator: entering and leaving cost about a microsecond each, once per
    run; a library already at the count is neither set nor restored.
    """

    def __init__(self, n: int | None = None) -> None:
        self.n = check_threads(n)
        self.restore: list[tuple] = []
        self.environment: dict[str, str | None] = {}
        self.outermost = False

    def __enter__(self) -> int:
        if _active:
            return _active[0]
        count = physical_cores() if self.n is None else self.n
        libraries = _blas_libraries()
        for lib in libraries:
            old = lib.get_num_threads()
            if old != count:
                lib.set_num_threads(count)
            self.restore.append((lib, old))
        if not libraries:
            self.environment = _environment(count, explicit=self.n is not None)
        _active.append(count)
        _current.append(count)
        self.outermost = True
        return count

    def __exit__(self, *exc) -> None:
        if not self.outermost:
            return
        _active.clear()
        now = _current.pop()
        for lib, old in self.restore:
            if old != now:
                lib.set_num_threads(old)
        for name, old in self.environment.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def product_threads(work: int) -> None:
    """Inside a block: BLAS on one thread for a product of `work` multiply-adds below
    PARALLEL_WORK, on the block's count from there; set only when that changes. Outside a
    block, with one thread, or without threadpoolctl: nothing."""
    if not _active or _active[0] == 1:
        return
    want = _active[0] if work >= PARALLEL_WORK else 1
    if want != _current[0]:
        for lib in _blas_libraries():
            lib.set_num_threads(want)
        _current[0] = want


def _environment(count: int, explicit: bool) -> dict[str, str | None]:
    """The fallback: the count in the environment (for BLAS loaded later and child
    processes) when it was asked for explicitly; returns the values it replaced."""
    if not explicit:
        return {}
    _warn_once()
    before = {name: os.environ.get(name) for name in ENVIRONMENT}
    os.environ.update({name: str(count) for name in ENVIRONMENT})
    return before


@functools.cache
def _warn_once() -> None:
    warnings.warn(
        "threadpoolctl is not installed: the thread count reaches child processes only, "
        "not the BLAS numpy has already loaded (pip install threadpoolctl)",
        RuntimeWarning,
        stacklevel=5,
    )
