r"""One graph of more than :data:`FULL_EIGH_MAX_NODES` nodes on the dense path: built from its
edge list, solved by LAPACK's subset solver.

Above about 100 nodes the eigensolver dominates and batching graphs gains nothing, so the
per-graph transform and the batched functions both call :func:`medium_eigenpairs` on each such
graph: the same function on the same graph, hence the same bits. It builds the (magnetic)
Laplacian of "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049),
Eq. (2)-(3),

.. math::
    L^{(q)} = I - D_s^{-1/2} (A_s \odot e^{i 2 \pi q_{\mathrm{eff}} S}) D_s^{-1/2}

(``q = None``: the ordinary Laplacian), entry by entry on the non-zeros of ``A_s`` only
(element-wise IEEE arithmetic, degrees summed in row order by ``bincount``), directly into a
64-byte aligned column-major buffer, and computes only the kept eigenpairs with ``?syevr`` /
``?heevr`` (``scipy.linalg.eigh(subset_by_index=...)``): for 100-400 nodes it is 2-3x faster
than all pairs. With ``solver="auto"`` the magnetic Laplacian is first handed, as a sparse
matrix, to :mod:`multipos.graph.shift_invert` (shift-invert Lanczos, about 2x faster again at
these sizes), which answers only when its residual and inertia checks prove it found every
pair below the cut; otherwise the dense subset solver runs. Connected components come from
``scipy.sparse.csgraph`` (integer-exact).
Call it with every BLAS held at one thread (:func:`~multipos.graph.threads.blas_single_threaded`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from multipos.graph.eigensolvers import Components, Eigenpairs, select_columns
from multipos.graph.shift_invert import hermitian_csc, lowest_eigenpairs
from multipos.graph.union import check_degrees, directed_error

__all__ = ["FULL_EIGH_MAX_NODES", "medium_eigenpairs"]

#: Up to this many nodes every eigenpair is computed (``torch.linalg.eigh``, graphs batched
#: by size); above, each graph goes through :func:`medium_eigenpairs`, which computes only the
#: kept ones (``?syevr`` / ``?heevr``, faster from about 100 nodes).
FULL_EIGH_MAX_NODES = 96


def _aligned_fortran(n: int, dtype: type) -> np.ndarray:
    """An ``(n, n)`` column-major array starting on a 64-byte boundary, filled with ``-0.0``.

    ``-0.0`` is what the element-wise formula gives on a zero weight (``-(d_u 0) d_v``), so
    entries never written hold the same bits as if they had been computed.
    """
    item = np.dtype(dtype).itemsize
    raw = np.empty(n * n * item + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    out: np.ndarray = raw[start : start + n * n * item].view(dtype).reshape(n, n, order="F")
    out.fill(-0.0)
    return out


def _components(
    r: np.ndarray, c: np.ndarray, deg: np.ndarray, normalization: str, null_vectors: bool
) -> Components:
    """Components of one graph from the non-zeros ``(r, c)`` (row-major) of ``A_s``."""
    n = deg.size
    isolated = deg <= 0.0
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    pattern = sp.csr_matrix((np.ones(r.size), c, indptr), shape=(n, n))
    ncomp, labels = csgraph.connected_components(pattern, directed=False)
    lowest = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(lowest, labels, np.arange(n))
    root = lowest[labels]  # lowest node of each node's component
    is_root = (root == np.arange(n)) & ~isolated
    num_comp = np.array([int(is_root.sum())])
    num_iso = np.array([int(isolated.sum())])
    if not null_vectors:
        empty = np.zeros((1, 0))
        return Components(isolated[None], empty, empty, num_comp, num_iso)
    ranks = np.cumsum(is_root) - 1
    comp_rank = np.where(isolated, -1, ranks[root])
    # Canonical null vector of each component: D^{1/2} 1_C (sym) or 1_C (none), unit norm;
    # bincount adds in node order.
    mass = np.where(isolated, 0.0, deg if normalization == "sym" else 1.0)
    norm2 = np.bincount(root, weights=mass, minlength=n)
    comp_value = np.sqrt(mass) / np.sqrt(np.maximum(norm2[root], 1e-300))
    return Components(isolated[None], comp_rank[None], comp_value[None], num_comp, num_iso)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``values`` at ``keys`` in ``sorted_keys``, 0.0 where a key is absent."""
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == keys, values[pos], 0.0)


