r"""The dense path of the eigenvector PEs: graphs up to a few thousand nodes, no scipy.sparse.

Graphs are grouped by node count and built as dense ``(B, n, n)`` arrays: symmetrised
adjacency, degrees, connected components and the (magnetic) Laplacian of "Transformers Meet
Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049), Eq. (2)-(3):

.. math::
    L^{(q)} = I - D_s^{-1/2} (A_s \odot e^{i 2 \pi q_{\mathrm{eff}} S}) D_s^{-1/2}

(``q = None``: the ordinary Laplacian). One graph alone and the same graph among thousands
go through the same code and give the same bits:

* every construction step is elementwise IEEE arithmetic or a sum in a fixed order
  (``cumsum`` along a row, ``add.at`` / ``bincount`` in edge and node order); complex
  entries are assembled from their real and imaginary parts;
* each matrix is solved by its own call, the call a graph alone gets: a real one by
  ``numpy.linalg.eigh`` (``?syevd`` on a copy in a buffer of its own; all pairs), a complex
  one by :func:`~multipos.graph.small_kernels.hermitian_eigh` (the compiled solver, or
  ``?heevd`` without it)
  (a stacked batch in MKL's batched solver once gave matrices at other memory offsets other
  bits; OpenBLAS's solvers give the same bits at any offset and with 1 or 2 threads up to
  96 nodes, which ``tests/graph/test_determinism.py`` holds);
* graphs above :data:`~multipos.graph.medium.FULL_EIGH_MAX_NODES` nodes are not batched: each
  goes through :func:`~multipos.graph.medium.medium_eigenpairs`, as when it is alone;
* every solver call runs on one thread (:mod:`multipos.graph.threads`); many graphs are
  spread over Python threads, one whole graph per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import numpy as np

from multipos.graph.eigensolvers import Components, Eigenpairs, select_columns
from multipos.graph.medium import FULL_EIGH_MAX_NODES, medium_eigenpairs
from multipos.graph.small_kernels import hermitian_eigh
from multipos.graph.threads import blas_single_threaded
from multipos.graph.union import StackedGraphs, check_degrees, symmetrized_dense

__all__ = ["FULL_EIGH_MAX_NODES", "dense_eigenpairs"]

_T = TypeVar("_T")
#: Entries of the ``(B, n, n)`` arrays built at once (32 MiB of float64).
_CHUNK_ENTRIES = 1 << 22


class _Chunk(NamedTuple):
    a: np.ndarray  # (B, n, n) summed weights, zero diagonal
    a_sym: np.ndarray  # (B, n, n) symmetrised weights
    deg: np.ndarray  # (B, n)
    comps: Components


def _labels(adj: np.ndarray) -> np.ndarray:
    """Lowest node index of each node's connected component, ``(B, n)``; node ids are global
    over the batch (``b * n + u``). Integer-exact, so the same for any batch."""
    b, n, _ = adj.shape
    if n == 0:
        return np.zeros((b, 0), dtype=np.int64)
    # Reachability by repeated squaring of (A + I) > 0: 0/1 entries, sums of at most n ones,
    # exact in float64 whatever BLAS does; log2(diameter) + 1 products.
    reach = adj + np.eye(n)
    while True:
        nxt = np.minimum(reach @ reach, 1.0)
        if (nxt == reach).all():
            break
        reach = nxt
    first: np.ndarray = reach.argmax(axis=2) + (np.arange(b) * n)[:, None]
    return first  # the first reachable node: the lowest of the component


def _components(
    adj: np.ndarray, deg: np.ndarray, normalization: str, null_vectors: bool
) -> Components:
    """Components of ``B`` graphs; ``comp_rank`` / ``comp_value`` only with ``null_vectors``
    (else empty: only ``trivial="keep"`` of the real Laplacian reads them)."""
    b, n, _ = adj.shape
    isolated = deg <= 0.0
    labels = _labels(adj)  # (B, n), global ids
    is_root = (labels.ravel() == np.arange(b * n)) & ~isolated.ravel()
    num_comp = is_root.reshape(b, n).sum(axis=1)
    if not null_vectors:
        empty = np.zeros((b, 0))
        return Components(isolated, empty, empty, num_comp, isolated.sum(axis=1))
    ranks = np.cumsum(is_root.reshape(b, n), axis=1) - 1
    comp_rank = np.where(isolated, -1, ranks.ravel()[labels])
    # Canonical null vector of each component: D^{1/2} 1_C (sym) or 1_C (none), unit norm;
    # bincount adds in node order, so the norm does not depend on the batch.
    mass = np.where(isolated, 0.0, deg if normalization == "sym" else 1.0)
    norm2 = np.bincount(labels.ravel(), weights=mass.ravel(), minlength=b * n)
    comp_value = np.sqrt(mass) / np.sqrt(np.maximum(norm2[labels], 1e-300))
    return Components(isolated, comp_rank, comp_value, num_comp, isolated.sum(axis=1))


@np.errstate(over="ignore")  # an overflowing degree raises below
def _build_chunk(
    graphs: StackedGraphs,
    edge_graph: np.ndarray,
    gs: np.ndarray,
    n: int,
    symmetrize: str,
    normalization: str,
    null_vectors: bool,
) -> _Chunk:
    """Dense summed and symmetrised adjacency, degrees and components of the graphs ``gs``."""
    b = gs.size
    if b == graphs.sizes.size:  # all graphs (one graph alone, or one size)
        ep, row, col, w = edge_graph, graphs.row, graphs.col, graphs.weight
    else:
        pos = np.full(graphs.sizes.size, -1, dtype=np.int64)
        pos[gs] = np.arange(b)
        ep = pos[edge_graph]
        sel = ep >= 0
        ep, row, col, w = ep[sel], graphs.row[sel], graphs.col[sel], graphs.weight[sel]
    a = np.zeros((b, n, n))
    np.add.at(a, (ep, row, col), w)  # duplicates add, in edge order
    a[:, np.arange(n), np.arange(n)] = 0.0  # self-loops are dropped
    a_sym = symmetrized_dense(a, symmetrize)
    deg = np.cumsum(a_sym, axis=2)[:, :, -1] if n else np.zeros((b, 0))  # a sum in row order
    check_degrees(deg)
    return _Chunk(a, a_sym, deg, _components(a_sym > 0, deg, normalization, null_vectors))


def _direction(chunk: _Chunk, symmetrize: str) -> tuple[np.ndarray, np.ndarray]:
    """Antisymmetric direction matrix ``S`` ``(B, n, n)`` and one-way node pairs ``(B,)``."""
    pattern = chunk.a > 0
    pattern_t = pattern.transpose(0, 2, 1)
    one_way = (pattern & ~pattern_t).sum(axis=(1, 2))
    if symmetrize == "union":
        return pattern.astype(np.float64) - pattern_t, one_way
    if symmetrize == "mean":
        return chunk.a - chunk.a.transpose(0, 2, 1), one_way
    return np.zeros_like(chunk.a), one_way


def _laplacian(
    chunk: _Chunk, normalization: str, skew: np.ndarray | None, q_eff: np.ndarray | None
) -> np.ndarray:
    """``(B, n, n)`` (magnetic) Laplacian with a per-graph value above the spectrum on the
    diagonal of isolated nodes (3 for ``"sym"``, ``2 max(deg) + 1`` for ``"none"``)."""
    iso = chunk.comps.isolated
    b, n = iso.shape
    w_re = chunk.a_sym
    w_im = None
    if skew is not None and q_eff is not None:
        gi, ri, ci = np.nonzero(skew)
        theta = (2.0 * math.pi * q_eff)[gi] * skew[gi, ri, ci]
        w_re = chunk.a_sym.copy()
        w_im = np.zeros_like(w_re)
        w_re[gi, ri, ci] = chunk.a_sym[gi, ri, ci] * np.cos(theta)
        w_im[gi, ri, ci] = chunk.a_sym[gi, ri, ci] * np.sin(theta)
    if normalization == "sym":
        dinv = np.where(iso, 0.0, 1.0 / np.sqrt(np.where(iso, 1.0, chunk.deg)))
        lap_re = -(dinv[:, :, None] * w_re) * dinv[:, None, :]
        diag = np.where(iso, 3.0, 1.0)  # the spectrum lies in [0, 2]
        lap_im = None if w_im is None else -(dinv[:, :, None] * w_im) * dinv[:, None, :]
    else:
        shift = 2.0 * chunk.deg.max(axis=1, initial=0.0) + 1.0  # spectrum in [0, 2 max deg]
        lap_re = -w_re
        diag = np.where(iso, shift[:, None], chunk.deg)
        lap_im = None if w_im is None else -w_im
    lap_re[:, np.arange(n), np.arange(n)] = diag
    if lap_im is None:
        out: np.ndarray = lap_re
        return out
    lap = np.empty((b, n, n), dtype=np.complex128)
    lap.real, lap.imag = lap_re, lap_im
    return lap


def _solve_one(mat: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Every eigenvalue (ascending) of one Hermitian matrix and at least the eigenvectors of
    the ``count`` lowest: all pairs of a real one (``numpy.linalg.eigh``), the ``count``
    lowest of a complex one (:func:`~multipos.graph.small_kernels.hermitian_eigh`, the
    solver the per-graph path uses)."""
    if np.iscomplexobj(mat):
        return hermitian_eigh(mat, count)
    vals, vecs = np.linalg.eigh(mat)
    return vals, vecs


