r"""Word graphs over OCR boxes: a box-level lune beta-skeleton, or k nearest neighbours.

The beta-skeleton is the graph of "ROPE: Reading Order Equivariant Positional Encoding for
Graph-based Document Information Extraction" (Lee, Li, Wang, Hua, Fujii, Popat, 2021,
arXiv:2106.10786), after "A framework for computational morphology" (Kirkpatrick & Radke,
1985). For two points :math:`p, q` and :math:`\beta \ge 1`, the lune is the intersection of two
open discs of radius :math:`\beta \lVert p - q \rVert / 2` centred at

.. math::
    c_1 = p + \tfrac{\beta}{2}(q - p), \qquad c_2 = q + \tfrac{\beta}{2}(p - q),

and :math:`p q` is an edge when no other point lies inside the lune (``beta = 1`` is the
Gabriel graph, ``beta = 2`` the relative neighbourhood graph).

Box-level lune (how boxes, not points, are joined): every box contributes nine sample points
(corners, side midpoints, centre). Boxes ``A != B`` are joined when a sample point ``p`` of
``A`` and ``q`` of ``B`` are Delaunay neighbours among all sample points and the open lune of
``(p, q)`` contains no sample point of a third box; boxes that share a sample point (touching
corners or sides) are joined too. What holds:

* boxes that are points (``x0 == x1``, ``y0 == y1``): the graph is the lune beta-skeleton of
  the centres, which for ``1 <= beta <= 2`` contains the relative neighbourhood graph and hence
  the Euclidean minimum spanning tree of the centres (with distance ties, the tree the
  Delaunay triangulation contains);
* boxes: for ``1 <= beta <= 2`` the graph contains the point beta-skeleton of the sample points
  with each box's points merged into one node, so it is **connected**; it need not contain the
  minimum spanning tree of the box centres (a box is joined through its nearest sample
  points, not its centre). For ``beta > 2`` it can be disconnected.

Delaunay candidates make it :math:`O(N \log N)`: a 1,000-word page takes a few tens of
milliseconds.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError, cKDTree
from torch import Tensor

from multipos.documents.boxes import box_centres, box_sample_points, check_boxes
from multipos.graph.checks import check_choice, check_k

__all__ = ["WORD_GRAPHS", "WordGraph", "check_beta", "word_graph"]

WordGraph = Literal["beta_skeleton", "knn"]
WORD_GRAPHS: tuple[str, ...] = ("beta_skeleton", "knn")

# Points on the lune's boundary (within this relative distance) do not block an edge, so that
# p and q themselves and exact ties never count.
_BOUNDARY = 1e-9


def check_beta(beta: object) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a float >= 1, got {type(beta).__name__}")
    if not math.isfinite(float(beta)) or float(beta) < 1.0:
        raise ValueError(
            f"beta must be finite and >= 1 (1 = Gabriel graph, 2 = relative neighbourhood "
            f"graph), got {beta}"
        )
    return float(beta)


def _edge_tensor(a: np.ndarray, b: np.ndarray) -> Tensor:
    """Undirected, deduplicated, sorted ``(2, E)`` int64 without self-loops."""
    keep = a != b
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    n = int(max(a.max(initial=0), b.max(initial=0))) + 1
    key = np.unique(np.concatenate([a * n + b, b * n + a]))  # sorted by (row, col)
    return torch.from_numpy(np.stack([key // n, key % n])).reshape(2, -1)


def _knn(centres: np.ndarray, k: int) -> Tensor:
    n = centres.shape[0]
    kk = min(k, n - 1)
    _, idx = cKDTree(centres).query(centres, k=kk + 1)
    idx = idx.reshape(n, kk + 1)
    # Drop the word itself; with duplicate centres it may not come first.
    not_self = idx != np.arange(n)[:, None]
    first = np.cumsum(not_self, axis=1) <= kk
    keep = not_self & first
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    return _edge_tensor(rows[keep], idx[keep])


def _candidates(points: np.ndarray) -> np.ndarray:
    """Delaunay edges ``(M, 2)`` of distinct points; a path when they are collinear."""
    n = points.shape[0]
    if n < 3:
        return np.array([[0, 1]]) if n == 2 else np.zeros((0, 2), dtype=np.int64)
    try:
        simplices = Delaunay(points).simplices  # (T, 3)
    except QhullError:  # all collinear: the skeleton is the path along the line
        order = np.lexsort((points[:, 1], points[:, 0]))
        return np.stack([order[:-1], order[1:]], axis=1)
    edges = np.sort(
        np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]]), axis=1
    ).astype(np.int64)
    key = np.unique(edges[:, 0] * n + edges[:, 1])
    return np.stack([key // n, key % n], axis=1)


def _beta_skeleton(boxes: np.ndarray, beta: float) -> Tensor:
    points, owner = box_sample_points(boxes)
    order = np.lexsort((points[:, 1], points[:, 0]))
    new = np.ones(len(order), dtype=bool)
    new[1:] = (np.diff(points[order], axis=0) != 0).any(axis=1)
    upts = points[order[new]]
    inv = np.empty(len(order), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    # Owners of each distinct point: the smallest, the largest and how many distinct ones.
    n = boxes.shape[0]
    key = np.unique(inv * n + owner)
    pairs = np.stack([key // n, key % n], axis=1)
    count = np.bincount(pairs[:, 0], minlength=len(upts))
    low = np.full(len(upts), np.iinfo(np.int64).max)
    high = np.full(len(upts), -1)
    np.minimum.at(low, pairs[:, 0], pairs[:, 1])
    np.maximum.at(high, pairs[:, 0], pairs[:, 1])
    # Boxes that share a sample point touch: join every pair of them.
    shared = [pairs[pairs[:, 0] == u, 1] for u in np.flatnonzero(count > 1)]
    touch = [np.stack(np.meshgrid(s, s), axis=-1).reshape(-1, 2) for s in shared]

    cand = _candidates(upts)
    box_a, box_b = low[cand[:, 0]], low[cand[:, 1]]
    cand = cand[box_a != box_b]
    box_a, box_b = low[cand[:, 0]], low[cand[:, 1]]
    p, q = upts[cand[:, 0]], upts[cand[:, 1]]
    radius = beta * np.linalg.norm(q - p, axis=1) / 2 * (1 - _BOUNDARY)
    c1 = p + beta / 2 * (q - p)
    c2 = q + beta / 2 * (p - q)
    inside = cKDTree(upts).query_ball_point(c1, radius)
    lengths = np.fromiter((len(x) for x in inside), dtype=np.int64, count=len(inside))
    edge = np.repeat(np.arange(len(cand)), lengths)
    r = np.fromiter((i for x in inside for i in x), dtype=np.int64, count=int(lengths.sum()))
    in_lune = np.sum((upts[r] - c2[edge]) ** 2, axis=1) < radius[edge] ** 2
    a, b = box_a[edge], box_b[edge]
    lo, hi, cnt = low[r], high[r], count[r]
    # r blocks the edge (A, B) when one of its boxes is neither A nor B.
    own = ((lo == a) | (lo == b)) & ((hi == a) | (hi == b)) & (cnt <= 2)
    blocked = np.zeros(len(cand), dtype=bool)
    np.logical_or.at(blocked, edge[in_lune & ~own], True)
    keep_a, keep_b = box_a[~blocked], box_b[~blocked]
    if touch:
        t = np.concatenate(touch)
        keep_a, keep_b = np.concatenate([keep_a, t[:, 0]]), np.concatenate([keep_b, t[:, 1]])
    return _edge_tensor(keep_a, keep_b)


def word_graph(
    boxes: Tensor,
    method: WordGraph = "beta_skeleton",
    beta: float = 1.0,
    k: int = 8,
) -> Tensor:
    r"""Undirected word graph over OCR boxes, both directions listed.

    From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
    Information Extraction" (Lee et al., 2021, arXiv:2106.10786): a beta-skeleton over word
    boxes; see the module docstring for the box-level lune and what it guarantees
    (connected for ``1 <= beta <= 2``):

    .. math::
        (A, B) \in E \iff \exists\, p \in S_A, q \in S_B:\ \mathrm{lune}_\beta(p, q) \cap
        \textstyle\bigcup_{C \ne A, B} S_C = \emptyset

    with :math:`S_A` the nine sample points of box ``A``. ``method="knn"`` joins every word to
    its ``k`` nearest box centres (symmetrised; it can be disconnected).

    Args:
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` page coordinates, float or int.
        method: ``"beta_skeleton"`` or ``"knn"``.
        beta: Lune parameter of the skeleton, ``>= 1``.
        k: Neighbours per word for ``"knn"`` (capped at ``N - 1``).

    Returns:
        ``edge_index`` ``(2, E)`` int64, sorted, each undirected edge in both directions, no
        self-loops; ``(2, 0)`` for a one-word page.

    Raises:
        TypeError: If ``boxes`` is not a real tensor, ``beta`` not a float or ``k`` not an int.
        ValueError: If ``boxes`` is not ``(N, 4)``, empty, not finite or has ``x1 < x0`` /
            ``y1 < y0``; if ``method`` is unknown, ``beta < 1`` or ``k < 1``.
    """
    arr = check_boxes(boxes)
    check_choice("method", method, WORD_GRAPHS)
    beta = check_beta(beta)
    k = check_k(k)
    if arr.shape[0] == 1:
        return torch.zeros(2, 0, dtype=torch.int64)
    if method == "knn":
        return _knn(box_centres(arr), k)
    return _beta_skeleton(arr, beta)
