"""Hand-made page layouts with their expected reading order, and random boxes."""

from __future__ import annotations

import math

import torch

H = 10.0  # word height


def words_line(x: float, y: float, n: int, width: float = 30.0, space: float = 5.0) -> list:
    return [[x + i * (width + space), y, x + i * (width + space) + width, y + H] for i in range(n)]


def two_columns() -> tuple[torch.Tensor, list[int]]:
    """Two columns of 4 lines x 3 words, lines aligned, line gap 0.4 H, gutter 8 H."""
    left = [b for r in range(4) for b in words_line(0, r * 14, 3)]
    right = [b for r in range(4) for b in words_line(180, r * 14, 3)]
    # expected: left column line by line, then the right column
    return torch.tensor(left + right), list(range(24))


def table() -> tuple[torch.Tensor, list[int]]:
    """A 3 x 3 table, rows separated by 1.5 H of whitespace, columns by 6 H."""
    cells = [[c * 90, r * 25, c * 90 + 30, r * 25 + H] for r in range(3) for c in range(3)]
    return torch.tensor(cells, dtype=torch.float32), list(range(9))


def header_over_columns() -> tuple[torch.Tensor, list[int]]:
    """A header line spanning the gutter, 2 H above two columns of 3 lines x 2 words."""
    header = words_line(60, 0, 3, width=40)
    left = [b for r in range(3) for b in words_line(0, 30 + r * 14, 2)]
    right = [b for r in range(3) for b in words_line(180, 30 + r * 14, 2)]
    return torch.tensor(header + left + right), list(range(15))


def rotated_page(degrees: float = 3.0) -> tuple[torch.Tensor, list[int]]:
    """One column of 6 lines x 8 words rotated by ``degrees`` about the origin."""
    words = [b for r in range(6) for b in words_line(0, r * 16, 8)]
    t = math.radians(degrees)
    out = []
    for x0, y0, x1, y1 in words:
        xs = [x0, x1, x1, x0]
        ys = [y0, y0, y1, y1]
        rx = [math.cos(t) * x - math.sin(t) * y for x, y in zip(xs, ys, strict=True)]
        ry = [math.sin(t) * x + math.cos(t) * y for x, y in zip(xs, ys, strict=True)]
        out.append([min(rx), min(ry), max(rx), max(ry)])
    return torch.tensor(out), list(range(len(words)))


def random_boxes(generator: torch.Generator, n: int, points: bool = False) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([800, 1000])
    if points:
        return torch.cat([xy, xy], dim=1)
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([60, 10]) + 2
    return torch.cat([xy, xy + wh], dim=1)


def shuffled(boxes: torch.Tensor, expected: list[int], generator: torch.Generator):
    """The same page with its words listed in a random order, and the expected rank."""
    perm = torch.randperm(boxes.shape[0], generator=generator)
    rank = torch.empty(boxes.shape[0], dtype=torch.int64)
    rank[torch.tensor(expected)] = torch.arange(boxes.shape[0])
    return boxes[perm], rank[perm]
