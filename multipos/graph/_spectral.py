r"""Shared machinery of the Laplacian and magnetic-Laplacian PEs (private).

Every public entry point (single graph or a list of graphs) goes through one path: the graphs
are stacked into one block-diagonal union, symmetrised, normalised and labelled by connected
component with vectorised sparse operations; then each graph is solved, either in dense
batches grouped by node count (``torch.linalg.eigh``) or one by one with a sparse solver
(ARPACK / LOBPCG from scipy). All math is float64 (complex128 for the magnetic Laplacian);
the results are cast to float32 once at the end.

Conventions implemented here (documented in the public functions):

* self-loops are dropped, duplicate edges add their weights, zero-weight edges are absent;
* an isolated node (no edge other than self-loops) is its own component with Laplacian
  ``0``; it never enters a solver and gets an all-zero row in every PE;
* ``trivial="drop"`` removes the ``c`` lowest eigenpairs of a graph with ``c`` non-isolated
  connected components (for the ordinary Laplacian: exactly its null space);
* sign / phase: each eigenvector is multiplied by the unit scalar that makes its anchor entry
  real and positive, the anchor being its entry of largest magnitude (ties within
  ``1e-8`` broken by the lowest node index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

Symmetrize = Literal["union", "mean", "none"]
Normalization = Literal["sym", "none"]
Trivial = Literal["drop", "keep"]
Solver = Literal["auto", "dense", "arpack", "lobpcg"]
QMode = Literal["absolute", "relative"]

SYMMETRIZE: tuple[str, ...] = ("union", "mean", "none")
NORMALIZATION: tuple[str, ...] = ("sym", "none")
TRIVIAL: tuple[str, ...] = ("drop", "keep")
SOLVERS: tuple[str, ...] = ("auto", "dense", "arpack", "lobpcg")
Q_MODES: tuple[str, ...] = ("absolute", "relative")

#: ``solver="auto"`` uses the dense solver up to this many nodes and ARPACK above (a chosen
#: threshold; no script here measures the crossover).
DENSE_MAX_NODES = 2000
#: Graphs up to this size go through batched ``torch.linalg.eigh``; larger dense problems use
#: LAPACK's subset solver (``scipy.linalg.eigh(subset_by_index=...)``); a chosen threshold.
BATCHED_MAX_NODES = 96
#: Absolute tolerance (eigenvectors have unit norm) under which two magnitudes tie.
TIE_TOL = 1e-8


class GraphArrays(NamedTuple):
    row: np.ndarray
    col: np.ndarray
    weight: np.ndarray
    num_nodes: int


def check_choice(name: str, value: object, options: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a positive int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be a positive int, got {k}")
    return k


def check_tol(tol: object) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a float, got {type(tol).__name__}")
    if not (0.0 <= float(tol) < 1.0):
        raise ValueError(f"tol must lie in [0, 1), got {tol}")
    return float(tol)


def graph_arrays(
    edge_index: Tensor, num_nodes: int | None, edge_weight: Tensor | None
) -> GraphArrays:
    """Validate one graph and return numpy ``(row, col, weight, num_nodes)``."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    ei = edge_index.detach().cpu().to(torch.int64).numpy()
    if num_nodes is None:
        num_nodes = int(ei.max()) + 1 if ei.size else 0
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(f"num_nodes must be an int, got {type(num_nodes).__name__}")
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(
            f"edge_index entries must lie in [0, num_nodes={num_nodes}); "
            f"got range [{ei.min()}, {ei.max()}]"
        )
    num_edges = ei.shape[1]
    if edge_weight is None:
        w = np.ones(num_edges, dtype=np.float64)
    else:
        if not isinstance(edge_weight, Tensor):
            raise TypeError(
                f"edge_weight must be a torch.Tensor or None, got {type(edge_weight).__name__}"
            )
        if edge_weight.shape != (num_edges,):
            raise ValueError(
                f"edge_weight must have shape (E,) = ({num_edges},), got {tuple(edge_weight.shape)}"
            )
        if edge_weight.is_complex() or edge_weight.dtype == torch.bool:
            raise TypeError(f"edge_weight must be real, got {edge_weight.dtype}")
        w = edge_weight.detach().cpu().to(torch.float64).numpy()
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("edge_weight must be finite and non-negative")
    return GraphArrays(ei[0], ei[1], w, num_nodes)


