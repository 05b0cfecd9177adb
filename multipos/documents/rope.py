r"""ROPE reading-order codes: each neighbour's place in reading order relative to its target.

From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
Information Extraction" (Lee, Li, Wang, Hua, Fujii, Popat, 2021, arXiv:2106.10786): for a
target word ``i`` with graph neighbours :math:`\mathcal{N}(i)`, sort
:math:`\mathcal{N}(i) \cup \{i\}` by the global reading-order rank and let
:math:`\pi_i(j)` be the 0-based position of ``j`` in that list. The code of edge
``j -> i`` is

.. math::
    c^{\mathrm{signed}}_{ij} = \pi_i(j) - \pi_i(i) \in \{-|\mathcal{N}(i)|, \dots, -1, 1,
    \dots, |\mathcal{N}(i)|\}, \qquad c^{\mathrm{rank}}_{ij} = \pi_i(j) \in \{0, \dots,
    |\mathcal{N}(i)|\}

so ``signed`` says how many neighbours away ``j`` is read before (negative) or after
(positive) ``i``, and ``rank`` is ``j``'s place in its target's neighbourhood, the target
included. Both depend only on the order *within* the neighbourhood: they do not change when
the nodes are relabelled or when the global rank is shifted or re-indexed by any strictly
increasing map (the "reading order equivariance" of the paper), and distinct neighbours of a
target get distinct codes. A self-loop gets :math:`\pi_i(i) - \pi_i(i) = 0` (``signed``) or
:math:`\pi_i(i)` (``rank``); duplicate edges get the same code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from multipos.graph.checks import check_choice, graph_arrays

__all__ = ["CODE_CONVENTIONS", "CodeConvention", "rope_codes"]

CodeConvention = Literal["signed", "rank"]
CODE_CONVENTIONS: tuple[str, ...] = ("signed", "rank")


def _check_rank(rank: object, num_nodes: int) -> Tensor:
    if not isinstance(rank, Tensor):
        raise TypeError(f"rank must be a torch.Tensor of shape (N,), got {type(rank).__name__}")
    if rank.is_complex() or rank.dtype == torch.bool:
        raise TypeError(f"rank must be a real tensor, got dtype {rank.dtype}")
    if rank.dim() != 1:
        raise ValueError(f"rank must have shape (N,), got {tuple(rank.shape)}")
    if rank.numel() < num_nodes:
        raise ValueError(
            f"rank has {rank.numel()} entries but edge_index refers to node {num_nodes - 1}"
        )
    r = rank.detach().cpu()
    if r.is_floating_point() and not torch.isfinite(r).all():
        raise ValueError("rank must be finite")
    if torch.unique(r).numel() != r.numel():
        raise ValueError("rank must give every word a distinct position (found repeated values)")
    return r


def rope_codes(edge_index: Tensor, rank: Tensor, convention: CodeConvention = "signed") -> Tensor:
    r"""ROPE code of every edge ``j -> i``: ``j``'s reading-order place among ``i``'s neighbours.

    From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
    Information Extraction" (Lee et al., 2021, arXiv:2106.10786); see the module docstring:

    .. math::
        c^{\mathrm{signed}}_{ij} = \pi_i(j) - \pi_i(i), \qquad c^{\mathrm{rank}}_{ij} =
        \pi_i(j)

    with :math:`\pi_i` the positions in :math:`\mathcal{N}(i) \cup \{i\}` sorted by ``rank``
    and :math:`\mathcal{N}(i)` the sources of the edges that point to ``i``
    (``edge_index[0] -> edge_index[1]``, PyG's message direction).

    Args:
        edge_index: ``(2, E)`` integer, ``source -> target``.
        rank: ``(N,)`` reading-order rank (integer or float, distinct values), e.g. from
            :func:`~multipos.documents.reading_order`; only the order of the values matters.
        convention: ``"signed"`` or ``"rank"``.

    Returns:
        ``codes`` ``(E,)`` int64, in the order of ``edge_index``'s columns.

    Raises:
        TypeError: If ``edge_index`` is not an integer tensor or ``rank`` not a real tensor.
        ValueError: If a shape is wrong, ``rank`` is shorter than the nodes referenced, has
            repeated or non-finite values, or ``convention`` is unknown.
    """
    check_choice("convention", convention, CODE_CONVENTIONS)
    arrays = graph_arrays(edge_index, None, None)
    r = _check_rank(rank, arrays.num_nodes)
    if edge_index.shape[1] == 0:
        return torch.zeros(0, dtype=torch.int64)
    src = torch.from_numpy(arrays.row)
    dst = torch.from_numpy(arrays.col)
    n = max(arrays.num_nodes, r.numel())
    pair, inverse = torch.unique(dst * n + src, return_inverse=True)  # distinct j -> i edges
    u_dst, u_src = pair // n, pair % n
    # Dense ordinal of the rank keeps the comparisons exact for any dtype.
    ordinal = torch.argsort(torch.argsort(r))
    loop = u_src == u_dst
    before = (ordinal[u_src] < ordinal[u_dst]) & ~loop  # neighbours read before the target
    target = torch.zeros(n, dtype=torch.int64).index_add_(0, u_dst, before.long())  # pi_i(i)
    # Position of each neighbour in its target's rank-sorted neighbour list (loops last).
    key = u_dst * (n + 1) + torch.where(loop, n, ordinal[u_src])
    order = torch.argsort(key)
    counts = torch.bincount(u_dst, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel()) - starts[u_dst[order]]
    pi_j = torch.where(loop, target[u_dst], position + (~before).long())
    codes = pi_j - target[u_dst] if convention == "signed" else pi_j
    return codes[inverse]
