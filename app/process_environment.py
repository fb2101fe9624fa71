"""Process settings that keep big tensors cheap: glibc's allocator, OpenBLAS's and OpenMP's idle threads.

Measured on the 2-core development machines (issue 9; counts are deterministic, times noisy):

- A 30 MB conv output in a fresh buffer costs ~7,300 page faults (4 KiB each), ~30-45 ms here:
  glibc serves buffers over its mmap threshold with fresh mmaps, and threads other than the
  main one allocate from their own arenas, whose freed pages came back faulted anew each request.
  One arena, a 32 MB mmap threshold and a 128 MB trim threshold brought the faults of a repeated
  conv in a compute thread to 0 and its CPU time from ~33-41 ms to ~15 ms.
- After a NumPy BLAS call (the reference backend), OpenBLAS's threads spin for a while and a
  following torch call took ~40% more CPU time; OPENBLAS_THREAD_TIMEOUT=1 puts them to sleep at once.
- After a torch call, the threads of its OpenMP runtime (GNU libgomp) spin, waiting for the next
  parallel region, for milliseconds, on every core but one; what the server does next is send the
  result, and the socket writes and the client's reads queue behind the spinning threads.
  OMP_WAIT_POLICY=PASSIVE puts them to sleep at once (waking them for the next region costs
  microseconds). The notebook's Conv2d through the SDK (issue 19, tests/benchmarks/NOTES.md): with
  one core busy elsewhere 48.4 -> 37.4 ms end to end (medians of 40, in turns); on a quiet machine
  no change (36-38 ms both: the conv ~2 ms slower, the download as much faster). A shorter spin
  (GOMP_SPINCOUNT 30000 or 100000) kept the quiet conv's speed but gave back most of the gain under load.

`PROCESS_ENVIRONMENT` is for a process's start (the run command and the Docker image set it; an
operator's own values win). `tune_allocator` applies the allocator part to a running process with
mallopt(3), which is how `create_app` gets it however the app is served.
"""

import ctypes
import ctypes.util
import os
import sys

PROCESS_ENVIRONMENT = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
    "OPENBLAS_THREAD_TIMEOUT": "1",
    # One BLAS thread per request: compute workers already run requests side by side, and on the
    # reference convolution's cache-sized blocks a second thread only adds waiting (13 -> 16 ms).
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",  # read when torch loads its OpenMP runtime
}
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}
"""mallopt(3) parameter numbers: M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD."""


def process_environment(allocator: bool = True) -> dict[str, str]:
    """The variables to start a server process with (without MALLOC_* when `allocator` is false);
    values already in the environment win."""
    return {
        name: os.environ.get(name, value)
        for name, value in PROCESS_ENVIRONMENT.items()
        if allocator or name not in _MALLOPT
    }


def tune_allocator() -> bool:
    """Apply the allocator settings to this process (glibc only); False where mallopt is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    settings = process_environment()
    return all(mallopt(parameter, int(settings[name])) == 1 for name, parameter in _MALLOPT.items())


def reexec_with_process_environment() -> None:
    """Restart this script with PROCESS_ENVIRONMENT unless it already runs with it (for benchmarks:
    OPENBLAS_THREAD_TIMEOUT is read when NumPy loads, so it must be there at start)."""
    wanted = process_environment()
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **wanted})