@dataclass
class Union:
    """Block-diagonal union of graphs, symmetrised, with component labels."""

    sizes: np.ndarray  # (G,)
    ptr: np.ndarray  # (G + 1,)
    graph_of: np.ndarray  # (N,)
    a_sym: sp.csr_matrix  # (N, N) symmetrised weights, no self-loops
    skew: sp.csr_matrix  # (N, N) antisymmetric direction matrix
    deg: np.ndarray  # (N,)
    isolated: np.ndarray  # (N,) bool
    comp_rank: np.ndarray  # (N,) rank of the node's component in its graph; -1 if isolated
    comp_value: np.ndarray  # (N,) entry of the canonical null vector of the node's component
    num_comp: np.ndarray  # (G,) number of non-isolated components
    num_isolated: np.ndarray  # (G,)
    one_way: np.ndarray  # (G,) number of node pairs joined in one direction only


class Stacked(NamedTuple):
    """Several validated graphs: local edge indices concatenated, with per-graph counts."""

    row: np.ndarray  # (E_total,) local node ids
    col: np.ndarray
    weight: np.ndarray
    sizes: np.ndarray  # (G,) nodes per graph
    counts: np.ndarray  # (G,) edges per graph


def stack(graphs: Sequence[GraphArrays]) -> Stacked:
    if not graphs:
        z = np.zeros(0, dtype=np.int64)
        return Stacked(z, z, np.zeros(0), z, z)
    return Stacked(
        np.concatenate([g.row for g in graphs]),
        np.concatenate([g.col for g in graphs]),
        np.concatenate([g.weight for g in graphs]),
        np.asarray([g.num_nodes for g in graphs], dtype=np.int64),
        np.asarray([g.row.size for g in graphs], dtype=np.int64),
    )


def build_union(graphs: Stacked, symmetrize: str, normalization: str = "sym") -> Union:
    sizes = graphs.sizes
    num_graphs = sizes.size
    ptr = np.zeros(num_graphs + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    n = int(ptr[-1])
    graph_of = np.repeat(np.arange(num_graphs), sizes)
    offs = np.repeat(ptr[:-1], graphs.counts)
    row = graphs.row + offs
    col = graphs.col + offs
    w = graphs.weight
    off_diag = row != col
    a = sp.csr_matrix((w[off_diag], (row[off_diag], col[off_diag])), shape=(n, n))
    a.sum_duplicates()
    a.eliminate_zeros()
    at = a.T.tocsr()
    pattern = a.copy()
    pattern.data[:] = 1.0
    pattern_t = pattern.T.tocsr()
    one_way_m = (pattern - pattern.multiply(pattern_t)).tocoo()
    one_way = np.bincount(graph_of[one_way_m.row], minlength=num_graphs).astype(np.int64)
    if symmetrize == "none":
        if (abs(a - at) > 1e-12 * max(1.0, float(abs(a).max()) if a.nnz else 1.0)).nnz:
            raise ValueError(
                "symmetrize='none' needs an undirected graph (every edge (u, v) with the same "
                "weight as (v, u)), but the graph is directed; pass symmetrize='union' or 'mean'"
            )
        a_sym = ((a + at) * 0.5).tocsr()
        skew = sp.csr_matrix((n, n))
    elif symmetrize == "union":
        a_sym = a.maximum(at).tocsr()
        skew = (pattern - pattern_t).tocsr()
    else:  # mean
        a_sym = ((a + at) * 0.5).tocsr()
        skew = (a - at).tocsr()
    skew.eliminate_zeros()
    a_sym.sort_indices()
    deg = np.asarray(a_sym.sum(axis=1)).ravel()
    isolated = deg <= 0.0
    num_isolated = np.bincount(graph_of[isolated], minlength=num_graphs).astype(np.int64)

    ncomp, labels = csgraph.connected_components(a_sym, directed=False)
    comp_min = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(comp_min, labels, np.arange(n))
    real_comps = np.unique(labels[~isolated])
    order = np.argsort(comp_min[real_comps])
    comps_sorted = real_comps[order]
    g_of_comp = graph_of[comp_min[comps_sorted]] if comps_sorted.size else np.zeros(0, np.int64)
    num_comp = np.bincount(g_of_comp, minlength=num_graphs).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(num_comp)[:-1]]).astype(np.int64)
    rank_of_label = np.full(ncomp, -1, dtype=np.int64)
    rank_of_label[comps_sorted] = np.arange(comps_sorted.size) - start[g_of_comp]
    comp_rank = rank_of_label[labels] if n else np.zeros(0, np.int64)
    comp_rank[isolated] = -1
    # Canonical null vector of each component: D^{1/2} 1_C (sym) or 1_C (none), unit norm.
    mass = deg if normalization == "sym" else (~isolated).astype(np.float64)
    norm2 = np.bincount(labels, weights=mass, minlength=ncomp) if n else np.zeros(0)
    comp_value = np.sqrt(mass) / np.sqrt(np.maximum(norm2[labels], 1e-300)) if n else mass
    comp_value[isolated] = 0.0
    return Union(
        sizes=sizes,
        ptr=ptr,
        graph_of=graph_of,
        a_sym=a_sym,
        skew=skew,
        deg=deg,
        isolated=isolated,
        comp_rank=comp_rank,
        comp_value=comp_value,
        num_comp=num_comp,
        num_isolated=num_isolated,
        one_way=one_way,
    )


