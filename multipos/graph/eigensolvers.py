r"""Eigensolvers of the (magnetic) Laplacian PEs and their sign / phase convention.

Each graph of a :class:`~multipos.graph.union.GraphUnion` is solved either in dense batches
grouped by node count (``torch.linalg.eigh``; LAPACK's subset solver for larger dense
problems) or one by one with a sparse solver (ARPACK / LOBPCG from scipy, fixed start
vectors). All math is float64 (complex128 for the magnetic Laplacian).

Conventions (documented in the public functions):

* ``trivial="drop"`` removes the ``c`` lowest eigenpairs of a graph with ``c`` non-isolated
  connected components (for the ordinary Laplacian: exactly its null space); with
  ``canonical_null`` the null space is replaced by the canonical component vectors;
* fewer than ``K`` available eigenpairs are padded with zero columns, ``mask`` false;
* sign / phase: each eigenvector is multiplied by the unit scalar that makes its anchor entry
  real and positive, the anchor being its entry of largest magnitude (ties within
  :data:`TIE_TOL` broken by the lowest node index); see :func:`canonicalize_phase`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from multipos.graph.union import GraphUnion

__all__ = [
    "BATCHED_MAX_NODES",
    "DENSE_MAX_NODES",
    "TIE_TOL",
    "Eigenpairs",
    "canonicalize_phase",
    "solve_eigenpairs",
]

#: ``solver="auto"`` uses the dense solver up to this many nodes and ARPACK above (a chosen
#: threshold; no script here measures the crossover).
DENSE_MAX_NODES = 2000
#: Graphs up to this size go through batched ``torch.linalg.eigh``; larger dense problems use
#: LAPACK's subset solver (``scipy.linalg.eigh(subset_by_index=...)``); a chosen threshold.
BATCHED_MAX_NODES = 96
#: Absolute tolerance (eigenvectors have unit norm) under which two magnitudes tie.
TIE_TOL = 1e-8


def canonicalize_phase(vecs: Tensor) -> Tensor:
    r"""Sign / phase convention on ``(B, N, K)`` eigenvectors (real or complex).

    .. math::
        v_{:, j} \leftarrow v_{:, j} \, \bar v_{a j} / |v_{a j}|, \qquad
        a = \min \{u : |v_{u j}| \ge \max_w |v_{w j}| - \epsilon\}, \ \epsilon = 10^{-8}

    so the anchor entry :math:`v_{a j}` becomes real and positive (a sign flip for real
    vectors). The anchor is chosen by magnitude, so the convention commutes with complex
    conjugation and with node permutations that keep the anchor unique. Zero columns stay
    zero.
    """
    if vecs.shape[1] == 0:
        return vecs
    mag = vecs.abs()
    cand = mag >= mag.amax(dim=1, keepdim=True) - TIE_TOL
    anchor = cand.to(torch.uint8).argmax(dim=1, keepdim=True)  # first True
    a = vecs.gather(1, anchor)
    a_abs = a.abs()
    if vecs.is_complex():
        unit = torch.where(a_abs > 0, a / a_abs.clamp_min(1e-300), torch.ones_like(a))
        return vecs * unit.conj()
    return vecs * torch.where(a < 0, -1.0, 1.0).to(vecs.dtype)


class Eigenpairs(NamedTuple):
    """The kept eigenpairs of one graph, padded to ``K`` columns."""

    vectors: Tensor  # (N_g, K) float64 or complex128
    values: Tensor  # (K,) float64
    mask: Tensor  # (K,) bool


def _dense_groups(
    u: GraphUnion, lap: sp.csr_matrix, graph_ids: np.ndarray
) -> list[tuple[int, np.ndarray, Tensor]]:
    """Dense ``(B, n, n)`` blocks of ``lap`` for the given graphs, grouped by node count."""
    if graph_ids.size == 0:
        return []
    coo = lap.tocoo()
    eg = u.graph_of[coo.row]
    wanted = np.zeros(u.sizes.size, dtype=bool)
    wanted[graph_ids] = True
    keep = wanted[eg]
    r, c, v, eg = coo.row[keep], coo.col[keep], coo.data[keep], eg[keep]
    sizes = u.sizes[graph_ids]
    order_g = np.argsort(sizes, kind="stable")
    g_sorted = graph_ids[order_g]
    s_sorted = sizes[order_g]
    bounds = np.flatnonzero(np.diff(s_sorted)) + 1
    pos = np.zeros(u.sizes.size, dtype=np.int64)
    entry_size = u.sizes[eg]
    order_e = np.argsort(entry_size, kind="stable")
    r, c, v, eg, entry_size = r[order_e], c[order_e], v[order_e], eg[order_e], entry_size[order_e]
    out = []
    for gs in np.split(g_sorted, bounds):
        n = int(u.sizes[gs[0]])
        pos[gs] = np.arange(gs.size)
        lo, hi = np.searchsorted(entry_size, [n, n + 1])
        dense = np.zeros((gs.size, n, n), dtype=lap.dtype)
        ge = eg[lo:hi]
        base = u.ptr[ge]
        dense[pos[ge], r[lo:hi] - base, c[lo:hi] - base] = v[lo:hi]
        out.append((n, gs, torch.from_numpy(dense)))
    return out


def _select(
    u: GraphUnion,
    gs: np.ndarray,
    evals: Tensor,
    evecs: Tensor,
    k: int,
    trivial: str,
    canonical_null: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick ``k`` columns per graph from ascending ``(B, n, m)`` eigenpairs, pad and mask.

    Returns ``(vectors (B, n, K), values (B, K), mask (B, K))``.
    """
    b, n, m = evecs.shape
    g = torch.from_numpy(gs)
    c = torch.from_numpy(u.num_comp)[g]  # (B,)
    n_real = torch.from_numpy(u.sizes - u.num_isolated)[g]
    drop = trivial == "drop"
    offset = c if drop else torch.zeros_like(c)
    avail = n_real - offset
    j = torch.arange(k)
    idx = (offset[:, None] + j[None, :]).clamp_max(max(m - 1, 0))  # (B, K)
    valid = j[None, :] < avail[:, None]  # (B, K)
    if m == 0:
        vecs = evecs.new_zeros(b, n, k)
        vals = evals.new_zeros(b, k)
    else:
        vecs = evecs.gather(2, idx[:, None, :].expand(b, n, k))
        vals = evals.gather(1, idx)
    if canonical_null and not drop and n:
        # Replace the (degenerate) null space by the component vectors, ordered by lowest node.
        nodes = u.ptr[gs][:, None] + np.arange(n)[None, :]  # (B, n)
        rank = torch.from_numpy(u.comp_rank[nodes])  # (B, n)
        value = torch.from_numpy(u.comp_value[nodes]).to(vecs.dtype)
        null = (rank[:, :, None] == j[None, None, :]).to(vecs.dtype) * value[:, :, None]
        is_null = j[None, :] < c[:, None]  # (B, K)
        vecs = torch.where(is_null[:, None, :], null, vecs)
        vals = torch.where(is_null, torch.zeros_like(vals), vals)
    if n:
        nodes = u.ptr[gs][:, None] + np.arange(n)[None, :]  # (B, n)
        real_node = torch.from_numpy(~u.isolated[nodes])  # isolated rows are exactly zero
        keep = valid[:, None, :] & real_node[:, :, None]
        vecs = vecs * keep.to(vecs.dtype)
    vecs = canonicalize_phase(vecs) + 0.0  # + 0.0 turns -0.0 into 0.0
    vals = vals * valid.to(vals.dtype)
    return vecs, vals, valid


