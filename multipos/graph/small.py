r"""The per-graph fast path: one graph of up to 96 nodes, in a few dozen array operations.

A PyG dataset calls a ``pre_transform`` once per graph, so for molecule-sized graphs the
cost is the number of array operations, not the flops. This module computes the same
eigenvector PE as :mod:`multipos.graph.dense` for one graph with two-dimensional arrays and
as few calls as possible, step for step the same IEEE operations in the same order
(weights summed in edge order, ``cumsum`` degrees, the same element-wise Laplacian, the same
solver on the same matrix: ``numpy.linalg.eigh`` for a real one,
:func:`~multipos.graph.small_kernels.hermitian_eigh` for a complex one; the same selection
and sign / phase rule), so the
bits equal those of the batched path; ``tests/graph/test_determinism.py`` holds that.
The component count that decides how many pairs ``trivial="drop"`` removes is an integer,
computed exactly either way (see :func:`_eigenpairs`). Graphs above 96 nodes go to
:func:`~multipos.graph.medium.medium_eigenpairs`, as on the batched path. It returns ``None``
for the cases it leaves to the batched path (no node, ``trivial="keep"`` of the real
Laplacian, ``symmetrize="none"`` up to 96 nodes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from multipos.graph.eigensolvers import TIE_TOL, Eigenpairs
from multipos.graph.medium import FULL_EIGH_MAX_NODES, medium_eigenpairs
from multipos.graph.small_kernels import hermitian_eigh
from multipos.graph.threads import blas_single_threaded
from multipos.graph.union import StackedGraphs, check_degrees

__all__ = ["small_graph_eigenpairs", "unweighted_laplacian_pe", "unweighted_magnetic_pe"]

_ARANGE = np.arange(max(FULL_EIGH_MAX_NODES, 64))


def _canonical(vecs: np.ndarray, k: int, full: bool) -> np.ndarray:
    """:func:`~multipos.graph.eigensolvers.canonical_phase` on one ``(n, K)`` array."""
    cols = np.arange(k)
    if not np.iscomplexobj(vecs):
        mag = np.abs(vecs)
        anchor = (mag >= mag.max(axis=0) - TIE_TOL).argmax(axis=0)
        out: np.ndarray = vecs * np.where(vecs[anchor, cols] < 0, -1.0, 1.0)
        return out
    re, im = vecs.real, vecs.imag
    mag = np.sqrt(re * re + im * im)
    anchor = (mag >= mag.max(axis=0) - TIE_TOL).argmax(axis=0)
    a_re, a_im, a_abs = re[anchor, cols], im[anchor, cols], mag[anchor, cols]
    if full:  # every column is a unit eigenvector: the same bits as the general branch
        u_re, u_im = a_re / a_abs, a_im / a_abs
    else:
        nonzero = a_abs > 0
        safe = np.where(nonzero, a_abs, 1.0)
        u_re = np.where(nonzero, a_re / safe, 1.0)
        u_im = np.where(nonzero, a_im / safe, 0.0)
    out = np.empty_like(vecs)
    out.real = re * u_re + im * u_im
    out.imag = im * u_re - re * u_im
    return out


def small_graph_eigenpairs(
    graphs: StackedGraphs,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    qs: Sequence[float | None],
    q_mode: str,
    *,
    krylov: bool = False,
) -> list[Eigenpairs] | None:
    """One :class:`Eigenpairs` per entry of ``qs`` for the single graph of ``graphs``, or
    ``None`` when the batched dense path must take it (no node, ``symmetrize="none"`` or
    ``trivial="keep"`` of the real Laplacian up to 96 nodes). Above 96 nodes it is
    :func:`~multipos.graph.medium.medium_eigenpairs`, as on the batched path.

    Raises:
        ValueError: If a weighted degree overflows float64.
    """
    n = int(graphs.sizes[0])
    drop = trivial == "drop"
    if n > FULL_EIGH_MAX_NODES:
        with blas_single_threaded():
            return medium_eigenpairs(
                graphs.row,
                graphs.col,
                graphs.weight,
                n,
                k,
                normalization,
                symmetrize,
                trivial,
                qs,
                q_mode,
                krylov=krylov,
            )
    if n == 0 or symmetrize == "none":
        return None
    if not drop and any(q is None for q in qs):
        return None
    if graphs.weight.size and graphs.weight.max() > 1e300:  # may overflow: raise, no warning
        with np.errstate(over="ignore"):
            return _eigenpairs(graphs, n, k, normalization, symmetrize, trivial, qs, q_mode)
    return _eigenpairs(graphs, n, k, normalization, symmetrize, trivial, qs, q_mode)


def _num_components(a_sym: np.ndarray, n: int, num_iso: int) -> int:
    """Connected components with an edge: reachability by repeated squaring of
    ``(A + I) > 0`` (exact 0/1 arithmetic). Entries only grow (the diagonal is 1), so an
    unchanged sum means a fixed point."""
    reach = (a_sym > 0).astype(np.float64)
    reach.flat[:: n + 1] = 1.0
    total = reach.sum()
    while True:
        nxt = reach @ reach
        np.minimum(nxt, 1.0, out=nxt)
        grown = nxt.sum()
        if grown == total:
            break
        reach, total = nxt, grown
    roots = reach.argmax(axis=1) == _ARANGE[:n]  # the lowest node of its component
    return int(np.count_nonzero(roots)) - num_iso  # isolated nodes are their own roots


def _eigenpairs(
    graphs: StackedGraphs,
    n: int,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    qs: Sequence[float | None],
    q_mode: str,
) -> list[Eigenpairs]:
    drop = trivial == "drop"
    # Duplicates add in edge order: bincount adds sequentially from 0.0, as add.at does.
    a = np.bincount(graphs.row * n + graphs.col, weights=graphs.weight, minlength=n * n)
    a = a.reshape(n, n)
    a.flat[:: n + 1] = 0.0  # self-loops are dropped
    a_sym = np.maximum(a, a.T) if symmetrize == "union" else (a + a.T) * 0.5
    deg = np.cumsum(a_sym, axis=1)[:, -1]  # a sum in row order
    check_degrees(deg)
    isolated = deg <= 0.0
    num_iso = int(np.count_nonzero(isolated))
    # The number c of components is needed only to drop their c lowest pairs. For a 0/1
    # adjacency (the common unweighted case) it is the number of zero eigenvalues of the real
    # Laplacian, read from the spectrum computed anyway: a connected graph of at most 96
    # nodes has lambda_2 >= 1 / (diameter * volume) > 1e-6 (Chung, "Spectral Graph Theory",
    # Lemma 1.9) or >= 4 / (n * diameter) for D - A (Mohar), against rounding errors below
    # 1e-13, so the count is exact. Otherwise it comes from exact reachability.
    c = -1
    if drop and not (qs == [None] and np.count_nonzero(a_sym == 1.0) == np.count_nonzero(a_sym)):
        c = _num_components(a_sym, n, num_iso)
    if num_iso:
        dinv = np.where(isolated, 0.0, 1.0 / np.sqrt(np.where(isolated, 1.0, deg)))
    else:  # the same bits as the line above when no node is isolated
        dinv = 1.0 / np.sqrt(deg)
    out = []
    for q in qs:
        w_re, w_im = a_sym, None
        if q is not None:
            pattern = a > 0
            if symmetrize == "union":  # S = [a_uv > 0] - [a_vu > 0]: non-zero on one-way pairs
                ri, ci = np.nonzero(pattern != pattern.T)
                one_way = ri.size // 2
                skew_rc = np.where(pattern[ri, ci], 1.0, -1.0)
            else:
                skew = a - a.T
                one_way = int(np.count_nonzero(pattern & ~pattern.T))
                ri, ci = np.nonzero(skew)
                skew_rc = skew[ri, ci]
            q_eff = q
            if q_mode == "relative":
                q_eff = q / float(max(1, min(one_way, n)))
            theta = (2.0 * math.pi * q_eff) * skew_rc
            w_re = a_sym.copy()
            w_im = np.zeros((n, n))
            w_re[ri, ci] = a_sym[ri, ci] * np.cos(theta)
            w_im[ri, ci] = a_sym[ri, ci] * np.sin(theta)
        if normalization == "sym":
            d_col = dinv[:, None]
            lap = -(d_col * w_re) * dinv
            diag: np.ndarray | float = np.where(isolated, 3.0, 1.0) if num_iso else 1.0
            if w_im is not None:
                lap_im = -(d_col * w_im) * dinv
        else:
            lap = -w_re
            diag = np.where(isolated, 2.0 * deg.max() + 1.0, deg)
            if w_im is not None:
                lap_im = -w_im
        lap.flat[:: n + 1] = diag
        if w_im is not None:
            full = np.empty((n, n), dtype=np.complex128)
            full.real, full.imag = lap, lap_im
            lap = full
        if np.iscomplexobj(lap):  # c is known here (exact reachability)
            vals, vecs = hermitian_eigh(lap, (c if drop else 0) + k)
        else:
            vals, vecs = np.linalg.eigh(lap)
        if c < 0 and drop:  # the real Laplacian of a 0/1 adjacency: see above
            c = int(np.count_nonzero(vals < 1e-9))
        offset = c if drop else 0
        kv = max(0, min(k, n - num_iso - offset))
        if kv == k:
            sel = vecs[:, offset : offset + k]
        else:
            sel = np.zeros((n, k), dtype=vecs.dtype)
            sel[:, :kv] = vecs[:, offset : offset + kv]
        if num_iso:
            sel = np.where(isolated[:, None], 0.0, sel)
        values = np.zeros(k)
        values[:kv] = vals[offset : offset + kv]
        no_zero_column = kv == k and not num_iso
        out.append(Eigenpairs(_canonical(sel, k, no_zero_column) + 0.0, values, np.arange(k) < kv))
    return out


def unweighted_laplacian_pe(
    edge_index: np.ndarray, n: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The default Laplacian PE of one unweighted graph of ``1..96`` nodes (symmetric
    normalisation, union symmetrisation, every component's trivial pair dropped) as
    ``(vectors (n, K) float64, values (K,), mask (K,))``, or ``None`` where :func:`_eigenpairs` must
    decide (an index out of range, a repeated edge, another size).

    The per-graph path of a PyG ``pre_transform`` for molecule-sized graphs, where the cost
    is the number of array operations: edge counts are integers, so every sum is exact in any
    order and one reduction replaces the checks the weighted path needs; every floating-point
    step is :func:`_eigenpairs`'s, in the same order, so the bits are equal
    (``tests/graph/test_determinism.py``).
    """
    graph = _integer_graph(edge_index, n)
    if graph is None:
        return None
    _, a_sym, isolated, num_iso, dinv = graph
    if a_sym.max(initial=0) > 1:  # a repeated edge: the weighted path counts components
        return None
    lap = -(dinv[:, None] * a_sym) * dinv
    lap.flat[:: n + 1] = np.where(isolated, 3.0, 1.0) if num_iso else 1.0
    vals, vecs = np.linalg.eigh(lap)
    # A 0/1 adjacency: the components are the zero eigenvalues (see _eigenpairs).
    offset = int(np.count_nonzero(vals < 1e-9))
    kv = max(0, min(k, n - num_iso - offset))
    if kv == k:
        sel = vecs[:, offset : offset + k]
    else:
        sel = np.zeros((n, k))
        sel[:, :kv] = vecs[:, offset : offset + kv]
    if num_iso:
        sel = np.where(isolated[:, None], 0.0, sel)
    values = np.zeros(k)
    values[:kv] = vals[offset : offset + kv]
    return _canonical(sel, k, False) + 0.0, values, np.arange(k) < kv


