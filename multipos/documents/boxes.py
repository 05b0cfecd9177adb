r"""Input checks and geometry of word boxes ``(N, 4)`` ``(x0, y0, x1, y1)``.

Every public entry point of :mod:`multipos.documents` validates its boxes here before any
geometry runs, so a bad page raises an error that names the problem (shape, dtype, NaN / inf,
a corner in the wrong order, an empty page).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["box_centres", "box_sample_points", "check_boxes"]


def check_boxes(boxes: object, *, allow_empty: bool = False) -> np.ndarray:
    """Validate word boxes and return them as a float64 numpy array ``(N, 4)``.

    Args:
        boxes: ``(N, 4)`` real tensor (or array) of ``(x0, y0, x1, y1)`` page coordinates,
            ``x0 <= x1`` and ``y0 <= y1`` (a point is a box with ``x0 == x1, y0 == y1``).
        allow_empty: Accept ``N = 0``.

    Raises:
        TypeError: If ``boxes`` is not a real tensor / array.
        ValueError: If the shape is not ``(N, 4)``, the page is empty (``N = 0``, unless
            ``allow_empty``), an entry is NaN or infinite, or ``x1 < x0`` / ``y1 < y0``.
    """
    if isinstance(boxes, Tensor):
        if boxes.is_complex() or boxes.dtype == torch.bool:
            raise TypeError(f"boxes must be a real tensor, got dtype {boxes.dtype}")
        arr = boxes.detach().cpu().to(torch.float64).numpy()
    elif isinstance(boxes, np.ndarray):
        if not (np.issubdtype(boxes.dtype, np.integer) or np.issubdtype(boxes.dtype, np.floating)):
            raise TypeError(f"boxes must be a real array, got dtype {boxes.dtype}")
        arr = boxes.astype(np.float64)
    else:
        raise TypeError(f"boxes must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as (x0, y0, x1, y1), got {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError("boxes is empty (N = 0): a page needs at least one word box")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(
            f"boxes must be finite; box {int(np.flatnonzero(bad)[0])} is {arr[bad][0].tolist()} "
            f"({int(bad.sum())} boxes with NaN or inf)"
        )
    flipped = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if flipped.any():
        i = int(np.flatnonzero(flipped)[0])
        raise ValueError(
            f"boxes must satisfy x0 <= x1 and y0 <= y1; box {i} is {arr[i].tolist()} "
            f"({int(flipped.sum())} boxes with a corner in the wrong order)"
        )
    return arr


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """Centres ``(N, 2)`` of validated boxes ``(N, 4)``."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def box_sample_points(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nine points per box: the four corners, the four side midpoints and the centre.

    Returns:
        ``(points (9N, 2), owner (9N,))``: ``owner[p]`` is the box of point ``p``. Points of a
        degenerate box coincide; callers deduplicate.
    """
    x0, y0, x1, y1 = boxes.T
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    xs = np.stack([x0, x1, x1, x0, xm, x1, xm, x0, xm], axis=1)  # (N, 9)
    ys = np.stack([y0, y0, y1, y1, y0, ym, y1, ym, ym], axis=1)
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (9N, 2)
    owner = np.repeat(np.arange(boxes.shape[0]), 9)
    return points, owner
