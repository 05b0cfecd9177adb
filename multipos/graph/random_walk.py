r"""Directional random-walk encodings: forward / reverse k-step landing probabilities and PPR.

From "Transformers Meet Directed Graphs" (Geisler, Li, Mankowitz, Cemgil, Günnemann,
Paduraru, 2023, arXiv:2302.00049), Sec. 4: with the row-stochastic transition matrices of
the graph and of its reverse,

.. math::
    P = D_{\mathrm{out}}^{-1} A, \qquad P^{\leftarrow} = D_{\mathrm{in}}^{-1} A^\top,

(a node without out-going edges gets a self-loop of probability 1), the pairwise encoding
of ``(u, v)`` stacks :math:`P^t_{uv}` for ``t = 1..T`` and optionally the personalised
PageRank :math:`\alpha (I - (1 - \alpha) P)^{-1}`, for both directions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from multipos.graph.checks import GraphArrays, check_choice, graph_arrays

__all__ = ["directional_random_walk_pe", "transition_matrix"]

Direction = Literal["forward", "reverse", "both"]
Form = Literal["node", "pairwise"]
DIRECTIONS: tuple[str, ...] = ("forward", "reverse", "both")
FORMS: tuple[str, ...] = ("node", "pairwise")
#: Above this many nodes the node form uses sparse matrix powers and the pairwise form
#: (``N * N * F`` floats) is refused.
DENSE_MAX_NODES = 4096


def _adjacency(g: GraphArrays) -> sp.csr_matrix:
    a = sp.csr_matrix((g.weight, (g.row, g.col)), shape=(g.num_nodes, g.num_nodes))
    a.sum_duplicates()
    a.eliminate_zeros()
    return a


def _stochastic(a: sp.csr_matrix) -> sp.csr_matrix:
    out_deg = np.asarray(a.sum(axis=1)).ravel()
    sink = out_deg <= 0
    inv = np.where(sink, 0.0, 1.0 / np.where(sink, 1.0, out_deg))
    p = sp.diags(inv) @ a + sp.diags(sink.astype(np.float64))
    return sp.csr_matrix(p)


def transition_matrix(
    edge_index: Tensor,
    num_nodes: int | None = None,
    *,
    edge_weight: Tensor | None = None,
    direction: Literal["forward", "reverse"] = "forward",
) -> Tensor:
    r"""Row-stochastic transition matrix, ``(N, N)`` float64 dense.

    .. math::
        P_{uv} = a_{uv} / \textstyle\sum_w a_{uw}, \qquad P_{uu} = 1 \text{ if } u
        \text{ has no out-going edge},

    on the graph (``"forward"``) or on the graph with every edge reversed (``"reverse"``).
    Duplicate edges add their weights; self-loops are kept (they are transitions).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight or ``direction`` is invalid.
    """
    check_choice("direction", direction, ("forward", "reverse"))
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    a = _adjacency(g)
    if direction == "reverse":
        a = a.T.tocsr()
    return torch.from_numpy(_stochastic(a).toarray())


def check_walk_options(
    walk_length: object, direction: object, ppr_alpha: object, form: object
) -> None:
    """Validate the options of :func:`directional_random_walk_pe` (shared with its transform).

    Raises:
        TypeError: If ``walk_length`` is not an int or ``ppr_alpha`` not a float or None.
        ValueError: If a value is out of range or not one of the choices.
    """
    if isinstance(walk_length, bool) or not isinstance(walk_length, int):
        raise TypeError(f"walk_length must be a positive int, got {type(walk_length).__name__}")
    if walk_length < 1:
        raise ValueError(f"walk_length must be a positive int, got {walk_length}")
    check_choice("direction", direction, DIRECTIONS)
    check_choice("form", form, FORMS)
    if ppr_alpha is not None:
        if isinstance(ppr_alpha, bool) or not isinstance(ppr_alpha, (int, float)):
            raise TypeError(f"ppr_alpha must be a float or None, got {type(ppr_alpha).__name__}")
        if not 0.0 < float(ppr_alpha) <= 1.0:
            raise ValueError(f"ppr_alpha must lie in (0, 1], got {ppr_alpha}")


def directional_random_walk_pe(
    edge_index: Tensor,
    num_nodes: int | None = None,
    walk_length: int = 3,
    *,
    edge_weight: Tensor | None = None,
    direction: Direction = "both",
    ppr_alpha: float | None = None,
    form: Form = "node",
) -> Tensor:
    r"""Forward / reverse random-walk landing probabilities, per node or per node pair.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049):

    .. math::
        R_{uv} = \left(P_{uv}, P^2_{uv}, \dots, P^T_{uv},
        \ \alpha \left[(I - (1-\alpha) P)^{-1}\right]_{uv}\right)

    for ``P`` from :func:`transition_matrix`, then the same for the reverse walk
    (``direction="both"``: forward features first). ``form="pairwise"`` returns ``R``
    (``(N, N, F)``; feeds an attention bias), ``form="node"`` its diagonal (``(N, F)``:
    return probabilities, as RWSE but directed, with sinks made absorbing).

    Args:
        edge_index: ``(2, E)`` integer tensor of directed edges.
        num_nodes: ``N``; inferred when omitted.
        walk_length: Number of steps ``T >= 1``.
        edge_weight: Optional non-negative ``(E,)`` weights.
        direction: ``"forward"``, ``"reverse"`` or ``"both"``.
        ppr_alpha: Restart probability in (0, 1] of the PPR feature, or ``None`` for none.
        form: ``"node"`` or ``"pairwise"``.

    Returns:
        float32 tensor, ``(N, F)`` or ``(N, N, F)`` with
        ``F = (T + [ppr_alpha is not None]) * (2 if direction == "both" else 1)``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight or option is invalid, or the pairwise form is
            asked for more than 4,096 nodes.
    """
    check_walk_options(walk_length, direction, ppr_alpha, form)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    n = g.num_nodes
    if n > DENSE_MAX_NODES and (form == "pairwise" or ppr_alpha is not None):
        raise ValueError(
            f"form='pairwise' and ppr_alpha need dense N x N matrices; N={n} exceeds "
            f"{DENSE_MAX_NODES}. Use form='node' with ppr_alpha=None for large graphs."
        )
    a = _adjacency(g)
    mats = []
    if direction in ("forward", "both"):
        mats.append(_stochastic(a))
    if direction in ("reverse", "both"):
        mats.append(_stochastic(a.T.tocsr()))
    feats: list[np.ndarray] = []
    for p in mats:
        if n <= DENSE_MAX_NODES:
            pd = p.toarray()
            power = pd
            for t in range(walk_length):
                if t:
                    power = power @ pd
                feats.append(power if form == "pairwise" else np.diag(power).copy())
            if ppr_alpha is not None:
                alpha = float(ppr_alpha)
                ppr = alpha * np.linalg.inv(np.eye(n) - (1.0 - alpha) * pd)
                feats.append(ppr if form == "pairwise" else np.diag(ppr).copy())
        else:
            power_s = p
            for t in range(walk_length):
                if t:
                    power_s = sp.csr_matrix(power_s @ p)
                feats.append(np.asarray(power_s.diagonal()))
    stacked = np.stack(feats, axis=-1) if n else np.zeros((0, len(feats)))
    if form == "pairwise" and not n:
        stacked = np.zeros((0, 0, len(feats)))
    return torch.from_numpy(stacked).to(torch.float32)