class _UseDense(Exception):
    """Raised when a sparse solver cannot handle a problem this small."""


def _sparse_solve(
    u: GraphUnion,
    lap: sp.csr_matrix,
    gid: int,
    k: int,
    trivial: str,
    solver: str,
    tol: float,
    shift: float,
    deflate_null: bool,
) -> tuple[Tensor, Tensor]:
    """Lowest eigenpairs of one graph with ARPACK or LOBPCG, ascending, ``(n, m)``.

    For the real Laplacian the null space is known exactly and is deflated (moved to
    ``shift``); the returned pairs then start after it, and the caller treats them as if the
    null columns had been computed. Otherwise the ``c`` lowest pairs are computed and kept.
    """
    lo, hi = int(u.ptr[gid]), int(u.ptr[gid + 1])
    n = hi - lo
    block = lap[lo:hi, lo:hi].tocsr()
    c = int(u.num_comp[gid])
    n_real = n - int(u.num_isolated[gid])
    if deflate_null:
        m = min(k, n_real - c)  # pairs above the null space
        ranks = u.comp_rank[lo:hi]
        real = ranks >= 0
        null = sp.csr_matrix(
            (u.comp_value[lo:hi][real], (np.flatnonzero(real), ranks[real])), shape=(n, max(c, 1))
        )
    else:
        m = min(k + (c if trivial == "drop" else 0), n_real)
        null = None
    dtype = block.dtype
    if m <= 0:
        return torch.zeros(0, dtype=torch.float64), torch.from_numpy(np.zeros((n, 0), dtype=dtype))
    if deflate_null and null is not None:
        nt = null.T.tocsr()

        def matvec(x: np.ndarray) -> np.ndarray:
            return np.asarray(block @ x + shift * (null @ (nt @ x)))

        op: spla.LinearOperator | sp.csr_matrix = spla.LinearOperator(
            (n, n), matvec=matvec, matmat=matvec, dtype=dtype
        )
    else:
        op = block
    rng = np.random.default_rng(0)  # fixed start: same graph -> same result, in any process
    if solver == "arpack":
        if m >= n - 1:
            raise _UseDense
        v0 = rng.standard_normal(n)
        if np.iscomplexobj(np.zeros(0, dtype=dtype)):
            v0 = v0 + 1j * rng.standard_normal(n)
        ncv = min(n, max(4 * m + 1, 40))
        vals, vecs = spla.eigsh(op, k=m, which="SA", v0=v0, tol=tol, ncv=ncv, maxiter=n * 10)
    else:
        if 5 * m >= n:
            raise _UseDense
        x0 = rng.standard_normal((n, m))
        if np.iscomplexobj(np.zeros(0, dtype=dtype)):
            x0 = x0 + 1j * rng.standard_normal((n, m))
        vals, vecs = spla.lobpcg(
            op,
            x0,
            largest=False,
            tol=max(tol, 1e-12),
            maxiter=2000,
        )
    order = np.argsort(vals, kind="stable")
    return torch.from_numpy(np.ascontiguousarray(vals[order].real)), torch.from_numpy(
        np.ascontiguousarray(vecs[:, order])
    )