def _map(fn: Callable[[int], _T], count: int, workers: int) -> list[_T]:
    """``[fn(i) for i in range(count)]``, contiguous slices spread over ``workers`` threads."""
    if workers <= 1 or count < 2 * workers:
        return [fn(i) for i in range(count)]
    bounds = np.linspace(0, count, workers + 1).astype(int)

    def part(p: int) -> list[_T]:
        return [fn(i) for i in range(bounds[p], bounds[p + 1])]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for chunk in pool.map(part, range(workers)) for r in chunk]


def _solve_chunk(
    lap: np.ndarray,
    comps: Components,
    k: int,
    trivial: str,
    canonical_null: bool,
    workers: int,
) -> list[Eigenpairs]:
    b = lap.shape[0]
    # the columns select_columns may read: the null space it drops, then k
    count = (int(comps.num_comp.max(initial=0)) if trivial == "drop" else 0) + k
    solved = _map(lambda i: _solve_one(lap[i], count), b, workers)
    if b == 1:
        evals, evecs = solved[0][0][None], solved[0][1][None]
    else:
        evals, evecs = np.stack([v for v, _ in solved]), np.stack([v for _, v in solved])
    picked = select_columns(comps, evals, evecs, k, trivial, canonical_null)
    return [Eigenpairs(*p) for p in zip(*picked, strict=True)]


