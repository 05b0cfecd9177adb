r"""PyTorch Geometric transforms: ``AddLaplacianPE``, ``AddMagneticLaplacianPE``,
``AddDirectionalRandomWalkPE``.

Each is a thin :class:`~torch_geometric.transforms.BaseTransform` around the pure function of
the same name, works as ``transform`` and ``pre_transform`` inside ``T.Compose``, and
writes per-node tensors (so PyG's ``DataLoader`` batches them by concatenation):

==========================  =========================================  ==================
transform                   attributes (``attr_prefix`` = default)      shape, dtype
==========================  =========================================  ==================
``AddLaplacianPE``          ``laplacian_pe``                           ``(N, K)`` float32
                            ``laplacian_eigenvalues``                  ``(N, K)`` float32
                            ``laplacian_mask``                         ``(N, K)`` bool
``AddMagneticLaplacianPE``  ``magnetic_pe_real``, ``magnetic_pe_imag``  ``(N, K)`` or
                            ``magnetic_eigenvalues``, ``magnetic_mask`` ``(N, Q, K)``
``AddDirectionalRandomWalk  node form: ``directional_walk_pe``         ``(N, F)`` float32
PE``                        pairwise: ``directional_walk_pair_index``  ``(2, M)`` int64
                            ``directional_walk_pair_attr``             ``(M, F)`` float32
==========================  =========================================  ==================

Eigenvalues and masks are repeated on every node of the graph (rows are identical). The
pairwise form keeps the ``M`` structurally reachable pairs; its ``*_index`` name makes PyG
offset it when batching, and :func:`pairwise_to_dense` turns a batch back into
``(B, N_max, N_max, F)`` for an attention bias. No default name equals one of PyG's own
transforms (``laplacian_eigenvector_pe``, ``random_walk_pe``), so both can run in one
``Compose``. An ``attr_prefix`` containing ``index`` or ``batch`` is refused: PyG's
``DataLoader`` would offset (and concatenate along the last axis) such attributes.

``weight_attr="edge_weight"`` (the default) is read when the graph has it, as PyG's own
transforms do; any other name must exist on every graph (a missing one raises).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from multipos.graph.batched import (
    batched_laplacian_pe,
    batched_magnetic_laplacian_pe,
    one_graph,
    unpack_graph,
)
from multipos.graph.checks import check_choice, check_eigen_options, check_q
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
from multipos.graph.transform_base import Transform, check_data, check_name, check_prefix
from multipos.graph.union import StackedGraphs
from multipos.graph.walk_transform import AddDirectionalRandomWalkPE, pairwise_to_dense

__all__ = [
    "AddDirectionalRandomWalkPE",
    "AddLaplacianPE",
    "AddMagneticLaplacianPE",
    "pairwise_to_dense",
]


def _per_node(xs: Sequence[Tensor], sizes: Sequence[int]) -> Sequence[Tensor]:
    """Repeat each graph's ``x`` on its nodes, for all graphs in a few vectorised ops."""
    if len(xs) == 1:
        return [xs[0].expand(sizes[0], *xs[0].shape).contiguous()]
    stacked = torch.stack(list(xs))  # (G, ...)
    counts = torch.tensor(sizes, dtype=torch.long)
    repeated = stacked.repeat_interleave(counts, dim=0)  # (N_total, ...)
    return torch.split(repeated, list(sizes))


class _SpectralTransform(Transform):
    """Shared plumbing of the eigenvector transforms: per-graph and batched application."""

    attr_prefix: str

    def _run(self, data_list: Sequence[Data]) -> Sequence[Any]:
        raise NotImplementedError

    def _vectors(self, result: Any) -> dict[str, Tensor]:
        """Per-node eigenvector attributes of one result, by name suffix."""
        raise NotImplementedError

    def _write(self, data_list: Sequence[Data], results: Sequence[Any]) -> list[Data]:
        """Set the vectors and the per-node eigenvalues and mask on each graph."""
        vectors = [self._vectors(r) for r in results]
        sizes = [next(iter(v.values())).shape[0] for v in vectors]
        values = _per_node([r.values for r in results], sizes)
        masks = _per_node([r.mask for r in results], sizes)
        p = self.attr_prefix
        for data, vecs, v, m in zip(data_list, vectors, values, masks, strict=True):
            for suffix, tensor in vecs.items():
                data[f"{p}_{suffix}"] = tensor
            data[f"{p}_eigenvalues"] = v
            data[f"{p}_mask"] = m
        return list(data_list)

    def _run_one(self, graph: StackedGraphs) -> Any:
        """The result for one validated graph (options were checked at construction)."""
        raise NotImplementedError

    def forward(self, data: Data) -> Data:
        graph = one_graph(*unpack_graph(check_data(data), self.weight_attr))
        return self._write([data], [self._run_one(graph)])[0]

    def apply_many(self, data_list: Sequence[Data]) -> list[Data]:
        """Transform many graphs at once with batched eigensolvers; returns shallow copies.

        The same bits as calling the transform on each graph; ``[]`` gives ``[]``.
        """
        data_list = [copy.copy(check_data(d)) for d in data_list]
        if not data_list:
            return []
        return self._write(data_list, self._run(data_list))