def effective_q(u: Union, q: float, q_mode: str) -> np.ndarray:
    """Per-graph potential; relative mode divides by ``max(1, min(#one-way pairs, N))``."""
    if q_mode == "absolute":
        return np.full(u.sizes.shape, q, dtype=np.float64)
    denom: np.ndarray = np.maximum(1, np.minimum(u.one_way, u.sizes)).astype(np.float64)
    out: np.ndarray = q / denom
    return out


def operator(
    u: Union, normalization: str, q_eff: np.ndarray | None, isolated_diag: float
) -> sp.csr_matrix:
    """Sparse (magnetic) Laplacian of the union; isolated nodes get ``isolated_diag``.

    .. math::
        L^{(q)} = I - D_s^{-1/2} (A_s \\odot e^{i \\Theta}) D_s^{-1/2}, \\quad
        \\Theta = 2 \\pi q\\, S
    """
    w: sp.csr_matrix = u.a_sym
    if q_eff is not None and u.skew.nnz:
        rot = u.skew.tocoo()
        theta = 2.0 * math.pi * q_eff[u.graph_of[rot.row]] * rot.data
        phase_minus_one = sp.csr_matrix((np.expm1(1j * theta), (rot.row, rot.col)), shape=w.shape)
        w = (w + w.multiply(phase_minus_one)).tocsr()
    elif q_eff is not None:
        w = w.astype(np.complex128)
    if normalization == "sym":
        dinv = np.where(u.isolated, 0.0, 1.0 / np.sqrt(np.where(u.isolated, 1.0, u.deg)))
        diag = np.where(u.isolated, isolated_diag, 1.0)
        dm = sp.diags(dinv)
        lap = sp.diags(diag) - dm @ w @ dm
    else:
        diag = np.where(u.isolated, isolated_diag, u.deg)
        lap = sp.diags(diag) - w
    out: sp.csr_matrix = sp.csr_matrix(lap)
    out.sort_indices()
    return out


def isolated_shift(u: Union, normalization: str) -> float:
    """A value above the spectrum: eigenpairs moved there never enter the kept range."""
    if normalization == "sym":
        return 3.0
    return 2.0 * float(u.deg.max(initial=0.0)) + 1.0


def canonicalize(vecs: Tensor) -> Tensor:
    """Sign / phase convention on ``(B, N, K)`` eigenvectors (real or complex).

    Each column is multiplied by ``conj(v_a) / |v_a|``, ``a`` the first node whose magnitude
    is within :data:`TIE_TOL` of the column's maximum; zero columns stay zero.
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


class Solved(NamedTuple):
    vectors: Tensor  # (N_g, K) float64 or complex128
    values: Tensor  # (K,) float64
    mask: Tensor  # (K,) bool


def _dense_groups(
    u: Union, lap: sp.csr_matrix, graph_ids: np.ndarray
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
    u: Union,
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
    vecs = canonicalize(vecs) + 0.0  # + 0.0 turns -0.0 into 0.0
    vals = vals * valid.to(vals.dtype)
    return vecs, vals, valid


def _sparse_solve(
    u: Union,
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


class _UseDense(Exception):
    """Raised when a sparse solver cannot handle a problem this small."""


def solve(
    u: Union,
    lap: sp.csr_matrix,
    k: int,
    trivial: str,
    solver: str,
    tol: float,
    canonical_null: bool,
    shift: float,
    dtype: torch.dtype | None = None,
) -> list[Solved]:
    """Eigen-PE of every graph of ``u``, float64 / complex128.

    ``lap`` must carry ``shift`` (above the spectrum) on the diagonal of isolated nodes; with
    ``canonical_null`` (real Laplacian) the sparse solvers deflate the null space to ``shift``.
    With ``dtype``, vectors are cast to it and eigenvalues to float32.
    """
    num_graphs = u.sizes.size
    results: list[Solved | None] = [None] * num_graphs
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
            results[gid] = Solved(vecs, vals, mask)

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
