"""A page's word graph with edges coloured by ROPE code, and its reading order as a path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from multipos.plot import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _boxes(ax: Axes, boxes: Tensor) -> None:
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1 in boxes.tolist():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.6, ec="0.55"))


def _frame(ax: Axes, boxes: Tensor, title: str) -> None:
    pad = 15.0
    ax.set_xlim(float(boxes[:, 0].min()) - pad, float(boxes[:, 2].max()) + pad)
    ax.set_ylim(float(boxes[:, 3].max()) + pad, float(boxes[:, 1].min()) - pad)  # y down
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (page units)")
    ax.set_ylabel("y (page units, downwards)")


def reading_order_figure(
    boxes: Tensor, edge_index: Tensor, codes: Tensor, rank: Tensor, *, title: str
) -> Figure:
    """Draw a page twice: its word graph coloured by ROPE code, and its reading order.

    Left: each directed edge ``j -> i`` is the half of segment ``ij`` next to the target
    ``i``, coloured by its signed code (so both codes of a word pair show). Right: the word
    centres joined in reading order, every word numbered by its rank.

    Args:
        boxes: ``(N, 4)`` word boxes.
        edge_index: ``(2, E)`` word graph, ``source -> target``.
        codes: ``(E,)`` signed ROPE codes.
        rank: ``(N,)`` reading-order rank.
        title: Figure title.

    Returns:
        The figure (save it with :func:`multipos.plot.save`).

    Raises:
        ImportError: If matplotlib is not installed.
    """
    from matplotlib.collections import LineCollection

    fig, (ax_graph, ax_order) = new_figure(
        title,
        "Look for: around every word the codes count its graph neighbours in reading order "
        "(blue: read before it, red: after, darker = further away), so the same neighbour "
        "pattern gets the same codes anywhere on the page; the right panel is the order the "
        "codes come from (word numbers = rank).",
        shape=(1, 2),
        size=(15.0, 6.8),
    )
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    src, dst = edge_index
    half = torch.stack([centres[dst], (centres[dst] + centres[src]) / 2], dim=1)  # (E, 2, 2)
    limit = max(int(codes.abs().max()) if codes.numel() else 1, 1)
    _boxes(ax_graph, boxes)
    lines = LineCollection(half.tolist(), cmap="RdBu_r", linewidths=1.6)
    lines.set_array(codes.float().numpy())
    lines.set_clim(-limit - 0.5, limit + 0.5)
    ax_graph.add_collection(lines)
    _frame(ax_graph, boxes, f"word graph, {edge_index.shape[1] // 2} edges, coloured by code")
    bar = fig.colorbar(lines, ax=ax_graph, shrink=0.7)
    bar.set_label("signed ROPE code of edge j -> i (drawn next to i)")

    _boxes(ax_order, boxes)
    path = centres[torch.argsort(rank)]  # (N, 2) in reading order
    ax_order.plot(path[:, 0], path[:, 1], "-", color="tab:orange", lw=1.0,
                  label="reading order (path through word centres)")  # fmt: skip
    for (x, y), r in zip(centres.tolist(), rank.tolist(), strict=True):
        ax_order.text(x, y, str(r), fontsize=6, ha="center", va="center", color="black")
    ax_order.plot(
        path[:1, 0], path[:1, 1], "o", mfc="none", mec="tab:green", ms=12, label="first word"
    )
    _frame(ax_order, boxes, "reading order: word number = rank")
    ax_order.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig
