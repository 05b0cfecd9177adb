r"""Many graphs as one block-diagonal union: symmetrised, with connected components labelled.

Every PE entry point (one graph or a list of graphs) goes through this union, so that
symmetrisation, degrees and connected components are computed once, vectorised, for all
graphs. All weights are float64. Conventions (documented in the public functions):

* self-loops are dropped, duplicate edges add their weights, zero-weight edges are absent;
* an isolated node (no edge other than self-loops) is its own component; it never enters a
  solver and gets an all-zero row in every PE;
* the non-isolated components of a graph are ranked by their lowest node index, and each
  carries a canonical unit null vector (``comp_value``), used by ``trivial="keep"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from multipos.graph.checks import GraphArrays

__all__ = [
    "GraphUnion",
    "StackedGraphs",
    "build_union",
    "check_degrees",
    "select_graphs",
    "stack_graph_arrays",
]


@dataclass
class GraphUnion:
    """Block-diagonal union of graphs, symmetrised, with component labels.

    ``N`` counts the nodes of all ``G`` graphs together; graph ``g`` owns the nodes
    ``ptr[g]:ptr[g + 1]``.
    """

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


class StackedGraphs(NamedTuple):
    """Several validated graphs: local edge indices concatenated, with per-graph counts."""

    row: np.ndarray  # (E_total,) local node ids
    col: np.ndarray
    weight: np.ndarray
    sizes: np.ndarray  # (G,) nodes per graph
    counts: np.ndarray  # (G,) edges per graph


def stack_graph_arrays(graphs: Sequence[GraphArrays]) -> StackedGraphs:
    """Concatenate validated graphs (local node ids kept) with their node and edge counts."""
    if not graphs:
        z = np.zeros(0, dtype=np.int64)
        return StackedGraphs(z, z, np.zeros(0), z, z)
    return StackedGraphs(
        np.concatenate([g.row for g in graphs]),
        np.concatenate([g.col for g in graphs]),
        np.concatenate([g.weight for g in graphs]),
        np.asarray([g.num_nodes for g in graphs], dtype=np.int64),
        np.asarray([g.row.size for g in graphs], dtype=np.int64),
    )


def select_graphs(graphs: StackedGraphs, ids: np.ndarray) -> StackedGraphs:
    """The graphs ``ids`` of ``graphs``, in that order."""
    ends = np.cumsum(graphs.counts)
    starts = ends - graphs.counts
    edges = (
        np.concatenate([np.arange(starts[g], ends[g]) for g in ids.tolist()])
        if ids.size
        else np.zeros(0, dtype=np.int64)
    )
    return StackedGraphs(
        graphs.row[edges],
        graphs.col[edges],
        graphs.weight[edges],
        graphs.sizes[ids],
        graphs.counts[ids],
    )


def check_degrees(deg: np.ndarray) -> None:
    """Weighted degrees must be finite: a sum of finite weights can still overflow float64.

    Raises:
        ValueError: If a degree is infinite.
    """
    if deg.size and not deg.max() < np.inf:  # degrees are sums of non-negative weights
        raise ValueError(
            "edge_weight sums overflow float64: a node's weighted degree is infinite; "
            "rescale edge_weight"
        )


def directed_error() -> ValueError:
    """The error for ``symmetrize="none"`` on a directed graph."""
    return ValueError(
        "symmetrize='none' needs an undirected graph (every edge (u, v) with the same "
        "weight as (v, u)), but the graph is directed; pass symmetrize='union' or 'mean'"
    )


def symmetrized_dense(a: np.ndarray, symmetrize: str) -> np.ndarray:
    r"""Dense adjacency ``a`` (``(..., n, n)``, one matrix per leading index) symmetrised:
    ``"union"`` takes :math:`\max(a_{uv}, a_{vu})`, ``"mean"`` and ``"none"``
    :math:`(a_{uv} + a_{vu}) / 2`.

    Raises:
        ValueError: If ``symmetrize="none"`` and some matrix is not symmetric (relative
            tolerance 1e-12 of its largest weight, at least 1).
    """
    at = np.swapaxes(a, -1, -2)
    if symmetrize == "union":
        out: np.ndarray = np.maximum(a, at)
        return out
    if symmetrize == "none":
        scale = np.maximum(1.0, np.abs(a).max(axis=(-2, -1), initial=0.0))
        if (np.abs(a - at) > 1e-12 * scale[..., None, None]).any():
            raise directed_error()
    mean: np.ndarray = (a + at) * 0.5
    return mean


@np.errstate(over="ignore")  # an overflowing degree raises below
def build_union(graphs: StackedGraphs, symmetrize: str, normalization: str = "sym") -> GraphUnion:
    r"""Union of ``graphs``: offsets, symmetrised weights, direction matrix, components.

    ``symmetrize`` is ``"union"`` (:math:`\max(a_{uv}, a_{vu})`, direction matrix
    :math:`[a_{uv} > 0] - [a_{vu} > 0]`), ``"mean"`` (:math:`(a_{uv} + a_{vu}) / 2`, direction
    :math:`a_{uv} - a_{vu}`) or ``"none"``; ``normalization`` picks the canonical null vector
    of each component (:math:`D^{1/2} 1_C` for ``"sym"``, :math:`1_C` for ``"none"``).

    Raises:
        ValueError: If ``symmetrize="none"`` and a graph is directed, or a weighted degree
            overflows float64.
    """
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
    check_degrees(deg)
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
    return GraphUnion(
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
