"""GTA transforms in one pass over the tensor, by the compiled kernel
``multipos._group_kernels`` (``multipos/_native/group_kernels.c``, built at install when a C
compiler is there; without it the torch operations of :mod:`multipos.group_sections` run).
Used by :mod:`multipos.groups` outside autograd and compilation; nothing here is public.

A transform written as torch operations reads and writes the tensor once per operation (a
copy, a complex product per SO(2) section, a matmul and a copy per chunk of SE(3) channels);
the kernel reads every row once and writes it once. Measured (one thread, 2 x 6 x 256 x 64,
32 SE(3) + 32 SO(2) channels, inside attention): see ``benchmarks/gta.py``.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from multipos.group_sections import _Matrices, _Mode, _Rotations

_kernels: Any
try:
    import multipos._group_kernels as _group_kernels
except ImportError:  # built without a C compiler: the torch path runs
    _kernels = None
else:
    _kernels = _group_kernels

__all__: list[str] = []

# Fields per section, as group_kernels.c reads them.
_FIELDS = 9
_MAX_BLOCK = 64
# MULTIPOS_NATIVE=0 turns the kernel off (for comparisons; results agree to rounding).
_ENABLED = os.environ.get("MULTIPOS_NATIVE", "1") != "0"
# Elements from which a transform is shared among torch's intra-op threads. Measured (2
# threads, 8 x 6 x 1024 x 64 float32, SE(3) + SO(2)): the torch operations on 2 threads
# 2.0-2.6 ms, the kernel on one 2.9-3.6 ms, on two 1.9-2.4 ms; below about a million
# elements one thread finishes before a second would start.
_PARALLEL_MIN = 1 << 20


def available() -> bool:
    """Whether the compiled kernel is importable and enabled."""
    return _kernels is not None and _ENABLED


def _stride_or_zero(table: Tensor, dim: int) -> int:
    return 0 if table.shape[dim] == 1 else table.stride(dim)


def _spec(
    sections: tuple[_Rotations | _Matrices, ...], mode: _Mode, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]] | None:
    """The kernel's section fields ``(n, 9)`` for ``mode`` and the tables they point to, or
    ``None`` when a section's tables are not in ``dtype`` or its blocks are too large."""
    rows: list[list[int]] = []
    tables: list[Tensor] = []
    for s in sections:
        if isinstance(s, _Rotations):
            if s.cos.dtype != dtype:
                return None
            # Per channel: (cos, cos) and (-sin, sin) of each pair, so y = c x + s swap(x).
            cos = s.cos.repeat_interleave(2, dim=-1).contiguous()
            sin = s.sin if mode in ("rho", "inverse_transpose") else -s.sin
            sin = torch.stack((-sin, sin), dim=-1).flatten(-2).contiguous()
            b, t = _stride_or_zero(cos, 0), cos.stride(1)
            rows.append([0, s.start, s.count, 2, cos.data_ptr(), b, t, 0, sin.data_ptr()])
            tables += [cos, sin]
        else:
            if s.matrix.dtype != dtype or s.size > _MAX_BLOCK:
                return None
            mats = s.matrix if mode in ("rho", "transpose") else s.inverse
            # The kernel reads the effective matrix E column by column: the table is E^T.
            table = mats if mode in ("transpose", "inverse_transpose") else mats.mT
            if s.size == 4:
                table = _paired(table)
            table = table.contiguous()  # (B | 1, L, n | 1, d, d), or paired (.., 4, 8)
            b, t, n = (_stride_or_zero(table, d) for d in range(3))
            rows.append([1, s.start, s.count, s.size, table.data_ptr(), b, t, n, 0])
            tables.append(table)
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, _FIELDS), tables