def unweighted_magnetic_pe(
    edge_index: np.ndarray, n: int, k: int, q: float, relative: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The default magnetic Laplacian PE of one unweighted graph of ``1..96`` nodes (one
    potential ``q``, symmetric normalisation, union symmetrisation, null space kept) as
    ``(vectors (n, K) complex128, values (K,) float64, mask (K,))``, or ``None`` where
    :func:`_eigenpairs` must decide (an index out of range, another size). As
    :func:`unweighted_laplacian_pe`: integer edge counts, one range check, and every
    floating-point step of :func:`_eigenpairs` in the same order, so the bits are equal.
    """
    graph = _integer_graph(edge_index, n)
    if graph is None:
        return None
    a, a_sym, isolated, num_iso, dinv = graph
    pattern = a > 0
    ri, ci = np.nonzero(pattern != pattern.T)  # one-way pairs, both orientations
    q_eff = q / float(max(1, min(ri.size // 2, n))) if relative else q
    theta = (2.0 * math.pi * q_eff) * np.where(pattern[ri, ci], 1.0, -1.0)
    w_re = a_sym.astype(np.float64)
    w_im = np.zeros((n, n))
    w_re[ri, ci] = a_sym[ri, ci] * np.cos(theta)
    w_im[ri, ci] = a_sym[ri, ci] * np.sin(theta)
    d_col = dinv[:, None]
    lap = np.empty((n, n), dtype=np.complex128)
    lap.real, lap.imag = -(d_col * w_re) * dinv, -(d_col * w_im) * dinv
    lap.real.flat[:: n + 1] = np.where(isolated, 3.0, 1.0) if num_iso else 1.0
    vals, vecs = hermitian_eigh(lap, k)
    kv = max(0, min(k, n - num_iso))
    if kv == k:
        sel = vecs[:, :k]
    else:
        sel = np.zeros((n, k), dtype=vecs.dtype)
        sel[:, :kv] = vecs[:, :kv]
    if num_iso:
        sel = np.where(isolated[:, None], 0.0, sel)
    values = np.zeros(k)
    values[:kv] = vals[:kv]
    vectors = _canonical(sel, k, kv == k and not num_iso) + 0.0
    return vectors, values, np.arange(k) < kv


def _integer_graph(
    edge_index: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray] | None:
    """``(a, a_sym, isolated, num_isolated, D^{-1/2})`` of an unweighted graph of ``1..96``
    nodes with int64 ids in range (else ``None``): edge counts ``a`` (self-loops dropped), the
    union ``max(a, a^T)``, and the degree terms of :func:`_eigenpairs`, bit for bit (integer
    degrees are exact in any order, as the cumsum there)."""
    if not 0 < n <= FULL_EIGH_MAX_NODES or edge_index.dtype != np.int64:
        return None
    # One pass over the ids: a negative id read as unsigned is above any n.
    if edge_index.size and edge_index.view(np.uint64).max() >= n:
        return None
    a = np.bincount(edge_index[0] * n + edge_index[1], minlength=n * n).reshape(n, n)
    a.flat[:: n + 1] = 0  # self-loops are dropped
    a_sym = np.maximum(a, a.T)
    deg = a_sym.sum(axis=1).astype(np.float64)
    isolated = deg == 0.0
    num_iso = int(np.count_nonzero(isolated))
    if num_iso:
        dinv = np.where(isolated, 0.0, 1.0 / np.sqrt(np.where(isolated, 1.0, deg)))
    else:
        dinv = 1.0 / np.sqrt(deg)
    return a, a_sym, isolated, num_iso, dinv
