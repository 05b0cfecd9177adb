r"""Synthetic forms: a header, rows of question / answer fields in columns, a footer.

For tests, examples and the demo, where FUNSD (research use only) must not be shipped. A
page is 800 x 1000 units (y grows downwards); word boxes are ``9 * len(word) + 6`` wide and
14 tall, and ``skew_degrees`` rotates the page about its centre (boxes are the axis-aligned
bounds of the rotated words). ``rank`` is the order the page was written in: header, then
row by row, each row's columns left to right, each field question then answer, footer last.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SyntheticForm", "synthetic_form"]

_VOCAB = (
    "name", "date", "phone", "fax", "to", "from", "total", "brand", "code", "account",
    "region", "amount", "signed", "no.", "ref", "city", "state", "zip", "title", "cost",
)  # fmt: skip
_HEIGHT, _SPACE, _CHAR = 14.0, 8.0, 9.0


class SyntheticForm(NamedTuple):
    """A synthetic page.

    Attributes:
        boxes: ``(N, 4)`` float32 ``(x0, y0, x1, y1)``.
        words: ``N`` strings.
        labels: ``(N,)`` int64 index into ``("header", "question", "answer", "other")``.
        rank: ``(N,)`` int64 reading-order rank of the page as written.
    """

    boxes: Tensor
    words: list[str]
    labels: Tensor
    rank: Tensor


def synthetic_form(
    generator: torch.Generator | None = None,
    *,
    rows: int = 6,
    columns: int = 2,
    skew_degrees: float = 0.0,
) -> SyntheticForm:
    """Draw a synthetic form (see the module docstring); words and lengths are random.

    Args:
        generator: Source of randomness (``None``: a fixed seed 0, so the page is the same
            on every call).
        rows: Field rows per column, ``>= 1``.
        columns: Field columns, 1 to 3.
        skew_degrees: Page rotation in degrees, ``|skew| <= 10``.

    Raises:
        ValueError: If ``rows``, ``columns`` or ``skew_degrees`` is out of range.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive int, got {rows!r}")
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= 3:
        raise ValueError(f"columns must be 1, 2 or 3, got {columns!r}")
    if not math.isfinite(skew_degrees) or abs(skew_degrees) > 10:
        raise ValueError(f"skew_degrees must lie in [-10, 10], got {skew_degrees}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def pick(k: int) -> list[str]:
        return [_VOCAB[int(i)] for i in torch.randint(len(_VOCAB), (k,), generator=g)]

    words: list[str] = []
    labels: list[int] = []
    corners: list[tuple[float, float, float, float]] = []

    def line(tokens: list[str], label: int, x: float, y: float) -> float:
        for t in tokens:
            w = _CHAR * len(t) + 6
            words.append(t)
            labels.append(label)
            corners.append((x, y, x + w, y + _HEIGHT))
            x += w + _SPACE
        return x

    header = pick(3)
    width = sum(_CHAR * len(t) + 6 + _SPACE for t in header)
    line(header, 0, 400 - width / 2, 40.0)
    col_width = 720 / columns
    for r in range(rows):
        y = 110.0 + 44.0 * r
        for col in range(columns):
            x = line([*pick(1), ":"], 1, 40 + col * col_width, y)
            line(pick(1 + int(torch.randint(2, (1,), generator=g))), 2, x + 12, y)
    line(pick(4), 3, 40.0, 110.0 + 44.0 * rows + 40)

    box = torch.tensor(corners, dtype=torch.float64)  # (N, 4)
    theta = math.radians(skew_degrees)
    c, s = math.cos(theta), math.sin(theta)
    xs = box[:, [0, 2, 2, 0]] - 400.0  # (N, 4 corners)
    ys = box[:, [1, 1, 3, 3]] - 500.0
    rx, ry = c * xs - s * ys + 400.0, s * xs + c * ys + 500.0
    boxes = torch.stack([rx.amin(1), ry.amin(1), rx.amax(1), ry.amax(1)], dim=1)
    n = len(words)
    return SyntheticForm(
        boxes.to(torch.float32),
        words,
        torch.tensor(labels, dtype=torch.int64),
        torch.arange(n, dtype=torch.int64),
    )