def _paired(table: Tensor) -> Tensor:
    """4 x 4 blocks two at a time: ``(B | 1, L, n, 4, 4)`` -> ``(B | 1, L, ceil(n / 2), 4, 8)``
    with row ``c`` of pair ``p`` holding row ``c`` of blocks ``2p`` and ``2p + 1`` (the last
    block twice for odd ``n``), so the kernel loads each column of two blocks at once."""
    count = table.shape[2]
    if count == 1:
        return torch.cat((table, table), dim=-1)
    if count % 2:
        table = torch.cat((table, table[:, :, -1:]), dim=2)
    pairs = table.reshape(*table.shape[:2], -1, 2, 4, 4)  # (B | 1, L, P, 2, 4, 4)
    return pairs.transpose(3, 4).flatten(-2)  # (B | 1, L, P, 4, 2, 4) -> (.., P, 4, 8)


def write(
    tables: dict[tuple[Any, ...], Any],
    sections: tuple[_Rotations | _Matrices, ...],
    mode: _Mode,
    x: Tensor,
    dest: Tensor,
) -> bool:
    """Write ``rho x`` (in ``mode``) into ``dest`` (shape of ``x``, may be ``x``) with the
    kernel; the channels after the sections are copied. Returns whether it applied: a CPU
    float32/float64 tensor whose channels are contiguous, tables in its dtype, nothing
    recorded for autograd, not compiling."""
    if not (
        available()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and dest.dtype == x.dtype
        and x.dim() == 4
        and dest.shape == x.shape
        and x.stride(-1) == 1
        and dest.stride(-1) == 1
        and not torch.compiler.is_compiling()
        and not (torch.is_grad_enabled() and (x.requires_grad or dest.requires_grad))
    ):
        return False
    key = (mode, x.dtype)
    spec = tables.get(key)
    if spec is None:
        # built on the first call of a mode and dtype, kept with the representation
        spec = tables[key] = _spec(sections, mode, x.dtype) or ()
    if not spec:
        return False
    fields = spec[0]
    parts = _parts(x)
    if len(parts) == 1:
        _run(x, dest, fields, 0)
        return True
    # Large tensors on several torch threads: one share of the heads (or of the batch) per
    # thread, the kernel releasing the GIL; the calling thread takes the first share.
    pool = _pool(len(parts))
    futures = [pool.submit(_run, x[i], dest[i], fields, b0) for i, b0 in parts[1:]]
    index, b0 = parts[0]
    _run(x[index], dest[index], fields, b0)
    for future in futures:
        future.result()
    return True


def _run(x: Tensor, dest: Tensor, fields: Tensor, b0: int) -> None:
    assert _kernels is not None
    _kernels.apply(
        x.data_ptr(),
        dest.data_ptr(),
        x.dtype == torch.float64,
        tuple(x.shape),
        x.stride()[:3],
        dest.stride()[:3],
        fields.data_ptr(),
        fields.shape[0],
        b0,
    )


def _parts(x: Tensor) -> list[tuple[tuple[slice, ...], int]]:
    """``(index, first batch row)`` of each thread's share of ``x``: the whole tensor below
    ``_PARALLEL_MIN`` elements or on one torch thread, else the heads (or, with fewer heads
    than threads, the batch) split evenly over torch's intra-op thread count."""
    threads = torch.get_num_threads()
    if threads == 1 or x.numel() < _PARALLEL_MIN:
        return [((slice(None),), 0)]
    bsz, heads = x.shape[:2]
    if heads >= threads or heads >= bsz:
        cuts = _cuts(heads, threads)
        return [((slice(None), slice(lo, hi)), 0) for lo, hi in cuts]
    return [((slice(lo, hi),), lo) for lo, hi in _cuts(bsz, threads)]


def _cuts(size: int, parts: int) -> list[tuple[int, int]]:
    parts = min(parts, size)
    bounds = [size * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


_POOL: tuple[ThreadPoolExecutor, int] | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of at least ``workers`` threads, kept for later calls (grown when torch's thread
    count grows)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[1] < workers:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="multipos-gta")
            _POOL = (pool, workers)
        return _POOL[0]
