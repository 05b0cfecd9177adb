r"""Word features that need no downloaded model: hashed character n-grams and box geometry.

Text: each word, lower-cased and wrapped as ``<word>``, is cut into its character n-grams
(``n = 1..3``); each n-gram is hashed with CRC-32 (stable across processes, unlike Python's
``hash``) into one of ``dim`` buckets with a hashed sign, and the count vector is
L2-normalised (the "hashing trick", Weinberger et al., "Feature Hashing for Large Scale
Multitask Learning", 2009, arXiv:0902.2206):

.. math::
    t_w[b] = \sum_{g \in \mathrm{ngrams}(w),\ h(g) \bmod \mathrm{dim} = b} s(g), \qquad
    t_w \leftarrow t_w / \lVert t_w \rVert_2

Boxes: ``(x0, y0, x1, y1, width, height)`` divided by the page extent (the largest ``x1``
and ``y1``), so they lie in ``[0, 1]``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from multipos.documents.boxes import check_boxes

__all__ = ["box_features", "text_features"]


def _ngrams(word: str, sizes: Sequence[int]) -> list[str]:
    w = f"<{word.lower()}>"
    return [w[i : i + n] for n in sizes for i in range(len(w) - n + 1)]


def text_features(
    words: Sequence[str], dim: int = 256, ngram: tuple[int, ...] = (1, 2, 3)
) -> Tensor:
    r"""Hashed character n-gram features ``(N, dim)`` float32 of ``N`` words.

    From "Feature Hashing for Large Scale Multitask Learning" (Weinberger et al., 2009,
    arXiv:0902.2206), on the character n-grams of each word (see the module docstring).

    Args:
        words: ``N`` strings (an empty string gives the features of ``"<>"``).
        dim: Number of hash buckets.
        ngram: The n-gram lengths.

    Returns:
        ``(N, dim)`` float32, each row of unit L2 norm.

    Raises:
        TypeError: If ``words`` is not a sequence of strings or ``dim`` not an int.
        ValueError: If ``dim < 1`` or an n-gram length is not a positive int.
    """
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise TypeError("words must be a sequence of strings")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be a positive int, got {type(dim).__name__}")
    if dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim}")
    if not ngram or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ngram):
        raise ValueError(f"ngram must be positive ints, got {ngram!r}")
    out = np.zeros((len(words), dim), dtype=np.float64)
    for i, word in enumerate(words):
        for g in _ngrams(word, ngram):
            h = zlib.crc32(g.encode("utf-8"))
            out[i, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return torch.from_numpy(out / np.where(norm > 0, norm, 1.0)).to(torch.float32)


def box_features(boxes: Tensor) -> Tensor:
    r"""Box geometry ``(N, 6)`` float32 in page units: ``x0, y0, x1, y1, width, height``.

    .. math::
        f_i = (x_0, y_0, x_1, y_1, x_1 - x_0, y_1 - y_0) \oslash (W, H, W, H, W, H), \quad
        W = \max_i x_{1,i},\ H = \max_i y_{1,i}

    Raises:
        TypeError / ValueError: On invalid boxes (see :func:`check_boxes`).
    """
    arr = check_boxes(boxes)
    width = max(float(arr[:, 2].max()), 1e-9)
    height = max(float(arr[:, 3].max()), 1e-9)
    feats = np.concatenate([arr, arr[:, 2:] - arr[:, :2]], axis=1)  # (N, 6)
    feats /= np.array([width, height, width, height, width, height])
    return torch.from_numpy(feats).to(torch.float32)