def _adjacency(
    row: np.ndarray, col: np.ndarray, weight: np.ndarray, n: int, symmetrize: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The non-zeros ``(r, c)`` of the symmetrised adjacency ``A_s`` in row-major order, their
    weights, and ``a[r, c]``, ``a[c, r]`` of the directed one, from the edge list alone (no
    ``n x n`` array): the same values, bit for bit, as
    :func:`~multipos.graph.union.symmetrized_dense` on the dense matrix.

    Raises:
        ValueError: If ``symmetrize="none"`` and the graph is directed.
    """
    keep = row != col  # self-loops are dropped
    keys = row[keep] * n + col[keep]
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.empty(ordered.size, dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    uniq = ordered[first]
    inverse = np.empty(keys.size, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    # Duplicates add in edge order (bincount adds sequentially from 0.0).
    a_val = np.bincount(inverse, weights=weight[keep], minlength=uniq.size)
    if uniq.size == 0:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty
    src, dst = np.divmod(uniq, n)
    both = np.sort(np.concatenate([uniq, dst * n + src]))
    pairs = both[np.concatenate([[True], both[1:] != both[:-1]])]  # sorted: row-major
    r, c = np.divmod(pairs, n)
    a_rc, a_cr = _lookup(uniq, a_val, pairs), _lookup(uniq, a_val, c * n + r)
    if symmetrize == "union":
        a_sym = np.maximum(a_rc, a_cr)
    else:
        if symmetrize == "none":
            scale = max(1.0, float(np.abs(a_val).max()))
            if (np.abs(a_rc - a_cr) > 1e-12 * scale).any():
                raise directed_error()
        a_sym = (a_rc + a_cr) * 0.5
    nz = a_sym != 0.0
    return r[nz], c[nz], a_sym[nz], a_rc[nz], a_cr[nz]


@np.errstate(over="ignore")  # an overflowing degree raises below
def medium_eigenpairs(
    row: np.ndarray,
    col: np.ndarray,
    weight: np.ndarray,
    n: int,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    qs: Sequence[float | None],
    q_mode: str,
    *,
    krylov: bool = False,
) -> list[Eigenpairs]:
    """One :class:`Eigenpairs` per entry of ``qs`` for one graph of ``n`` nodes (edges
    ``row -> col`` with ``weight``, already validated), float64 / complex128.

    With ``krylov`` (``solver="auto"``) the magnetic Laplacian is first solved by
    :func:`~multipos.graph.shift_invert.lowest_eigenpairs` (shift-invert Lanczos, checked by
    inertia); when its checks refuse (repeated eigenvalues, no convergence) the dense subset
    solver runs, as it always does for the real Laplacian and for ``solver="dense"``.

    Raises:
        ValueError: If ``symmetrize="none"`` meets a directed graph or a weighted degree
            overflows float64.
    """
    r, c, w_sym, a_rc, a_cr = _adjacency(row, col, weight, n, symmetrize)
    deg = np.bincount(r, weights=w_sym, minlength=n)  # a sum in row order
    check_degrees(deg)
    null = trivial == "keep" and any(q is None for q in qs)
    comps = _components(r, c, deg, normalization, null)
    isolated = comps.isolated[0]
    drop = trivial == "drop"
    need = min(n, k + (int(comps.num_comp[0]) if drop else 0))
    if normalization == "sym":
        dinv = np.where(isolated, 0.0, 1.0 / np.sqrt(np.where(isolated, 1.0, deg)))
        diag = np.where(isolated, 3.0, 1.0)  # the spectrum lies in [0, 2]
        d_r, d_c = dinv[r], dinv[c]
    else:
        diag = np.where(isolated, 2.0 * deg.max(initial=0.0) + 1.0, deg)  # above [0, 2 max deg]
        d_r = d_c = np.ones(0)  # unused
    skew: np.ndarray | None = None
    one_way = 0
    out = []
    for q in qs:
        w_re, w_im = w_sym, None
        if q is not None:
            if skew is None:
                one_way = int(np.count_nonzero((a_rc > 0) & ~(a_cr > 0)))
                if symmetrize == "union":
                    skew = (a_rc > 0).astype(np.float64) - (a_cr > 0)
                else:
                    skew = a_rc - a_cr
            q_eff = q
            if q_mode == "relative":
                q_eff = q / float(max(1, min(one_way, n)))
            theta = (2.0 * math.pi * q_eff) * skew
            w_re, w_im = w_sym * np.cos(theta), w_sym * np.sin(theta)
        entries = _off_diagonal(d_r, d_c, w_re, w_im, normalization)
        solved = None
        if w_im is not None and krylov:
            scale = float(diag.max(initial=1.0))
            solved = lowest_eigenpairs(hermitian_csc(r, c, entries, diag), need, scale)
        if solved is None:
            solved = _dense(r, c, entries, diag, need)
        vals, vecs = solved
        picked = select_columns(comps, vals[None], vecs[None], k, trivial, q is None)
        out.append(Eigenpairs(picked.vectors[0], picked.values[0], picked.mask[0]))
    return out


def _off_diagonal(
    d_r: np.ndarray,
    d_c: np.ndarray,
    w_re: np.ndarray,
    w_im: np.ndarray | None,
    normalization: str,
) -> np.ndarray:
    """The Laplacian's entries at the non-zeros of ``A_s`` (float64, or complex128 with a
    phase), element-wise: ``-(d_u w) d_v`` (``"sym"``) or ``-w`` (``"none"``)."""
    if w_im is None:
        real: np.ndarray = -(d_r * w_re) * d_c if normalization == "sym" else -w_re
        return real
    out = np.empty(w_re.size, dtype=np.complex128)
    if normalization == "sym":
        out.real, out.imag = -(d_r * w_re) * d_c, -(d_r * w_im) * d_c
    else:
        out.real, out.imag = -w_re, -w_im
    return out


def _dense(
    r: np.ndarray, c: np.ndarray, entries: np.ndarray, diag: np.ndarray, need: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``need`` lowest pairs by ``?syevr`` / ``?heevr`` on the dense Laplacian."""
    n = diag.size
    lap = _aligned_fortran(n, entries.dtype.type)
    lap[r, c] = entries
    lap.real[np.arange(n), np.arange(n)] = diag
    vals, vecs = scipy.linalg.eigh(
        lap,
        subset_by_index=[0, max(need - 1, 0)],
        driver="evr",
        check_finite=False,
        overwrite_a=True,
    )
    return vals, vecs
