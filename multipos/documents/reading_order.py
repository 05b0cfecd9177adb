r"""Reading order of the words of a page: ``given``, ``raster`` and recursive ``xycut``.

ROPE ("ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
Information Extraction", Lee et al., 2021, arXiv:2106.10786) takes the reading order as an
input; FUNSD's JSON word order is the annotation order, not a reading order, so the order is
an explicit, named choice here. Every strategy returns ``rank`` ``(N,)`` int64, a
permutation of ``0..N-1`` with ``rank[i]`` the position of word ``i`` in reading order.

* ``"given"``: the input order.
* ``"raster"``: words grouped into lines, lines top to bottom, words left to right. The page
  skew is estimated first (median angle from each word to its near right-hand neighbours,
  within 20 degrees of horizontal) and the centres are rotated back, so a slightly rotated
  scan still reads line by line. Two centres are in the same line when their deskewed
  heights differ by at most half the median word height.
* ``"xycut"``: recursive XY-cut ("Recursive X-Y cut using bounding boxes of connected
  components", Ha, Haralick, Phillips, 1995). A region is cut across every horizontal band of
  whitespace at least one median word height tall (a blank line: header / body, table rows,
  paragraphs), otherwise across every vertical band at least one median word height wide
  (columns, table columns, gaps inside a line); parts are read top to bottom or left to
  right, and a region without such gaps is read in raster order. Horizontal cuts come first,
  so a table whose rows are separated by blank lines is read row by row, and a header that
  spans two columns is read before them; two columns whose blank lines are aligned are cut
  into rows first (the known limit of XY-cut). Projections assume a deskewed page: on a
  rotated scan use ``raster``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from multipos.documents.boxes import box_centres, check_boxes
from multipos.graph.checks import check_choice

__all__ = ["READING_ORDERS", "ReadingOrder", "rank_from_order", "reading_order"]

ReadingOrder = Literal["given", "raster", "xycut"]
READING_ORDERS: tuple[str, ...] = ("given", "raster", "xycut")

_SKEW_WINDOW = math.radians(20.0)  # neighbour directions counted in the skew estimate
_LINE_TOLERANCE = 0.5  # same line: deskewed centre heights within this many word heights
_MIN_GAP = 1.0  # XY-cut: whitespace bands at least this many word heights


def rank_from_order(order: np.ndarray | Tensor) -> Tensor:
    """Invert a reading order (word ids, first read first) into ``rank`` ``(N,)`` int64."""
    order_t = torch.as_tensor(order, dtype=torch.int64)
    rank = torch.empty_like(order_t)
    rank[order_t] = torch.arange(order_t.numel(), dtype=torch.int64)
    return rank


def _scale(boxes: np.ndarray) -> float:
    """Median word height; for zero-height boxes (points) the page height over ``N``."""
    heights = boxes[:, 3] - boxes[:, 1]
    h = float(np.median(heights))
    if h > 0:
        return h
    extent = float(np.ptp(boxes[:, [1, 3]])) or float(np.ptp(boxes[:, [0, 2]]))
    return extent / boxes.shape[0] if extent > 0 else 1.0


def _skew(centres: np.ndarray) -> float:
    """Median angle (radians) from each centre to its near right-hand neighbours."""
    n = centres.shape[0]
    if n < 2:
        return 0.0
    k = min(5, n - 1)
    _, idx = cKDTree(centres).query(centres, k=k + 1)
    d = centres[idx.reshape(n, k + 1)[:, 1:]] - centres[:, None, :]  # (N, k, 2)
    angle = np.arctan2(d[..., 1], d[..., 0])
    near = (d[..., 0] > 0) & (np.abs(angle) < _SKEW_WINDOW)
    return float(np.median(angle[near])) if near.any() else 0.0


def _raster(centres: np.ndarray, ids: np.ndarray, scale: float, skew: float) -> np.ndarray:
    """Lines top to bottom, words left to right, after rotating the page by ``-skew``."""
    c, s = math.cos(skew), math.sin(skew)
    x, y = centres[ids, 0], centres[ids, 1]
    u, v = c * x + s * y, -s * x + c * y  # along the line, across the lines
    by_v = np.argsort(v, kind="stable")
    line = np.concatenate([[0], np.cumsum(np.diff(v[by_v]) > _LINE_TOLERANCE * scale)])
    line_of = np.empty(len(ids), dtype=np.int64)
    line_of[by_v] = line
    mean_v = np.bincount(line_of, weights=v) / np.bincount(line_of)
    return ids[np.lexsort((u, mean_v[line_of]))]


def _bands(lo: np.ndarray, hi: np.ndarray, gap: float) -> np.ndarray | None:
    """Band label of each interval ``[lo, hi]``, cut at empty gaps ``>= gap``; ``None`` if none."""
    order = np.argsort(lo, kind="stable")
    reach = np.maximum.accumulate(hi[order])
    cut = lo[order][1:] - reach[:-1] >= gap
    if not cut.any():
        return None
    label = np.empty(len(lo), dtype=np.int64)
    label[order] = np.concatenate([[0], np.cumsum(cut)])
    return label


def _xycut(
    boxes: np.ndarray, centres: np.ndarray, ids: np.ndarray, scale: float, skew: float
) -> list[np.ndarray]:
    if len(ids) <= 1:
        return [ids]
    gap = _MIN_GAP * scale
    b = boxes[ids]
    label = _bands(b[:, 1], b[:, 3], gap)
    if label is None:
        label = _bands(b[:, 0], b[:, 2], gap)
    if label is None:
        return [_raster(centres, ids, scale, skew)]
    parts: list[np.ndarray] = []
    for part in range(int(label.max()) + 1):
        parts += _xycut(boxes, centres, ids[label == part], scale, skew)
    return parts


def reading_order(boxes: Tensor, strategy: ReadingOrder = "raster") -> Tensor:
    r"""Reading-order rank of every word of a page.

    The order ROPE's codes are computed from ("ROPE: Reading Order Equivariant Positional
    Encoding for Graph-based Document Information Extraction", Lee et al., 2021,
    arXiv:2106.10786); strategies as in the module docstring. With ``order`` the word ids in
    reading order:

    .. math::
        \mathrm{rank}[\mathrm{order}[t]] = t, \qquad t = 0, \dots, N - 1

    Args:
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` page coordinates (y grows downwards).
        strategy: ``"given"``, ``"raster"`` or ``"xycut"``.

    Returns:
        ``rank`` ``(N,)`` int64, a permutation of ``0..N-1``.

    Raises:
        TypeError: If ``boxes`` is not a real tensor.
        ValueError: If ``boxes`` is not ``(N, 4)``, empty, not finite or has ``x1 < x0`` /
            ``y1 < y0``, or ``strategy`` is unknown.
    """
    arr = check_boxes(boxes)
    check_choice("strategy", strategy, READING_ORDERS)
    n = arr.shape[0]
    ids = np.arange(n)
    if strategy == "given" or n == 1:
        return torch.arange(n, dtype=torch.int64)
    centres = box_centres(arr)
    scale, skew = _scale(arr), _skew(centres)
    if strategy == "raster":
        return rank_from_order(_raster(centres, ids, scale, skew))
    return rank_from_order(np.concatenate(_xycut(arr, centres, ids, scale, skew)))
