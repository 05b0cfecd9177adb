r"""PyTorch Geometric transform ``AddReadingOrderPE``: word graph, reading order, ROPE codes.

A thin :class:`~torch_geometric.transforms.BaseTransform` around :func:`word_graph`,
:func:`reading_order` and :func:`rope_codes`; works as ``transform`` and ``pre_transform``
inside ``T.Compose`` and batches with PyG's ``DataLoader``:

=======================  ================================  ===============
attribute                what                              shape, dtype
=======================  ================================  ===============
``edge_index``           the word graph (replaced)         ``(2, E)`` int64
``{code_attr}``          ROPE code of each edge            ``(E,)`` int64
``{rank_attr}``          reading-order rank of each word   ``(N,)`` int64
=======================  ================================  ===============

Ranks are per page (batching does not offset them); codes are already relative, so a batch
of pages carries the same codes as the pages one by one. Codes belong to directed edges
(``c_ij != c_ji``): put transforms that rewrite ``edge_index`` (``ToUndirected``,
``AddSelfLoops``) before this one, never after (``ToUndirected`` would add ``c_ij + c_ji``).
"""

from __future__ import annotations

from typing import Any

from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from multipos.documents.reading_order import READING_ORDERS, reading_order
from multipos.documents.rope import CODE_CONVENTIONS, rope_codes
from multipos.documents.word_graph import WORD_GRAPHS, check_beta, word_graph
from multipos.graph.checks import check_choice, check_k

__all__ = ["AddReadingOrderPE"]

STORED = "stored"


def _check_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{name} must be a Python identifier string, got {value!r}")
    return value


class AddReadingOrderPE(BaseTransform):  # type: ignore[misc]
    r"""Build the word graph of a page and write its ROPE reading-order codes per edge.

    From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
    Information Extraction" (Lee et al., 2021, arXiv:2106.10786): the graph is
    :func:`~multipos.documents.word_graph` over ``data[box_attr]``, the order
    :func:`~multipos.documents.reading_order`, the codes
    :func:`~multipos.documents.rope_codes`:

    .. math::
        c_{ij} = \pi_i(j) - \pi_i(i) \quad (\text{``signed''})

    Args:
        strategy: ``"given"``, ``"raster"``, ``"xycut"``, or ``"stored"`` to read an existing
            rank from ``data[rank_attr]`` (e.g. the EC-FUNSD reference order of
            :func:`~multipos.documents.load_funsd`).
        graph: ``"beta_skeleton"`` or ``"knn"``.
        beta, k: See :func:`~multipos.documents.word_graph`.
        convention: ``"signed"`` or ``"rank"``.
        box_attr: Name of the ``(N, 4)`` box attribute.
        code_attr: Name of the written ``(E,)`` code attribute.
        rank_attr: Name of the ``(N,)`` rank attribute (written, or read with ``"stored"``).

    Raises:
        TypeError / ValueError: On an invalid option (at construction); on call, if ``data``
            is not a ``Data``, lacks ``box_attr`` (or ``rank_attr`` with ``"stored"``), or its
            boxes or rank are invalid (see the functions above).
    """

    _fields = ("strategy", "graph", "beta", "k", "convention", "box_attr", "code_attr",
               "rank_attr")  # fmt: skip

    def __init__(
        self,
        strategy: str = "raster",
        graph: str = "beta_skeleton",
        *,
        beta: float = 1.0,
        k: int = 8,
        convention: str = "signed",
        box_attr: str = "box",
        code_attr: str = "rope_code",
        rank_attr: str = "reading_rank",
    ) -> None:
        check_choice("strategy", strategy, (*READING_ORDERS, STORED))
        check_choice("graph", graph, WORD_GRAPHS)
        check_choice("convention", convention, CODE_CONVENTIONS)
        self.strategy, self.graph, self.convention = strategy, graph, convention
        self.beta, self.k = check_beta(beta), check_k(k)
        self.box_attr = _check_name("box_attr", box_attr)
        self.code_attr = _check_name("code_attr", code_attr)
        self.rank_attr = _check_name("rank_attr", rank_attr)

    def forward(self, data: Any) -> Data:
        if not isinstance(data, Data):
            raise TypeError(
                f"expected a torch_geometric.data.Data (one page), got {type(data).__name__}"
            )
        if self.box_attr not in data:
            raise ValueError(f"data has no {self.box_attr!r} attribute (the (N, 4) word boxes)")
        boxes = data[self.box_attr]
        edge_index = word_graph(boxes, self.graph, beta=self.beta, k=self.k)  # type: ignore[arg-type]
        if self.strategy == STORED:
            if self.rank_attr not in data:
                raise ValueError(f"strategy='stored' needs data.{self.rank_attr}, which is missing")
            rank = data[self.rank_attr]
        else:
            rank = reading_order(boxes, self.strategy)  # type: ignore[arg-type]
        if rank.shape != (boxes.shape[0],):
            raise ValueError(
                f"data.{self.rank_attr} must have shape (N,) = ({boxes.shape[0]},), "
                f"got {tuple(rank.shape)}"
            )
        data.edge_index = edge_index
        data[self.code_attr] = rope_codes(edge_index, rank, self.convention)  # type: ignore[arg-type]
        data[self.rank_attr] = rank
        return data

    def __repr__(self) -> str:
        options = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({options})"
