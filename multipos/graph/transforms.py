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

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from multipos.graph.batched import (
    DEFAULT_WEIGHT_ATTR,
    batched_laplacian_pe,
    batched_magnetic_laplacian_pe,
    one_graph,
    unpack_graph,
)
from multipos.graph.checks import check_choice, check_eigen_options, check_q
from multipos.graph.eigensolvers import Eigenpairs
from multipos.graph.laplacian import LaplacianPE
from multipos.graph.magnetic import MagneticLaplacianPE
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
from multipos.graph.small import unweighted_laplacian_pe, unweighted_magnetic_pe
from multipos.graph.small_kernels import laplacian_pe_tensors, magnetic_pe_tensors
from multipos.graph.spectral import eigen_pe_many
from multipos.graph.transform_base import Transform, check_data, check_name, check_prefix
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


def _set(data: Data, prefix: str, tensors: dict[str, Tensor]) -> Data:
    for suffix, tensor in tensors.items():
        data[f"{prefix}_{suffix}"] = tensor
    return data


def _repeat_rows(x: np.ndarray, n: int) -> Tensor:
    """``x`` repeated on ``n`` nodes, ``(n, *x.shape)``, as a tensor."""
    return torch.from_numpy(np.repeat(x[None], n, axis=0))


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

    def _potentials(self) -> tuple[list[float | None], str]:
        """The potentials ``q`` of :func:`eigen_pe_many` (``None``: the real Laplacian)."""
        raise NotImplementedError

    def _write_one(self, data: Data, pairs: list[Eigenpairs]) -> None:
        """Set the attributes of one graph from its eigenpairs (one per potential)."""
        raise NotImplementedError

    def _unweighted(self, data: Any) -> tuple[np.ndarray, int] | None:
        """``(edge_index, num_nodes)`` as numpy when ``data`` can take a per-graph fast path
        (no weights read, CPU ids, one torch thread, a dense solver), else ``None``."""
        ei = getattr(data, "edge_index", None)
        n = getattr(data, "num_nodes", None) if isinstance(data, Data) else None
        if (
            type(n) is int
            and isinstance(ei, Tensor)
            and ei.dim() == 2
            and ei.shape[0] == 2
            and ei.device.type == "cpu"
            and (self.weight_attr is None or getattr(data, self.weight_attr, None) is None)
            and self.weight_attr in (None, DEFAULT_WEIGHT_ATTR)
            and self.solver in ("auto", "dense")
            and torch.get_num_threads() == 1
        ):
            return ei.numpy(), n
        return None

    def forward(self, data: Data) -> Data:
        # The per-graph path (a dataset's pre_transform): straight from the eigenpairs to the
        # attributes, the same values as apply_many's.
        graph = one_graph(*unpack_graph(check_data(data), self.weight_attr))
        qs, q_mode = self._potentials()
        pairs = eigen_pe_many(
            graph,
            self.k,
            self.normalization,
            self.symmetrize,
            self.trivial,
            self.solver,
            self.tol,
            qs,
            q_mode,
        )[0]
        self._write_one(data, pairs)
        return data

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

    def _potentials(self) -> tuple[list[float | None], str]:
        return [None], "absolute"

    def forward(self, data: Data) -> Data:
        # The defaults on an unweighted graph of up to 96 nodes on one thread (a molecule
        # dataset's pre_transform): straight from edge_index to the attributes, the same bits
        # as the general path, which takes every other case.
        graph = self._unweighted(data)
        if graph is not None and (self.normalization, self.symmetrize, self.trivial) == (
            "sym",
            "union",
            "drop",
        ):
            tensors = laplacian_pe_tensors(graph[0], graph[1], self.k)
            if tensors is not None:
                return _set(data, self.attr_prefix, tensors)
            out = unweighted_laplacian_pe(graph[0], graph[1], self.k)
            if out is not None:
                self._write_one(data, [Eigenpairs(*out)])
                return data
        return super().forward(data)

    def _write_one(self, data: Data, pairs: list[Eigenpairs]) -> None:
        r, p = pairs[0], self.attr_prefix
        data[f"{p}_pe"] = torch.from_numpy(r.vectors.astype(np.float32))
        data[f"{p}_eigenvalues"] = _repeat_rows(r.values.astype(np.float32), r.vectors.shape[0])
        data[f"{p}_mask"] = _repeat_rows(r.mask, r.vectors.shape[0])

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

    def _potentials(self) -> tuple[list[float | None], str]:
        qs = list(self.q) if isinstance(self.q, tuple) else [self.q]
        return [None if q == 0.0 else q for q in qs], self.q_mode  # q = 0: the real path

    def forward(self, data: Data) -> Data:
        # The defaults with one potential on an unweighted graph of up to 96 nodes: as
        # AddLaplacianPE's fast path, the same bits as the general path.
        graph = self._unweighted(data)
        if (
            graph is not None
            and not isinstance(self.q, tuple)
            and self.q != 0.0
            and (self.normalization, self.symmetrize, self.trivial) == ("sym", "union", "keep")
        ):
            relative = self.q_mode == "relative"
            tensors = magnetic_pe_tensors(*graph, self.k, self.q, relative)
            if tensors is not None:
                return _set(data, self.attr_prefix, tensors)
            out = unweighted_magnetic_pe(*graph, self.k, self.q, relative)
            if out is not None:
                self._write_one(data, [Eigenpairs(*out)])
                return data
        return super().forward(data)

    def _write_one(self, data: Data, pairs: list[Eigenpairs]) -> None:
        p, n = self.attr_prefix, pairs[0].vectors.shape[0]
        if isinstance(self.q, tuple):  # a Q axis: (N, Q, K)
            vecs = np.stack([r.vectors for r in pairs], axis=1)
            values = np.stack([r.values for r in pairs])
            mask = np.stack([r.mask for r in pairs])
        else:
            vecs, values, mask = pairs[0].vectors, pairs[0].values, pairs[0].mask
        data[f"{p}_pe_real"] = torch.from_numpy(np.real(vecs).astype(np.float32))
        data[f"{p}_pe_imag"] = torch.from_numpy(np.imag(vecs).astype(np.float32))
        data[f"{p}_eigenvalues"] = _repeat_rows(values.astype(np.float32), n)
        data[f"{p}_mask"] = _repeat_rows(mask, n)

    def _vectors(self, result: MagneticLaplacianPE) -> dict[str, Tensor]:
        return {"pe_real": result.real, "pe_imag": result.imag}
