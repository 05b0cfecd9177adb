r"""PyG transform of the directional random-walk encodings, and batching them back to dense.

From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049), Sec. 4;
the math is :func:`multipos.graph.directional_random_walk_pe`.
"""

from __future__ import annotations

from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import to_dense_adj

from multipos.graph.batched import unpack_graph
from multipos.graph.random_walk import check_limits, check_walk_options, pairwise_and_mask
from multipos.graph.return_probabilities import DEFAULT_MEMORY_LIMIT
from multipos.graph.transform_base import Transform, check_data, check_name, check_prefix

__all__ = ["AddDirectionalRandomWalkPE", "pairwise_to_dense"]


class AddDirectionalRandomWalkPE(Transform):
    r"""Add forward / reverse random-walk encodings (per node or per node pair) to ``data``.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049); see
    :func:`multipos.graph.directional_random_walk_pe`:

    .. math::
        R_{uv} = (P_{uv}, \dots, P^T_{uv}, \mathrm{PPR}_{uv}) \ \Vert\ (\text{same for }
        A^\top)

    ``form="node"`` writes ``{attr_prefix}_pe`` ``(N, F)`` (the diagonal);
    ``form="pairwise"`` writes ``{attr_prefix}_pair_index`` ``(2, M)`` and
    ``{attr_prefix}_pair_attr`` ``(M, F)`` for exactly the structurally reachable pairs
    (a walk of at most ``T`` steps, or with PPR any walk, joins them).

    Args:
        walk_length: Steps ``T``.
        direction, ppr_alpha, form: See :func:`~multipos.graph.directional_random_walk_pe`.
        memory_limit, time_limit, progress: Budgets of the node form above 4,096 nodes; see
            :func:`~multipos.graph.directional_random_walk_pe`.
        weight_attr: Name of an ``(E,)`` edge-weight attribute (``"edge_weight"``: used when
            present; another name must be present), or ``None`` to ignore weights.
        attr_prefix: Prefix of the written attribute names (default ``"directional_walk"``,
            not PyG's ``AddRandomWalkPE`` name ``random_walk_pe``).

    Raises:
        TypeError / ValueError: On an invalid option (at construction) or graph (on call).
    """

    _fields = (
        "walk_length",
        "direction",
        "ppr_alpha",
        "form",
        "memory_limit",
        "time_limit",
        "weight_attr",
        "attr_prefix",
    )

    def __init__(
        self,
        walk_length: int = 3,
        *,
        direction: str = "both",
        ppr_alpha: float | None = None,
        form: str = "node",
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        time_limit: float | None = None,
        progress: bool | None = None,
        weight_attr: str | None = "edge_weight",
        attr_prefix: str = "directional_walk",
    ) -> None:
        check_walk_options(walk_length, direction, ppr_alpha, form)
        check_limits(memory_limit, time_limit)
        check_name("weight_attr", weight_attr, optional=True)
        check_prefix(attr_prefix)
        self.walk_length, self.direction, self.ppr_alpha = walk_length, direction, ppr_alpha
        self.form, self.memory_limit, self.time_limit = form, memory_limit, time_limit
        self.progress, self.weight_attr, self.attr_prefix = progress, weight_attr, attr_prefix

    def forward(self, data: Data) -> Data:
        edge_index, num_nodes, weight = unpack_graph(check_data(data), self.weight_attr)
        feats, mask = pairwise_and_mask(
            edge_index,
            num_nodes,
            self.walk_length,
            weight,
            self.direction,
            self.ppr_alpha,
            self.form,
            self.memory_limit,
            self.time_limit,
            self.progress,
        )
        p = self.attr_prefix
        if mask is None:
            data[f"{p}_pe"] = feats
        else:
            index = mask.nonzero().t().contiguous()  # (2, M)
            data[f"{p}_pair_index"] = index
            data[f"{p}_pair_attr"] = feats[index[0], index[1]]  # (M, F)
        return data


def pairwise_to_dense(
    index: Tensor, attr: Tensor, batch: Tensor | None = None, max_num_nodes: int | None = None
) -> Tensor:
    r"""Batched pairwise features ``(2, M)`` + ``(M, F)`` -> dense ``(B, N_max, N_max, F)``.

    Pairs not listed are zero. A thin wrapper of ``torch_geometric.utils.to_dense_adj``,
    for the output of ``AddDirectionalRandomWalkPE(form="pairwise")`` batched by a PyG
    ``DataLoader`` (pass ``batch.batch``).

    .. math::
        R[b, u, v, :] = \mathrm{attr}_m \quad \text{for } \mathrm{index}_{:, m} = (u, v)

    Raises:
        ValueError: If ``index`` is not ``(2, M)`` or ``attr`` not ``(M, F)``.
    """
    if index.dim() != 2 or index.shape[0] != 2:
        raise ValueError(f"index must have shape (2, M), got {tuple(index.shape)}")
    if attr.dim() != 2 or attr.shape[0] != index.shape[1]:
        raise ValueError(f"attr must have shape (M={index.shape[1]}, F), got {tuple(attr.shape)}")
    dense: Tensor = to_dense_adj(index, batch, attr, max_num_nodes=max_num_nodes)
    return dense
