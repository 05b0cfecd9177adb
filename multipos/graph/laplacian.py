r"""Laplacian eigenvector positional encodings, deterministic and padded.

From "Benchmarking Graph Neural Networks" (Dwivedi, Joshi, Luu, Laurent, Bengio, Bresson, 2020,
arXiv:2003.00982), Sec. 4 / Eq. (9): the PE of node ``u`` is the ``u``-th row of the ``K``
eigenvectors of the smallest non-trivial eigenvalues of

.. math::
    L = I - D^{-1/2} A D^{-1/2} \quad (\text{normalization}=\text{"sym"}), \qquad
    L = D - A \quad (\text{normalization}=\text{"none"}).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from multipos.graph.checks import check_choice, check_eigen_options, graph_arrays
from multipos.graph.operators import sparse_laplacian
from multipos.graph.options import (
    NORMALIZATION,
    SYMMETRIZE,
    Normalization,
    Solver,
    Symmetrize,
    Trivial,
)
from multipos.graph.spectral import eigen_pe_many
from multipos.graph.union import StackedGraphs, build_union, stack_graph_arrays

__all__ = ["LaplacianPE", "laplacian", "laplacian_pe"]


class LaplacianPE(NamedTuple):
    """Result of :func:`laplacian_pe`.

    Attributes:
        vectors: Eigenvectors, ``(N, K)`` float32; column ``j`` is zero where ``mask[j]`` is
            false.
        values: Their eigenvalues, ``(K,)`` float32, ascending; ``0`` where masked.
        mask: ``(K,)`` bool, true for the columns that hold an eigenvector.
    """

    vectors: Tensor
    values: Tensor
    mask: Tensor


def laplacian(
    edge_index: Tensor,
    num_nodes: int | None = None,
    *,
    edge_weight: Tensor | None = None,
    normalization: Normalization = "sym",
    symmetrize: Symmetrize = "union",
) -> Tensor:
    r"""Dense graph Laplacian, ``(N, N)`` float64, of the symmetrised graph.

    .. math::
        L_{\mathrm{sym}} = D_s^{+1/2} (D_s - A_s) D_s^{+1/2}, \qquad L = D_s - A_s,

    with ``A_s`` the symmetrised adjacency (``"union"``: :math:`\max(a_{uv}, a_{vu})`;
    ``"mean"``: :math:`(a_{uv} + a_{vu}) / 2`; ``"none"``: the input, which must be
    undirected) and :math:`D^{+}` the pseudo-inverse, so an isolated node has an all-zero
    row (it is a component of its own, eigenvalue 0). Self-loops are dropped and duplicate
    edges add their weights.

    Raises:
        TypeError: If ``edge_index`` is not an integer tensor or ``edge_weight`` not real.
        ValueError: If a shape, an index, a weight or an option is invalid, or if
            ``symmetrize="none"`` and the graph is directed.
    """
    check_choice("normalization", normalization, NORMALIZATION)
    check_choice("symmetrize", symmetrize, SYMMETRIZE)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    u = build_union(stack_graph_arrays([g]), symmetrize, normalization)
    return torch.from_numpy(sparse_laplacian(u, normalization, None, 0.0).toarray())


def laplacian_pe(
    edge_index: Tensor,
    num_nodes: int | None = None,
    k: int = 8,
    *,
    edge_weight: Tensor | None = None,
    normalization: Normalization = "sym",
    symmetrize: Symmetrize = "union",
    trivial: Trivial = "drop",
    solver: Solver = "auto",
    tol: float = 1e-8,
) -> LaplacianPE:
    r"""Laplacian eigenvector PE with eigenvalues, padding mask and a canonical sign.

    From "Benchmarking Graph Neural Networks" (Dwivedi et al., 2020, arXiv:2003.00982):

    .. math::
        L = U \Lambda U^\top, \qquad \mathrm{PE}(u) = (U_{u, j})_{j = c}^{c + K - 1}

    where ``L`` is :func:`laplacian` and ``c`` the number of connected components.

    Conventions (all deterministic; the same graph gives the same output in any process):

    * ``trivial="drop"`` removes the whole null space (one vector per connected component),
      not only the first eigenvector; ``"keep"`` keeps it, replaced by the canonical
      component vectors :math:`D^{1/2} 1_C / \|D^{1/2} 1_C\|` ordered by lowest node index.
    * isolated nodes get all-zero rows; fewer than ``K`` available eigenvectors (``N <= K``)
      are padded with zero columns and ``mask`` false.
    * sign: each eigenvector is flipped so that its entry of largest magnitude is positive
      (ties within 1e-8 go to the lowest node index). This is permutation-equivariant when
      that entry is unique and the spectrum is simple; inside a repeated eigenvalue the
      basis is the solver's (deterministic, but not canonical).
    * solvers: ``"dense"`` (``torch.linalg.eigh`` / LAPACK), ``"arpack"`` (``eigsh`` with a
      fixed start vector), ``"lobpcg"`` (fixed start block); ``"auto"`` = dense up to
      2,000 nodes, ARPACK above. ARPACK/LOBPCG need ``K`` well below ``N``; smaller
      problems go to the dense solver, which gives the same pairs.

    Args:
        edge_index: ``(2, E)`` integer tensor; directed input is symmetrised by ``symmetrize``.
        num_nodes: ``N``; inferred from ``edge_index`` when omitted.
        k: Number of eigenvectors ``K``.
        edge_weight: Optional non-negative ``(E,)`` weights.
        normalization: ``"sym"`` (eigenvalues in [0, 2]) or ``"none"`` (``D - A``).
        symmetrize: ``"union"``, ``"mean"`` or ``"none"`` (the graph must be undirected).
        trivial: ``"drop"`` or ``"keep"`` the null-space vectors.
        solver: ``"auto"``, ``"dense"``, ``"arpack"`` or ``"lobpcg"``.
        tol: Tolerance of the sparse solvers (``0`` = machine precision for ARPACK).

    Returns:
        :class:`LaplacianPE` ``(vectors (N, K), values (K,), mask (K,))``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight or option is invalid, or
            ``symmetrize="none"`` is given a directed graph.
    """
    check_eigen_options(k, normalization, symmetrize, trivial, solver, tol)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    graphs = stack_graph_arrays([g])
    return laplacian_pe_many(graphs, k, normalization, symmetrize, trivial, solver, tol)[0]


def laplacian_pe_many(
    graphs: StackedGraphs,
    k: int,
    normalization: str,
    symmetrize: str,
    trivial: str,
    solver: str,
    tol: float,
) -> list[LaplacianPE]:
    """Validated graphs -> :class:`LaplacianPE` each (shared by the batched path)."""
    solved = eigen_pe_many(graphs, k, normalization, symmetrize, trivial, solver, tol, [None])
    return [
        LaplacianPE(
            torch.from_numpy(r.vectors.astype(np.float32)),
            torch.from_numpy(r.values.astype(np.float32)),
            torch.from_numpy(r.mask),
        )
        for (r,) in solved
    ]
