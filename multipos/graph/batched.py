r"""Batched precomputation of Laplacian / magnetic Laplacian PEs for many small graphs.

The graphs are stacked into one block-diagonal union (symmetrisation, normalisation and
connected components are computed once, vectorised), grouped by node count and solved with
batched dense ``torch.linalg.eigh`` in float64; larger graphs use the solver that
``solver`` selects. The results are identical (same conventions, same code path) to
calling :func:`~multipos.graph.laplacian_pe` / :func:`~multipos.graph.magnetic_laplacian_pe`
graph by graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from multipos.graph.checks import check_choice, check_eigen_options, check_q, graph_arrays
from multipos.graph.laplacian import LaplacianPE, laplacian_pe_many
from multipos.graph.magnetic import MagneticLaplacianPE, magnetic_laplacian_pe_many, squeeze_q
from multipos.graph.options import (
    MAGNETIC_SYMMETRIZE,
    Q_MODES,
    MagneticSymmetrize,
    Normalization,
    QMode,
    Solver,
    Symmetrize,
    Trivial,
)
from multipos.graph.union import StackedGraphs, stack_graph_arrays

__all__ = ["DEFAULT_WEIGHT_ATTR", "batched_laplacian_pe", "batched_magnetic_laplacian_pe"]

#: The edge-weight attribute read when a graph has it (PyG's convention); a graph without
#: an attribute of any other ``weight_attr`` name raises.
DEFAULT_WEIGHT_ATTR = "edge_weight"


def unpack_graph(item: Any, weight_attr: str | None) -> tuple[Any, Any, Any]:
    """``(edge_index, num_nodes, edge_weight)`` of a ``Data`` (no edges: an empty
    ``edge_index``; weights from ``weight_attr``) or of a graph tuple.

    Raises:
        ValueError: If ``weight_attr`` is not ``None`` nor ``"edge_weight"`` and the graph
            has no such attribute.
    """
    if isinstance(item, tuple):
        if len(item) not in (2, 3):
            raise ValueError(
                "graph tuples must be (edge_index, num_nodes) or "
                f"(edge_index, num_nodes, edge_weight); got a tuple of length {len(item)}"
            )
        return item[0], item[1], item[2] if len(item) == 3 else None
    if not isinstance(item, Data):
        raise TypeError(
            "each graph must be a torch_geometric Data (with edge_index / num_nodes) or a "
            f"tuple (edge_index, num_nodes[, edge_weight]); got {type(item).__name__}"
        )
    edge_index = item.edge_index
    if edge_index is None:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    weight = getattr(item, weight_attr, None) if weight_attr else None
    if weight is None and weight_attr not in (None, DEFAULT_WEIGHT_ATTR):
        raise ValueError(
            f"weight_attr={weight_attr!r} is not an attribute of the graph (it has "
            f"{', '.join(sorted(item.keys()))}); pass weight_attr=None to ignore weights"
        )
    return edge_index, item.num_nodes, weight


def _simple(ei: Any, n: Any, w: Any) -> bool:
    """Cheap check that a graph can take the vectorised path (else full validation)."""
    return (
        isinstance(ei, Tensor)
        and ei.dim() == 2
        and ei.shape[0] == 2
        and ei.dtype in (torch.int64, torch.int32)
        and isinstance(n, int)
        and not isinstance(n, bool)
        and n >= 0
        and (
            w is None
            or (isinstance(w, Tensor) and w.shape == (ei.shape[1],) and w.is_floating_point())
        )
    )


def _check_weights(w: np.ndarray) -> None:
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("edge_weight must be finite and non-negative")


def one_graph(edge_index: Any, num_nodes: Any, weight: Any) -> StackedGraphs:
    """Validate one graph with as few array passes as possible (the per-graph path)."""
    if not (
        _simple(edge_index, num_nodes, weight)
        and edge_index.device.type == "cpu"
        and (weight is None or weight.device.type == "cpu")
    ):
        return stack_graph_arrays([graph_arrays(edge_index, num_nodes, weight)])
    ei = edge_index.detach().numpy()
    if ei.dtype != np.int64:
        ei = ei.astype(np.int64)
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        graph_arrays(edge_index, num_nodes, weight)  # raises, naming the problem
    if weight is None:
        w = np.ones(ei.shape[1])
    else:
        w = weight.detach().numpy().astype(np.float64)
        _check_weights(w)
    sizes = np.array([num_nodes], dtype=np.int64)
    return StackedGraphs(ei[0], ei[1], w, sizes, np.array([ei.shape[1]], dtype=np.int64))


def stack_graphs(graphs: Sequence[Any], weight_attr: str | None) -> StackedGraphs:
    """Validate and concatenate ``Data`` objects or ``(edge_index, num_nodes[, w])`` tuples."""
    items = [unpack_graph(g, weight_attr) for g in graphs]
    if len(items) == 1:
        return one_graph(*items[0])
    if not items or not all(_simple(*it) for it in items):
        return stack_graph_arrays([graph_arrays(*it) for it in items])
    sizes = np.asarray([it[1] for it in items], dtype=np.int64)
    counts = np.asarray([it[0].shape[1] for it in items], dtype=np.int64)
    ei = torch.cat([it[0].detach().to(torch.int64) for it in items], dim=1).cpu().numpy()
    limit = np.repeat(sizes, counts)
    bad = (ei < 0).any(axis=0) | (ei >= limit).any(axis=0)
    if bad.any():  # let the per-graph validation name the problem
        first = int(np.searchsorted(np.cumsum(counts), np.flatnonzero(bad)[0], side="right"))
        graph_arrays(*items[first])
    if all(it[2] is None for it in items):
        w = np.ones(ei.shape[1])
    else:
        w = (
            torch.cat(
                [
                    it[2].detach().to(torch.float64)
                    if it[2] is not None
                    else torch.ones(it[0].shape[1], dtype=torch.float64)
                    for it in items
                ]
            )
            .cpu()
            .numpy()
        )
        _check_weights(w)
    return StackedGraphs(ei[0], ei[1], w, sizes, counts)


def batched_laplacian_pe(
    graphs: Sequence[Any],
    k: int = 8,
    *,
    normalization: Normalization = "sym",
    symmetrize: Symmetrize = "union",
    trivial: Trivial = "drop",
    solver: Solver = "auto",
    tol: float = 1e-8,
    weight_attr: str | None = "edge_weight",
) -> list[LaplacianPE]:
    r""":func:`~multipos.graph.laplacian_pe` for a list of graphs, with batched eigensolvers.

    From "Benchmarking Graph Neural Networks" (Dwivedi et al., 2020, arXiv:2003.00982):

    .. math::
        L_g = U_g \Lambda_g U_g^\top \quad \text{for every graph } g, \text{ solved as one
        batched } \mathrm{eigh} \text{ per node count}

    Args:
        graphs: ``Data`` objects or tuples ``(edge_index, num_nodes[, edge_weight])``.
        k, normalization, symmetrize, trivial, solver, tol: As in
            :func:`~multipos.graph.laplacian_pe`.
        weight_attr: Attribute of a ``Data`` holding ``(E,)`` edge weights: the default
            ``"edge_weight"`` is read when present, any other name must be present.

    Returns:
        One :class:`~multipos.graph.LaplacianPE` per graph, in order.

    Raises:
        TypeError / ValueError: As :func:`~multipos.graph.laplacian_pe`, naming the bad graph's
            problem.
    """
    check_eigen_options(k, normalization, symmetrize, trivial, solver, tol)
    return laplacian_pe_many(
        stack_graphs(graphs, weight_attr), k, normalization, symmetrize, trivial, solver, tol
    )


def batched_magnetic_laplacian_pe(
    graphs: Sequence[Any],
    k: int = 8,
    *,
    q: float | Sequence[float] = 0.25,
    q_mode: QMode = "relative",
    normalization: Normalization = "sym",
    symmetrize: MagneticSymmetrize = "union",
    trivial: Trivial = "keep",
    solver: Solver = "auto",
    tol: float = 1e-8,
    weight_attr: str | None = "edge_weight",
) -> list[MagneticLaplacianPE]:
    r""":func:`~multipos.graph.magnetic_laplacian_pe` for a list of graphs, batched.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049):

    .. math::
        L^{(q)}_g = U_g \Lambda_g U_g^{*} \quad \text{for every graph } g \text{ and every } q

    Args:
        graphs: ``Data`` objects or tuples ``(edge_index, num_nodes[, edge_weight])``.
        k, q, q_mode, normalization, symmetrize, trivial, solver, tol: As in
            :func:`~multipos.graph.magnetic_laplacian_pe`.
        weight_attr: Attribute of a ``Data`` holding ``(E,)`` edge weights: the default
            ``"edge_weight"`` is read when present, any other name must be present.

    Returns:
        One :class:`~multipos.graph.MagneticLaplacianPE` per graph, in order.

    Raises:
        TypeError / ValueError: As :func:`~multipos.graph.magnetic_laplacian_pe`.
    """
    qs, many = check_q(q)
    check_choice("q_mode", q_mode, Q_MODES)
    check_eigen_options(k, normalization, symmetrize, trivial, solver, tol, MAGNETIC_SYMMETRIZE)
    out = magnetic_laplacian_pe_many(
        stack_graphs(graphs, weight_attr),
        k,
        qs,
        q_mode,
        normalization,
        symmetrize,
        trivial,
        solver,
        tol,
    )
    return out if many else [squeeze_q(r) for r in out]