def _medium(
    graphs: StackedGraphs,
    ids: np.ndarray,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    qs: Sequence[float | None],
    q_mode: str,
    workers: int,
    krylov: bool,
) -> list[list[Eigenpairs]]:
    """:func:`~multipos.graph.medium.medium_eigenpairs` of each graph ``ids``, in order."""
    ends = np.cumsum(graphs.counts)
    starts = ends - graphs.counts

    def one(i: int) -> list[Eigenpairs]:
        g = int(ids[i])
        e = slice(int(starts[g]), int(ends[g]))
        return medium_eigenpairs(
            graphs.row[e],
            graphs.col[e],
            graphs.weight[e],
            int(graphs.sizes[g]),
            k,
            normalization,
            symmetrize,
            trivial,
            qs,
            q_mode,
            krylov=krylov,
        )

    with blas_single_threaded():
        return _map(one, ids.size, workers)


def dense_eigenpairs(
    graphs: StackedGraphs,
    ids: np.ndarray,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    qs: Sequence[float | None],
    q_mode: str,
    workers: int,
    *,
    krylov: bool = False,
) -> dict[int, list[Eigenpairs]]:
    """Eigen-PE of the graphs ``ids`` of ``graphs``: per graph, one :class:`Eigenpairs` per
    potential in ``qs`` (``None``: the real Laplacian, its null space replaced or dropped
    exactly), float64 / complex128.

    The solver calls are spread over ``workers`` Python threads, every BLAS held at one
    thread meanwhile. ``krylov``: graphs above
    :data:`~multipos.graph.medium.FULL_EIGH_MAX_NODES` nodes try the shift-invert solver
    for the magnetic Laplacian first (``solver="auto"``).

    Raises:
        ValueError: If ``symmetrize="none"`` meets a directed graph or a weighted degree
            overflows float64.
    """
    out: dict[int, list[Eigenpairs]] = {}
    if ids.size == 0:
        return out
    big = ids[graphs.sizes[ids] > FULL_EIGH_MAX_NODES]
    if big.size:
        each = _medium(
            graphs, big, k, normalization, symmetrize, trivial, qs, q_mode, workers, krylov
        )
        out.update(zip(big.tolist(), each, strict=True))
        ids = ids[graphs.sizes[ids] <= FULL_EIGH_MAX_NODES]
        if ids.size == 0:
            return out
    null = trivial == "keep" and any(q is None for q in qs)
    if graphs.sizes.size == 1:  # one graph: no grouping
        edge_graph = np.zeros(graphs.row.size, dtype=np.int64)
        groups = [ids]
    else:
        edge_graph = np.repeat(np.arange(graphs.sizes.size), graphs.counts)
        sizes = graphs.sizes[ids]
        order = np.argsort(sizes, kind="stable")
        ids, sizes = ids[order], sizes[order]
        groups = np.split(ids, np.flatnonzero(np.diff(sizes)) + 1)
    with blas_single_threaded():
        for same_n in groups:
            n = int(graphs.sizes[same_n[0]])
            per_chunk = max(1, _CHUNK_ENTRIES // max(n * n, 1))
            for lo in range(0, same_n.size, per_chunk):
                gs = same_n[lo : lo + per_chunk]
                chunk = _build_chunk(graphs, edge_graph, gs, n, symmetrize, normalization, null)
                results = [out.setdefault(int(g), []) for g in gs]
                skew, one_way = (None, None)
                if any(q is not None for q in qs):
                    skew, one_way = _direction(chunk, symmetrize)
                for q in qs:
                    q_eff = None
                    if q is not None and q_mode == "relative" and one_way is not None:
                        q_eff = q / np.maximum(1, np.minimum(one_way, n)).astype(np.float64)
                    elif q is not None:
                        q_eff = np.full(gs.size, q, dtype=np.float64)
                    lap = _laplacian(chunk, normalization, skew, q_eff)
                    solved = _solve_chunk(lap, chunk.comps, k, trivial, q is None, workers)
                    for res, pairs in zip(results, solved, strict=True):
                        res.append(pairs)
    return out
