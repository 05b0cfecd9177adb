r"""Input checks of the graph PEs: options, sizes, the potential ``q`` and edge lists.

Every public entry point validates here before any math runs, so a bad argument raises a
``TypeError`` / ``ValueError`` that names it and its valid values. :func:`graph_arrays` also
converts one graph to the numpy arrays the operators are built from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from multipos.graph.options import NORMALIZATION, SOLVERS, SYMMETRIZE, TRIVIAL

__all__ = [
    "GraphArrays",
    "check_choice",
    "check_eigen_options",
    "check_k",
    "check_q",
    "check_tol",
    "graph_arrays",
]


class GraphArrays(NamedTuple):
    """One validated graph as numpy arrays.

    Attributes:
        row: Source nodes, ``(E,)`` int64.
        col: Target nodes, ``(E,)`` int64.
        weight: Edge weights, ``(E,)`` float64, finite and non-negative.
        num_nodes: ``N``.
    """

    row: np.ndarray
    col: np.ndarray
    weight: np.ndarray
    num_nodes: int


def check_choice(name: str, value: object, options: Sequence[str]) -> None:
    """Check that option ``name`` is one of ``options``.

    Raises:
        ValueError: If ``value`` is not one of ``options`` (the message lists them).
    """
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")


def check_k(k: object) -> int:
    """Check the number of eigenvectors ``K``.

    Raises:
        TypeError: If ``k`` is not an int.
        ValueError: If ``k < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a positive int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be a positive int, got {k}")
    return k


def check_tol(tol: object) -> float:
    """Check the tolerance of the sparse eigensolvers.

    Raises:
        TypeError: If ``tol`` is not a real number.
        ValueError: If ``tol`` is outside ``[0, 1)``.
    """
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a float, got {type(tol).__name__}")
    if not (0.0 <= float(tol) < 1.0):
        raise ValueError(f"tol must lie in [0, 1), got {tol}")
    return float(tol)


def check_eigen_options(
    k: object,
    normalization: object,
    symmetrize: object,
    trivial: object,
    solver: object,
    tol: object,
    symmetrize_options: Sequence[str] = SYMMETRIZE,
) -> None:
    """Check the options shared by the Laplacian and magnetic Laplacian PEs.

    Raises:
        TypeError: If ``k`` or ``tol`` has the wrong type.
        ValueError: If a value is out of range or not one of its choices.
    """
    check_k(k)
    check_choice("normalization", normalization, NORMALIZATION)
    check_choice("symmetrize", symmetrize, symmetrize_options)
    check_choice("trivial", trivial, TRIVIAL)
    check_choice("solver", solver, SOLVERS)
    check_tol(tol)


def check_q(q: object) -> tuple[list[float], bool]:
    """Check the magnetic potential: a float or a non-empty sequence of floats ``>= 0``.

    Returns:
        ``(list of q, is_sequence)``.

    Raises:
        TypeError: If ``q`` or one of its entries is not a real number.
        ValueError: If ``q`` is empty, negative or not finite.
    """
    many = isinstance(q, (Sequence, Tensor, np.ndarray)) and not isinstance(q, str)
    values = list(q) if many else [q]  # type: ignore[call-overload]
    if not values:
        raise ValueError("q must be a float or a non-empty sequence of floats")
    out = []
    for v in values:
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"q must be a float or a sequence of floats, got {q!r}")
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"q must be finite and >= 0, got {v}")
        out.append(float(v))
    return out, many


def graph_arrays(
    edge_index: Tensor, num_nodes: int | None, edge_weight: Tensor | None
) -> GraphArrays:
    """Validate one graph and return it as numpy ``(row, col, weight, num_nodes)``.

    Args:
        edge_index: ``(2, E)`` integer tensor.
        num_nodes: ``N``; ``max(edge_index) + 1`` when ``None``.
        edge_weight: Optional ``(E,)`` real, finite, non-negative weights (default all 1).

    Raises:
        TypeError: If ``edge_index`` is not an integer tensor, ``num_nodes`` not an int or
            ``edge_weight`` not a real tensor.
        ValueError: If a shape is wrong, an index lies outside ``[0, N)`` or a weight is
            negative or not finite.
    """
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    ei = edge_index.detach().cpu().to(torch.int64).numpy()
    if num_nodes is None:
        num_nodes = int(ei.max()) + 1 if ei.size else 0
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(f"num_nodes must be an int, got {type(num_nodes).__name__}")
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(
            f"edge_index entries must lie in [0, num_nodes={num_nodes}); "
            f"got range [{ei.min()}, {ei.max()}]"
        )
    num_edges = ei.shape[1]
    if edge_weight is None:
        w = np.ones(num_edges, dtype=np.float64)
    else:
        if not isinstance(edge_weight, Tensor):
            raise TypeError(
                f"edge_weight must be a torch.Tensor or None, got {type(edge_weight).__name__}"
            )
        if edge_weight.shape != (num_edges,):
            raise ValueError(
                f"edge_weight must have shape (E,) = ({num_edges},), got {tuple(edge_weight.shape)}"
            )
        if edge_weight.is_complex() or edge_weight.dtype == torch.bool:
            raise TypeError(f"edge_weight must be real, got {edge_weight.dtype}")
        w = edge_weight.detach().cpu().to(torch.float64).numpy()
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("edge_weight must be finite and non-negative")
    return GraphArrays(ei[0], ei[1], w, num_nodes)
