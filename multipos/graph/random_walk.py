r"""Directional random-walk encodings: forward / reverse k-step landing probabilities and PPR.

From "Transformers Meet Directed Graphs" (Geisler, Li, Mankowitz, Cemgil, Günnemann,
Paduraru, 2023, arXiv:2302.00049), Sec. 4: with the row-stochastic transition matrices of
the graph and of its reverse,

.. math::
    P = D_{\mathrm{out}}^{-1} A, \qquad P^{\leftarrow} = D_{\mathrm{in}}^{-1} A^\top,

(a node without out-going edges gets a self-loop of probability 1), the pairwise encoding
of ``(u, v)`` stacks :math:`P^t_{uv}` for ``t = 1..T`` and optionally the personalised
PageRank :math:`\alpha (I - (1 - \alpha) P)^{-1}`, for both directions.

A pair is stored (non-zero) exactly when it is structurally reachable: a walk of ``t`` steps
(``P^t``) or any walk (PPR) joins it. The inverse of the PPR leaves rounding noise of about
1e-16 on pairs that cannot reach each other; those entries are set to exactly zero from the
reachability of the graph (breadth-first search), never from a threshold. All products run on
one thread (:func:`~multipos.graph.threads.single_threaded`), so the values and the set of
stored pairs do not depend on the thread settings.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import torch
from torch import Tensor

from multipos.graph.checks import GraphArrays, check_choice, graph_arrays
from multipos.graph.return_probabilities import DEFAULT_MEMORY_LIMIT, return_probabilities
from multipos.graph.threads import single_threaded
from multipos.graph.union import check_degrees

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


@np.errstate(over="ignore")  # an overflowing degree raises below
def _stochastic(a: sp.csr_matrix) -> sp.csr_matrix:
    out_deg = np.asarray(a.sum(axis=1)).ravel()
    check_degrees(out_deg)
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


def check_limits(memory_limit: object, time_limit: object) -> None:
    """Validate the budgets of the large-graph node form.

    Raises:
        TypeError: If ``memory_limit`` is not an int or ``time_limit`` not a float or None.
        ValueError: If either is not positive.
    """
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, int):
        raise TypeError(f"memory_limit must be an int (bytes), got {type(memory_limit).__name__}")
    if memory_limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {memory_limit}")
    if time_limit is not None:
        if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
            raise TypeError(f"time_limit must be a float or None, got {type(time_limit).__name__}")
        if time_limit <= 0:
            raise ValueError(f"time_limit must be positive, got {time_limit}")


def _dense_stochastic(g: GraphArrays, reverse: bool) -> np.ndarray:
    """:func:`_stochastic` of the graph (or its reverse) as a dense ``(N, N)`` array."""
    n = g.num_nodes
    a = np.zeros((n, n))
    with np.errstate(over="ignore"):  # an overflowing degree raises below
        np.add.at(a, (g.col, g.row) if reverse else (g.row, g.col), g.weight)
        out_deg = a.sum(axis=1)
    check_degrees(out_deg)
    sink = out_deg <= 0
    p: np.ndarray = a / np.where(sink, 1.0, out_deg)[:, None]
    p[sink, sink] = 1.0
    return p


def _return_probabilities_dense(pd: np.ndarray, walk_length: int) -> list[np.ndarray]:
    """``diag(P^t)`` for ``t = 1..T``: ``diag(P^(a+b))_u = sum_w (P^a)_{uw} (P^b)_{wu}``, so
    only the powers up to ``ceil(T / 2)`` are formed (half the matrix products)."""
    powers = [pd]
    while len(powers) < (walk_length + 1) // 2:
        powers.append(powers[-1] @ pd)
    out = []
    for t in range(1, walk_length + 1):
        a = (t + 1) // 2
        b = t - a
        if b == 0:
            out.append(np.diag(powers[a - 1]).copy())
        else:  # row u of P^a times column u of P^b, summed in node order
            out.append(np.einsum("uw,wu->u", powers[a - 1], powers[b - 1]))
    return out


def _features(
    g: GraphArrays,
    walk_length: int,
    direction: str,
    ppr_alpha: float | None,
    form: str,
    memory_limit: int,
    time_limit: float | None,
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Float64 features ``(N, F)`` or ``(N, N, F)``, and for the pairwise form the ``(N, N)``
    structural mask of the pairs to store."""
    n = g.num_nodes
    reverses = [r for r, d in ((False, "forward"), (True, "reverse")) if direction in (d, "both")]
    if n > DENSE_MAX_NODES:
        a = _adjacency(g)
        return np.stack(
            [
                f
                for r in reverses
                for f in return_probabilities(
                    _stochastic(a.T.tocsr() if r else a),
                    walk_length,
                    memory_limit=memory_limit,
                    time_limit=time_limit,
                    progress=progress,
                ).T
            ],
            axis=-1,
        ), None
    feats: list[np.ndarray] = []
    mask = np.zeros((n, n), dtype=bool) if form == "pairwise" else None
    for r in reverses:
        pd = _dense_stochastic(g, r)
        if mask is None:
            feats += _return_probabilities_dense(pd, walk_length)
        power = pd
        step = (pd > 0).astype(np.float64)  # walks of one step
        walks = step
        for t in range(walk_length if mask is not None else 0):
            if t:
                power = power @ pd
                if mask is not None:  # exact walk existence: 0/1 arithmetic, clamped
                    walks = np.minimum(walks @ step, 1.0)
            feats.append(power if form == "pairwise" else np.diag(power).copy())
            if mask is not None:
                mask |= walks > 0
        if ppr_alpha is not None:
            alpha = float(ppr_alpha)
            ppr = alpha * np.linalg.inv(np.eye(n) - (1.0 - alpha) * pd)
            # every node reaches itself; others as far as a walk goes, nothing else
            reach = np.isfinite(csgraph.shortest_path(step, unweighted=True, directed=True))
            ppr = np.where(reach, np.maximum(ppr, 0.0), 0.0)
            feats.append(ppr if form == "pairwise" else np.diag(ppr).copy())
            if mask is not None:
                mask |= reach
    if mask is not None:
        stacked = np.stack(feats, axis=-1) if n else np.zeros((0, 0, len(feats)))
        return np.where(mask[:, :, None], stacked, 0.0), mask
    return (np.stack(feats, axis=-1) if n else np.zeros((0, len(feats)))), None


