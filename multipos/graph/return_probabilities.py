r"""Exact return probabilities :math:`\mathrm{diag}(P^t)` of large sparse graphs, in bounded
memory.

From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049), the node
form of the directional random-walk encoding. Materialising :math:`P^t` fills in (on a
100,000-node graph of out-degree 5, :math:`P^5` alone needs gigabytes). Instead, for a block
``B`` of start nodes, walks are propagated from both ends and met in the middle:

.. math::
    (P^t)_{uu} = \left\langle (P^\top)^{i} e_u, \; P^{j} e_u \right\rangle, \qquad
    i = \lfloor t / 2 \rfloor, \ j = t - i,

with :math:`P^{j} e_u` and :math:`(P^\top)^{i} e_u` kept as sparse columns for every ``u`` in
``B``. The result is exact (no sampling). Memory is bounded by the worst case of dense
columns, :math:`(\lceil T/2 \rceil + \lfloor T/2 \rfloor + 2) \cdot N \cdot 12` bytes per start
node, so the block size follows from ``memory_limit``; a configuration that cannot fit, or
that a timed sample says would take longer than ``time_limit``, raises before the work starts.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

__all__ = ["DEFAULT_MEMORY_LIMIT", "return_probabilities"]

#: Default memory budget of :func:`return_probabilities` for its working set, in bytes (1 GiB).
DEFAULT_MEMORY_LIMIT = 1 << 30
#: Bytes of one stored entry of a sparse column (float64 value + int32 index).
_ENTRY_BYTES = 12
#: Start nodes timed before the work starts, to estimate its duration.
_SAMPLE = 64
#: Show a progress bar (tqdm) when the estimate exceeds this many seconds (``progress=None``).
_PROGRESS_AFTER_S = 10.0


def _bytes_per_start(n: int, walk_length: int) -> int:
    """Worst-case working set per start node: the kept columns, one product, its input."""
    return (math.ceil(walk_length / 2) + walk_length // 2 + 2) * n * _ENTRY_BYTES


def _block(p: sp.csr_matrix, pt: sp.csr_matrix, starts: np.ndarray, walk_length: int) -> np.ndarray:
    """``(len(starts), T)`` return probabilities of the start nodes ``starts``."""
    n, b = p.shape[0], starts.size
    unit = sp.csr_matrix((np.ones(b), (starts, np.arange(b))), shape=(n, b))
    forward = [unit]  # P^j e_u, j = 0..ceil(T/2)
    for _ in range(math.ceil(walk_length / 2)):
        forward.append(sp.csr_matrix(p @ forward[-1]))
    backward = [unit]  # (P^T)^i e_u, i = 0..floor(T/2)
    for _ in range(walk_length // 2):
        backward.append(sp.csr_matrix(pt @ backward[-1]))
    out = np.empty((b, walk_length))
    for t in range(1, walk_length + 1):
        i = t // 2
        out[:, t - 1] = np.asarray(backward[i].multiply(forward[t - i]).sum(axis=0)).ravel()
    return out


def return_probabilities(
    p: sp.csr_matrix,
    walk_length: int,
    *,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    time_limit: float | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    r"""Exact :math:`\left(P^t_{uu}\right)_{t = 1..T}` of a row-stochastic sparse ``P``,
    ``(N, T)`` float64, with the working set under ``memory_limit`` bytes.

    Args:
        p: ``(N, N)`` sparse transition matrix.
        walk_length: ``T >= 1``.
        memory_limit: Budget in bytes for the propagated columns (the input matrix and the
            ``(N, T)`` output are not counted).
        time_limit: Seconds; ``None`` for no limit. Checked against an estimate from a timed
            sample of 64 start nodes, before the work starts.
        progress: Show a tqdm progress bar; ``None`` shows it when the estimate exceeds 10 s.

    Raises:
        ValueError: If one start node's worst-case working set exceeds ``memory_limit``, or
            the estimated time exceeds ``time_limit`` (both messages give the estimate).
    """
    n = p.shape[0]
    per_start = _bytes_per_start(n, walk_length)
    if per_start > memory_limit:
        raise ValueError(
            f"memory_limit={memory_limit} bytes is below the {per_start} bytes one start node "
            f"may need (N={n}, walk_length={walk_length}); raise memory_limit"
        )
    block = max(1, min(n, memory_limit // per_start))
    p = sp.csr_matrix(p)
    pt = sp.csr_matrix(p.T)
    out = np.empty((n, walk_length))
    sample = np.arange(min(n, _SAMPLE, block))
    start = time.perf_counter()
    if sample.size:
        out[sample] = _block(p, pt, sample, walk_length)
    estimate = (time.perf_counter() - start) * n / max(sample.size, 1)
    if time_limit is not None and estimate > time_limit:
        raise ValueError(
            f"return probabilities of N={n} nodes for walk_length={walk_length} are estimated "
            f"at {estimate:.0f} s (timed on {sample.size} nodes), above time_limit={time_limit}"
        )
    bounds = list(range(sample.size, n, block))
    if progress or (progress is None and estimate > _PROGRESS_AFTER_S):
        from tqdm.auto import tqdm

        bounds = tqdm(bounds, desc="return probabilities", unit="block")
    for lo in bounds:
        starts = np.arange(lo, min(lo + block, n))
        out[starts] = _block(p, pt, starts, walk_length)
    return out