class AddLaplacianPE(_SpectralTransform):
    r"""Add the Laplacian eigenvector PE, its eigenvalues and a mask to ``data``.

    From "Benchmarking Graph Neural Networks" (Dwivedi et al., 2020, arXiv:2003.00982); see
    :func:`multipos.graph.laplacian_pe` for the equation and conventions:

    .. math::
        L = I - D^{-1/2} A D^{-1/2} = U \Lambda U^\top

    Writes ``{attr_prefix}_pe`` ``(N, K)``, ``{attr_prefix}_eigenvalues`` ``(N, K)`` and
    ``{attr_prefix}_mask`` ``(N, K)``. Unlike PyG's ``AddLaplacianEigenvectorPE`` it is
    deterministic (canonical sign, no random flip), pads graphs with ``N <= K``, drops every
    component's trivial vector, returns eigenvalues and symmetrises directed input by an
    explicit rule.

    Args:
        k: Number of eigenvectors ``K``.
        normalization, symmetrize, trivial, solver, tol: See
            :func:`~multipos.graph.laplacian_pe`.
        weight_attr: Name of an ``(E,)`` edge-weight attribute used when present, or
            ``None`` to ignore weights.
        attr_prefix: Prefix of the written attribute names.

    Raises:
        TypeError / ValueError: On an invalid option (at construction) or graph (on call).
    """

    _fields = (
        "k",
        "normalization",
        "symmetrize",
        "trivial",
        "solver",
        "tol",
        "weight_attr",
        "attr_prefix",
    )

    def __init__(
        self,
        k: int = 8,
        *,
        normalization: Normalization = "sym",
        symmetrize: Symmetrize = "union",
        trivial: Trivial = "drop",
        solver: Solver = "auto",
        tol: float = 1e-8,
        weight_attr: str | None = "edge_weight",
        attr_prefix: str = "laplacian",
    ) -> None:
        check_eigen_options(k, normalization, symmetrize, trivial, solver, tol)
        check_name("weight_attr", weight_attr, optional=True)
        check_prefix(attr_prefix)
        self.k, self.normalization, self.symmetrize = k, normalization, symmetrize
        self.trivial, self.solver, self.tol = trivial, solver, tol
        self.weight_attr, self.attr_prefix = weight_attr, attr_prefix

    def _run(self, graphs: Sequence[Data]) -> list[LaplacianPE]:
        return batched_laplacian_pe(
            graphs,
            self.k,
            normalization=self.normalization,
            symmetrize=self.symmetrize,
            trivial=self.trivial,
            solver=self.solver,
            tol=self.tol,
            weight_attr=self.weight_attr,
        )

    def _run_one(self, graph: StackedGraphs) -> LaplacianPE:
        return laplacian_pe_many(
            graph, self.k, self.normalization, self.symmetrize, self.trivial, self.solver, self.tol
        )[0]

    def _vectors(self, result: LaplacianPE) -> dict[str, Tensor]:
        return {"pe": result.vectors}


class AddMagneticLaplacianPE(_SpectralTransform):
    r"""Add the magnetic Laplacian PE (real, imaginary, eigenvalues, mask) to ``data``.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049); see
    :func:`multipos.graph.magnetic_laplacian_pe` for the conventions:

    .. math::
        L^{(q)} = I - (D_s^{-1/2} A_s D_s^{-1/2}) \odot e^{i 2\pi q S} = U \Lambda U^{*}

    Writes ``{attr_prefix}_pe_real``, ``{attr_prefix}_pe_imag``,
    ``{attr_prefix}_eigenvalues`` and ``{attr_prefix}_mask``, each ``(N, K)`` (``(N, Q, K)``
    when ``q`` is a sequence). Subject of patent application WO2024094893A1: check it before
    commercial use.

    Args:
        k: Eigenvectors per potential ``K``.
        q, q_mode, normalization, symmetrize, trivial, solver, tol: See
            :func:`~multipos.graph.magnetic_laplacian_pe`.
        weight_attr: Name of an ``(E,)`` edge-weight attribute used when present, or ``None``.
        attr_prefix: Prefix of the written attribute names.

    Raises:
        TypeError / ValueError: On an invalid option (at construction) or graph (on call).
    """

    _fields = (
        "k",
        "q",
        "q_mode",
        "normalization",
        "symmetrize",
        "trivial",
        "solver",
        "tol",
        "weight_attr",
        "attr_prefix",
    )

    def __init__(
        self,
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
        attr_prefix: str = "magnetic",
    ) -> None:
        qs, many = check_q(q)
        check_choice("q_mode", q_mode, Q_MODES)
        check_eigen_options(k, normalization, symmetrize, trivial, solver, tol, MAGNETIC_SYMMETRIZE)
        check_name("weight_attr", weight_attr, optional=True)
        check_prefix(attr_prefix)
        self.k = k
        self.q: float | tuple[float, ...] = tuple(qs) if many else qs[0]
        self.q_mode, self.normalization, self.symmetrize = q_mode, normalization, symmetrize
        self.trivial, self.solver, self.tol = trivial, solver, tol
        self.weight_attr, self.attr_prefix = weight_attr, attr_prefix

    def _run(self, graphs: Sequence[Data]) -> list[MagneticLaplacianPE]:
        return batched_magnetic_laplacian_pe(
            graphs,
            self.k,
            q=self.q,
            q_mode=self.q_mode,
            normalization=self.normalization,
            symmetrize=self.symmetrize,
            trivial=self.trivial,
            solver=self.solver,
            tol=self.tol,
            weight_attr=self.weight_attr,
        )

    def _run_one(self, graph: StackedGraphs) -> MagneticLaplacianPE:
        many = isinstance(self.q, tuple)
        qs = list(self.q) if isinstance(self.q, tuple) else [self.q]
        r = magnetic_laplacian_pe_many(
            graph,
            self.k,
            qs,
            self.q_mode,
            self.normalization,
            self.symmetrize,
            self.trivial,
            self.solver,
            self.tol,
        )[0]
        return r if many else squeeze_q(r)

    def _vectors(self, result: MagneticLaplacianPE) -> dict[str, Tensor]:
        return {"pe_real": result.real, "pe_imag": result.imag}
