"""The per-graph fast path of :mod:`multipos.graph.small` with its array operations in the
compiled module ``multipos.graph._small_graphs`` (``multipos/_native/small_graphs.c``, built at
install when a C compiler is there): three calls around the same eigensolver as the numpy
path, the same IEEE operations in the same order, so the same bits
(``tests/graph/test_small_kernels.py``) at a fraction of the per-graph cost. It also holds the
solver of every complex Hermitian problem of up to 96 nodes (:func:`hermitian_eigh`: the
module's own, faster than LAPACK's at this size, on every path). Without the module the
functions return ``None`` (``hermitian_eigh``: ``numpy.linalg.eigh``) and the numpy path runs.
``MULTIPOS_NATIVE=0`` turns it off. Nothing here is public.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multipos.graph.medium import FULL_EIGH_MAX_NODES

_kernels: Any
try:
    import multipos.graph._small_graphs as _small_graphs
except ImportError:  # built without a C compiler: the numpy path runs
    _kernels = None
else:
    _kernels = _small_graphs

__all__ = ["available", "hermitian_eigh", "laplacian_pe_tensors", "magnetic_pe_tensors"]

_ENABLED = os.environ.get("MULTIPOS_NATIVE", "1") != "0"


def available() -> bool:
    """Whether the compiled module is importable and enabled."""
    return _kernels is not None and _ENABLED


def hermitian_eigh(mat: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Every eigenvalue (ascending) of a complex Hermitian ``(n, n)`` matrix and the
    eigenvectors of the ``count`` lowest, ``(n, count)``: the compiled solver for
    ``n <= 96`` (Householder tridiagonalisation, implicit QL, inverse iteration; see
    ``small_graphs.c``), else, or on a non-finite entry or no convergence,
    ``numpy.linalg.eigh``. Every complex solve of a graph of up to 96 nodes goes through here
    (per graph, ``apply_many``, ``batched_*``), so a graph gets the same bits on every path;
    the first columns do not depend on ``count``."""
    n = mat.shape[-1]
    count = min(count, n)
    if available() and mat.dtype == np.complex128 and 0 < n <= FULL_EIGH_MAX_NODES and count:
        vals, vecs = np.empty(n), np.empty((n, count), dtype=np.complex128)
        if _kernels.hermitian_lowest(np.ascontiguousarray(mat), vals, vecs) == 0:
            return vals, vecs
    vals, vecs = np.linalg.eigh(mat)
    return vals, vecs[:, :count]


def _graph(edge_index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """``(a, deg, one_way, max_union)`` as :func:`multipos.graph.small._integer_graph`, or
    ``None`` where it returns ``None`` (another size or dtype, an id out of range)."""
    if not (available() and 0 < n <= FULL_EIGH_MAX_NODES and edge_index.dtype == np.int64):
        return None
    edges = np.ascontiguousarray(edge_index)
    a, deg = np.empty((n, n), dtype=np.int64), np.empty(n)
    status, one_way, max_union = _kernels.adjacency(edges, n, a, deg)
    return None if status < 0 else (a, deg, one_way, max_union)


def _outputs(n: int, k: int, names: tuple[str, ...]) -> dict[str, Tensor]:
    out = {name: torch.empty(n, k) for name in names}
    out["mask"] = torch.empty(n, k, dtype=torch.bool)
    return out


def laplacian_pe_tensors(edge_index: np.ndarray, n: int, k: int) -> dict[str, Tensor] | None:
    """:func:`~multipos.graph.small.unweighted_laplacian_pe` as the transform's float32 / bool
    attributes ``{"pe", "eigenvalues", "mask"}`` ``(n, K)``, or ``None`` where that returns
    ``None`` or the module is missing."""
    graph = _graph(edge_index, n)
    if graph is None or graph[3] > 1:  # a repeated edge: the weighted path counts components
        return None
    a, deg, _, _ = graph
    lap = np.empty((n, n))
    _kernels.laplacian(a, deg, lap)
    vals, vecs = np.linalg.eigh(lap)
    out = _outputs(n, k, ("pe", "eigenvalues"))
    _kernels.laplacian_select(
        vals,
        np.ascontiguousarray(vecs),
        deg,
        k,
        out["pe"].data_ptr(),
        out["eigenvalues"].data_ptr(),
        out["mask"].data_ptr(),
    )
    return out


def magnetic_pe_tensors(
    edge_index: np.ndarray, n: int, k: int, q: float, relative: bool
) -> dict[str, Tensor] | None:
    """:func:`~multipos.graph.small.unweighted_magnetic_pe` as the transform's attributes
    ``{"pe_real", "pe_imag", "eigenvalues", "mask"}`` ``(n, K)``, or ``None`` where that
    returns ``None`` or the module is missing."""
    graph = _graph(edge_index, n)
    if graph is None:
        return None
    a, deg, one_way, _ = graph
    q_eff = q / float(max(1, min(one_way, n))) if relative else q
    turn = 2.0 * math.pi * q_eff
    # numpy's cos and sin of +-theta, as the numpy path takes them for every one-way pair
    theta = np.array([turn, -turn])
    cos, sin = np.cos(theta), np.sin(theta)
    lap = np.empty((n, n), dtype=np.complex128)
    _kernels.magnetic(a, deg, cos[0], sin[0], cos[1], sin[1], lap)
    vals, vecs = hermitian_eigh(lap, k)
    out = _outputs(n, k, ("pe_real", "pe_imag", "eigenvalues"))
    _kernels.magnetic_select(
        vals,
        np.ascontiguousarray(vecs),
        deg,
        k,
        out["pe_real"].data_ptr(),
        out["pe_imag"].data_ptr(),
        out["eigenvalues"].data_ptr(),
        out["mask"].data_ptr(),
    )
    return out
