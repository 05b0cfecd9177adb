r"""Eigenvector PEs of many graphs: each graph to the dense path or to a sparse solver.

The route depends only on the graph (its node count, its components) and on ``solver``:
``"dense"`` sends every graph to :mod:`multipos.graph.dense`; ``"auto"`` sends graphs above
:data:`~multipos.graph.eigensolvers.DENSE_MAX_NODES` nodes to ARPACK; ``"arpack"`` and
``"lobpcg"`` take every graph they can (one too small for them goes to the dense path, for
every potential ``q``). So a graph gets the same route, and the same bits, alone or in any
batch. Every floating-point kernel runs on one thread (:mod:`multipos.graph.threads`); many
graphs are spread over up to ``torch.get_num_threads()`` Python threads, one graph per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from multipos.graph.dense import dense_eigenpairs
from multipos.graph.eigensolvers import DENSE_MAX_NODES, Eigenpairs, sparse_eigenpairs
from multipos.graph.operators import effective_q, isolated_shift, sparse_laplacian
from multipos.graph.small import small_graph_eigenpairs
from multipos.graph.threads import blas_single_threaded, torch_single_threaded
from multipos.graph.union import StackedGraphs, build_union, select_graphs

__all__ = ["eigen_pe_many"]


def eigen_pe_many(
    graphs: StackedGraphs,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    solver: str,
    tol: float,
    qs: Sequence[float | None],
    q_mode: str = "absolute",
) -> list[list[Eigenpairs]]:
    """Per graph, one :class:`~multipos.graph.eigensolvers.Eigenpairs` per entry of ``qs``
    (``None``: the real Laplacian with its null space handled exactly), float64 /
    complex128.

    Raises:
        ValueError: If ``symmetrize="none"`` meets a directed graph or a weighted degree
            overflows float64.
        RuntimeError: If LOBPCG does not converge.
    """
    sizes = graphs.sizes
    krylov = solver == "auto"
    one = sizes.size == 1 and (
        solver == "dense" or (solver == "auto" and sizes[0] <= DENSE_MAX_NODES)
    )
    if one and torch.get_num_threads() == 1:  # the per-graph path, no thread setting to hold
        fast = small_graph_eigenpairs(
            graphs, k, normalization, symmetrize, trivial, qs, q_mode, krylov=krylov
        )
        if fast is not None:
            return [fast]
    if solver == "dense":
        sparse_ids = np.zeros(0, dtype=np.int64)
    elif solver == "auto":
        sparse_ids = np.flatnonzero(sizes > DENSE_MAX_NODES)
    else:
        sparse_ids = np.flatnonzero(sizes > 0)
    sparse_solver = "arpack" if solver == "auto" else solver
    with torch_single_threaded() as threads:
        if one:
            fast = small_graph_eigenpairs(
                graphs, k, normalization, symmetrize, trivial, qs, q_mode, krylov=krylov
            )
            if fast is not None:
                return [fast]
        return _solve(
            graphs,
            sparse_ids,
            k,
            normalization,
            symmetrize,
            trivial,
            sparse_solver,
            tol,
            qs,
            q_mode,
            threads,
            krylov,
        )


def _solve(
    graphs: StackedGraphs,
    sparse_ids: np.ndarray,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    sparse_solver: str,
    tol: float,
    qs: Sequence[float | None],
    q_mode: str,
    workers: int,
    krylov: bool,
) -> list[list[Eigenpairs]]:
    sizes = graphs.sizes
    results: dict[int, list[Eigenpairs]] = {}
    if sparse_ids.size:
        u = build_union(select_graphs(graphs, sparse_ids), symmetrize, normalization)
        shift = isolated_shift(u, normalization)
        per_q = []
        with blas_single_threaded():
            for q in qs:
                q_eff = None if q is None else effective_q(u, q, q_mode)
                lap = sparse_laplacian(u, normalization, q_eff, shift)
                per_q.append(
                    sparse_eigenpairs(u, lap, k, trivial, sparse_solver, tol, q is None, shift)
                )
        for local, gid in enumerate(sparse_ids.tolist()):
            if all(local in p for p in per_q):
                results[gid] = [p[local] for p in per_q]
    dense_ids = (
        np.asarray([g for g in range(sizes.size) if g not in results], dtype=np.int64)
        if results
        else np.arange(sizes.size)
    )
    results.update(
        dense_eigenpairs(
            graphs,
            dense_ids,
            k,
            normalization,
            symmetrize,
            trivial,
            qs,
            q_mode,
            workers,
            krylov=krylov,
        )
    )
    return [results[g] for g in range(sizes.size)]
