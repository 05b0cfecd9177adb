r"""One thread for every floating-point kernel of the graph PEs, for the duration of a solve.

LAPACK, BLAS and ARPACK split their sums differently with 1 or 2 threads, so the same graph
would give different bits (and, for the pairwise random walks, a different set of stored
pairs) depending on ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``
and ``torch.set_num_threads``. :func:`single_threaded` holds torch's intra-op threads (which
also drive MKL) and every BLAS library loaded in the process (through ``threadpoolctl``) at
one thread, and restores them afterwards. Many graphs still run in parallel: the callers
spread whole graphs over Python threads, each graph solved by one single-threaded call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
from threadpoolctl import ThreadpoolController

__all__ = ["blas_single_threaded", "single_threaded", "torch_single_threaded"]


@lru_cache(maxsize=1)
def _controller() -> Any:
    # Built once: inspecting the loaded libraries takes milliseconds. The graph modules import
    # numpy and scipy (and so their BLAS) before the first call.
    return ThreadpoolController()


@contextmanager
def torch_single_threaded() -> Iterator[int]:
    """Hold torch's intra-op threads (and MKL's) at 1; yields the previous count.

    Besides fixing the rounding, this is faster for the small tensors of one graph: with two
    intra-op threads on busy cores, one element-wise ``sqrt`` of 240 float64 values was
    measured at 11 ms (thread wake-up), against 5 us on one thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield threads
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def _blas_libraries() -> tuple[Any, ...]:
    return tuple(lib for lib in _controller().lib_controllers if lib.user_api == "blas")


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """Hold every BLAS library loaded in the process (numpy's, scipy's) at one thread.

    Each library's count is read and set directly, and only set when it is not 1 already:
    ``ThreadpoolController.limit`` gathers every library's full description on each entry,
    measured at about 20 us, a tenth of a random-walk PE of a 30-node graph.
    """
    changed = []
    for lib in _blas_libraries():
        threads = lib.get_num_threads()
        if threads != 1:
            lib.set_num_threads(1)
            changed.append((lib, threads))
    try:
        yield
    finally:
        for lib, threads in changed:
            lib.set_num_threads(threads)


@contextmanager
def single_threaded() -> Iterator[int]:
    """Hold torch, MKL and every loaded BLAS at one thread; yields torch's previous count."""
    with blas_single_threaded(), torch_single_threaded() as threads:
        yield threads
