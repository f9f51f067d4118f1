"""How many threads a training may use, and telling numba and torch.

On a shared machine or in a container the CPU count lies: `os.cpu_count()` is the host's, while
this process may be pinned to a few cores (sched_getaffinity) or given a CPU quota by its cgroup
(cpu.max). Running more threads than that only adds contention and throttling, so the count is:

    an explicit value  >  FMSTORE_THREADS  >  the CPUs this process may use (affinity, quota)

The CLI's `--threads` flag is the explicit value: `apply_threads(options.threads)`.
Imports nothing of ours but errors; numba and torch are imported only when applying.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Mapping

from fmstore.errors import ConfigError

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = CPU_MAX) -> float | None:
    """The CPUs a cgroup v2 quota allows ("quota period": 150000 100000 is 1.5), None when
    unlimited ("max ...") or unknown (no cgroup v2 file, unreadable, malformed)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(cpu_max: Path = CPU_MAX) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up,
    at least 1: a 1.5-CPU quota runs 2 threads that together get 1.5 CPUs of time)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max)
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(1, n)


def decide_threads(n: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """The thread count: `n` when given, else FMSTORE_THREADS, else available_cpus()."""
    env = os.environ if env is None else env
    source = "threads"
    if n is None and env.get("FMSTORE_THREADS", "").strip():
        source, raw = "FMSTORE_THREADS", env["FMSTORE_THREADS"].strip()
        try:
            n = int(raw)
        except ValueError:
            raise ConfigError(f"FMSTORE_THREADS must be a whole number, not {raw!r}") from None
    if n is None:
        return available_cpus()
    if n < 1:
        raise ConfigError(f"{source} must be at least 1, not {n}")
    return n


def apply_threads(n: int | None = None) -> int:
    """Set numba's and torch's thread counts to decide_threads(n); returns the count used.
    numba cannot go above the pool it started with (NUMBA_NUM_THREADS), so it gets at most that."""
    threads = decide_threads(n)
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    return threads


# Below this many ratings per step the FM's numba kernels run on one thread: a step of 1,024
# ratings is shorter than waking a second thread, and on a shared machine a parallel region waits
# for a thread the OS has descheduled. Measured beside one busy process on ml-latest-small
# (benchmarks/threads_shared.py): 0.215 s per epoch on 2 threads against 0.045 s on 1.
PARALLEL_MIN_BATCH = 65_536


@contextlib.contextmanager
def serial_below(batch_size: int, threshold: int = PARALLEL_MIN_BATCH):
    """numba on one thread inside the block when steps of `batch_size` ratings are too small to
    share; the thread count as it was afterwards."""
    if batch_size >= threshold:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ---- NumPy's BLAS, for many small products ---------------------------------------------------

# The names OpenBLAS builds export for its thread count (NumPy's wheels bundle scipy-openblas).
_BLAS_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
             "openblas_set_num_threads")  # fmt: skip
_BLAS_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
             "openblas_get_num_threads")  # fmt: skip


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's OpenBLAS on one thread for the duration: for many tiny solves and products (a live
    update's k x k and n x n systems), where waking BLAS threads costs more than the arithmetic,
    many times more on a busy machine (300 users' closed forms: 3 s on one thread against 21 s
    with OpenBLAS's own threads at load 13 on 2 cores). A no-op where no OpenBLAS is loaded."""
    calls = _openblas_calls()
    if calls is None:
        yield
        return
    get, set_ = calls
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)


_BLAS_CALLS: list = []  # found once: [(get, set)] or [None]


def _openblas_calls():
    if not _BLAS_CALLS:
        _BLAS_CALLS.append(_find_openblas())
    return _BLAS_CALLS[0]


def _find_openblas():
    import ctypes

    import numpy  # noqa: F401  (loads its BLAS, so that the library is mapped)

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps if "openblas" in line and "/" in line}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _BLAS_GET if hasattr(lib, n)), None)
        set_ = next((getattr(lib, n) for n in _BLAS_SET if hasattr(lib, n)), None)
        if get is not None and set_ is not None:
            set_.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
            return get, set_
    return None