def _small_eighs(blocks: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Batched ``eigh`` of groups of small matrices, groups spread over the intra-op threads.

    LAPACK gains nothing from several threads on one small matrix, and on a loaded machine
    their spin-waits cost up to 1000x (measured: 0.06 ms vs 126 ms for one 30 x 30 matrix with
    2 threads on 2 busy cores). So each call runs single-threaded (``torch.set_num_threads(1)``
    for the duration, restored afterwards) and the groups run concurrently on up to
    ``torch.get_num_threads()`` Python threads (``eigh`` releases the GIL). The result does not
    depend on the number of threads.
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(blocks))
    torch.set_num_threads(1)
    try:
        if workers <= 1:
            return [torch.linalg.eigh(b) for b in blocks]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(torch.linalg.eigh, blocks))
    finally:
        torch.set_num_threads(threads)


def solve_eigenpairs(
    u: GraphUnion,
    lap: sp.csr_matrix,
    k: int,
    trivial: str,
    solver: str,
    tol: float,
    canonical_null: bool,
    shift: float,
    dtype: torch.dtype | None = None,
) -> list[Eigenpairs]:
    """Eigen-PE of every graph of ``u``, float64 / complex128.

    ``lap`` must carry ``shift`` (above the spectrum) on the diagonal of isolated nodes; with
    ``canonical_null`` (real Laplacian) the sparse solvers deflate the null space to ``shift``.
    With ``dtype``, vectors are cast to it and eigenvalues to float32.
    """
    num_graphs = u.sizes.size
    results: list[Eigenpairs | None] = [None] * num_graphs
    if solver == "auto":
        sparse_ids = np.flatnonzero(u.sizes > DENSE_MAX_NODES)
        sparse_solver = "arpack"
    elif solver == "dense":
        sparse_ids = np.zeros(0, dtype=np.int64)
        sparse_solver = ""
    else:
        sparse_ids = np.flatnonzero(u.sizes > 0)
        sparse_solver = solver
    dense_ids = np.setdiff1d(np.arange(num_graphs), sparse_ids)

    def put(gs: np.ndarray, picked: tuple[Tensor, Tensor, Tensor]) -> None:
        if dtype is not None:
            picked = (picked[0].to(dtype), picked[1].to(torch.float32), picked[2])
        for gid, vecs, vals, mask in zip(gs.tolist(), *(t.unbind(0) for t in picked), strict=True):
            results[gid] = Eigenpairs(vecs, vals, mask)

    for gid in sparse_ids.tolist():
        try:
            vals, vecs = _sparse_solve(
                u, lap, gid, k, trivial, sparse_solver, tol, shift, deflate_null=canonical_null
            )
        except _UseDense:
            dense_ids = np.append(dense_ids, gid)
            continue
        if canonical_null:
            # Deflated: stand-in columns for the c null vectors (replaced or dropped next).
            c = int(u.num_comp[gid])
            vecs = torch.cat([torch.zeros(vecs.shape[0], c, dtype=vecs.dtype), vecs], dim=1)
            vals = torch.cat([torch.zeros(c, dtype=vals.dtype), vals])
        gs = np.asarray([gid])
        put(gs, _select(u, gs, vals[None], vecs[None], k, trivial, canonical_null))
    small = dense_ids[u.sizes[dense_ids] <= BATCHED_MAX_NODES]
    large = dense_ids[u.sizes[dense_ids] > BATCHED_MAX_NODES]
    groups = _dense_groups(u, lap, small)
    solved = _small_eighs([dense for _, _, dense in groups])
    for (_, gs, _), (evals, evecs) in zip(groups, solved, strict=True):
        put(gs, _select(u, gs, evals, evecs, k, trivial, canonical_null))
    for gid in large.tolist():
        lo, hi = int(u.ptr[gid]), int(u.ptr[gid + 1])
        block = lap[lo:hi, lo:hi].toarray()
        n = hi - lo
        need = k + (int(u.num_comp[gid]) if trivial == "drop" else 0)
        top = min(n, need) - 1
        evals_np, evecs_np = scipy.linalg.eigh(
            block, subset_by_index=[0, top], driver="evr", check_finite=False
        )
        gs = np.asarray([gid])
        picked = _select(
            u,
            gs,
            torch.from_numpy(evals_np)[None],
            torch.from_numpy(evecs_np)[None],
            k,
            trivial,
            canonical_null,
        )
        put(gs, picked)
    out = [r for r in results if r is not None]
    if len(out) != num_graphs:  # pragma: no cover - internal invariant
        raise RuntimeError("internal error: a graph was not solved")
    return out