def directional_random_walk_pe(
    edge_index: Tensor,
    num_nodes: int | None = None,
    walk_length: int = 3,
    *,
    edge_weight: Tensor | None = None,
    direction: Direction = "both",
    ppr_alpha: float | None = None,
    form: Form = "node",
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    time_limit: float | None = None,
    progress: bool | None = None,
) -> Tensor:
    r"""Forward / reverse random-walk landing probabilities, per node or per node pair.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049):

    .. math::
        R_{uv} = \left(P_{uv}, P^2_{uv}, \dots, P^T_{uv},
        \ \alpha \left[(I - (1-\alpha) P)^{-1}\right]_{uv}\right)

    for ``P`` from :func:`transition_matrix`, then the same for the reverse walk
    (``direction="both"``: forward features first). ``form="pairwise"`` returns ``R``
    (``(N, N, F)``; feeds an attention bias), ``form="node"`` its diagonal (``(N, F)``:
    return probabilities, as RWSE but directed, with sinks made absorbing). An entry is
    non-zero exactly when a walk of that length (PPR: any walk) joins the pair.

    Up to 4,096 nodes the matrices are dense. Above, only ``form="node"`` without PPR is
    available, computed exactly without forming :math:`P^t`
    (:func:`~multipos.graph.return_probabilities.return_probabilities`): its working set
    stays under ``memory_limit`` bytes, and a configuration that cannot fit, or whose
    estimated time exceeds ``time_limit`` seconds, raises before the work starts.

    Args:
        edge_index: ``(2, E)`` integer tensor of directed edges.
        num_nodes: ``N``; inferred when omitted.
        walk_length: Number of steps ``T >= 1``.
        edge_weight: Optional non-negative ``(E,)`` weights.
        direction: ``"forward"``, ``"reverse"`` or ``"both"``.
        ppr_alpha: Restart probability in (0, 1] of the PPR feature, or ``None`` for none.
        form: ``"node"`` or ``"pairwise"``.
        memory_limit: Working-set budget in bytes of the large-graph node form (1 GiB).
        time_limit: Time budget in seconds of the large-graph node form, or ``None``.
        progress: Progress bar of the large-graph node form; ``None``: when it is estimated
            to take more than 10 s.

    Returns:
        float32 tensor, ``(N, F)`` or ``(N, N, F)`` with
        ``F = (T + [ppr_alpha is not None]) * (2 if direction == "both" else 1)``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight or option is invalid, weighted out-degrees
            overflow float64, the pairwise form or PPR is asked for more than 4,096 nodes, or
            the large-graph node form exceeds ``memory_limit`` / ``time_limit``.
    """
    feats, _ = pairwise_and_mask(
        edge_index,
        num_nodes,
        walk_length,
        edge_weight,
        direction,
        ppr_alpha,
        form,
        memory_limit,
        time_limit,
        progress,
    )
    return feats


def pairwise_and_mask(
    edge_index: Tensor,
    num_nodes: int | None,
    walk_length: int,
    edge_weight: Tensor | None,
    direction: str,
    ppr_alpha: float | None,
    form: str,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    time_limit: float | None = None,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`directional_random_walk_pe` and, for the pairwise form, the ``(N, N)`` mask of
    the structurally reachable pairs (the pairs a transform stores)."""
    check_walk_options(walk_length, direction, ppr_alpha, form)
    check_limits(memory_limit, time_limit)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    n = g.num_nodes
    if n > DENSE_MAX_NODES and (form == "pairwise" or ppr_alpha is not None):
        raise ValueError(
            f"form='pairwise' and ppr_alpha need dense N x N matrices; N={n} exceeds "
            f"{DENSE_MAX_NODES}. Use form='node' with ppr_alpha=None for large graphs."
        )
    with single_threaded():
        feats, mask = _features(
            g, walk_length, direction, ppr_alpha, form, memory_limit, time_limit, progress
        )
    out = torch.from_numpy(feats).to(torch.float32)
    return out, None if mask is None else torch.from_numpy(mask)
