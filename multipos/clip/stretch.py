r"""Stretching a learned absolute position table to a longer text context.

Two table-level methods, both pure functions of the ``(L0, D)`` table of a CLIP text tower
(``L0 = 77`` for OpenAI/LAION CLIP):

* :func:`linear_stretch` resamples every row (open_clip's own ``resize_text_pos_embed``);
* :func:`kps_stretch` is Long-CLIP's knowledge-preserved stretching: the first ``keep`` rows
  are copied, the rest are linearly interpolated by a stretch factor.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = ["StretchMethod", "kps_stretch", "linear_stretch", "stretch_positional_table"]

StretchMethod = Literal["linear", "kps"]
STRETCH_METHODS: tuple[str, ...] = get_args(StretchMethod)


def _check_table(table: Tensor, length: int) -> None:
    if not isinstance(table, Tensor):
        raise TypeError(f"table must be a tensor, got {type(table).__name__}")
    if table.dim() != 2 or table.shape[0] < 1:
        raise ValueError(f"table must be (L0, D) with L0 >= 1, got shape {tuple(table.shape)}")
    if not table.is_floating_point():
        raise TypeError(f"table must be floating point, got {table.dtype}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")


def _sample_rows(table: Tensor, source: Tensor) -> Tensor:
    """Rows of ``table`` at fractional positions ``source`` (float64, ``(N,)``).

    Positions between rows are linearly interpolated; positions past the last row continue the
    last segment's slope. Integer positions inside the table return the row bit for bit.
    """
    rows = table.shape[0]
    if rows == 1:
        return table[:1].expand(source.shape[0], -1).clone()
    floor = source.floor()
    lo = floor.clamp(0, rows - 2).long()
    frac = (source - lo.to(source.dtype)).to(table.dtype).unsqueeze(-1)
    below, above = table[lo], table[lo + 1]
    mixed = below + frac * (above - below)
    exact = (source == floor) & (floor >= 0) & (floor <= rows - 1)
    exact_rows = table[floor.clamp(0, rows - 1).long()]
    return torch.where(exact.unsqueeze(-1), exact_rows, mixed)


def linear_stretch(table: Tensor, length: int) -> Tensor:
    r"""Resample a position table to ``length`` rows by linear interpolation.

    The baseline that Long-CLIP ("Long-CLIP: Unlocking the Long-Text Capability of CLIP",
    Zhang, Zhang, Dong, Zang, Wang, 2024, arXiv:2403.15378) compares against, and what
    open_clip's ``resize_text_pos_embed`` does (``F.interpolate(mode="linear",
    align_corners=False)``). Row ``i`` of the result reads the old table at

    .. math::
        s_i = \operatorname{clip}\Big((i + \tfrac12)\,\frac{L_0}{N} - \tfrac12,\; 0,\; L_0 - 1\Big)

    so only row 0 (and, when stretching, the rows whose :math:`s_i` clamps to 0) is kept bit for
    bit: every other row moves, which is why this method is *not* prefix-preserving.

    Args:
        table: ``(L0, D)`` float table.
        length: New number of rows ``N``.

    Returns:
        ``(N, D)`` in the dtype of ``table``.

    Raises:
        TypeError: If ``table`` is not a floating-point tensor.
        ValueError: If ``table`` is not 2-D or ``length < 1``.
    """
    _check_table(table, length)
    # (L0, D) -> (1, D, L0) -> (1, D, N) -> (N, D)
    grid = table.detach().t().unsqueeze(0)
    out = torch.nn.functional.interpolate(grid, size=length, mode="linear", align_corners=False)
    return out[0].t().contiguous().to(table.dtype)


def kps_stretch(
    table: Tensor, length: int, *, keep: int = 20, stretch: float | None = None
) -> Tensor:
    r"""Long-CLIP knowledge-preserved stretching of a position table.

    From "Long-CLIP: Unlocking the Long-Text Capability of CLIP" (Beichen Zhang, Pan Zhang,
    Xiaoyi Dong, Yuhang Zang, Jiaqi Wang, ECCV 2024, arXiv:2403.15378), Sec. 3.1: the first
    ``keep`` rows (the well-trained ones) are kept and the remaining rows are stretched by a
    factor :math:`r`:

    .. math::
        P'_i = P_i \quad (i < k), \qquad
        P'_i = P_{\lfloor s_i \rfloor} + (s_i - \lfloor s_i \rfloor)
               (P_{\lfloor s_i \rfloor + 1} - P_{\lfloor s_i \rfloor}),
        \quad s_i = k + \frac{i - k}{r} \quad (k \le i < N)

    with :math:`k` = ``keep`` and, by default, :math:`r = (N - k) / (L_0 - k)`; positions
    :math:`s_i > L_0 - 1` continue the slope of the last segment (linear extrapolation). With
    :math:`L_0 = 77`, :math:`k = 20` and :math:`N = 248` this is the released Long-CLIP table
    (:math:`r = 4`, rows :math:`20 + 4j` equal old rows :math:`20 + j`, the last three source
    positions extrapolated). Rows ``< keep`` are copied bit for bit, so a caption of at most
    ``keep`` tokens (with start and end tokens) is embedded exactly as before.

    Args:
        table: ``(L0, D)`` float table.
        length: New number of rows ``N``.
        keep: Rows copied unchanged, ``0 <= keep <= L0 - 2`` (Long-CLIP: 20).
        stretch: Stretch factor :math:`r > 0`; ``None`` fills ``N`` rows from the ``L0 - keep``
            old ones.

    Returns:
        ``(N, D)`` in the dtype of ``table``.

    Raises:
        TypeError: If ``table`` is not a floating-point tensor.
        ValueError: If ``table`` is not 2-D, ``length < 1``, ``keep`` is out of range or
            ``stretch`` is not positive.
    """
    _check_table(table, length)
    rows = table.shape[0]
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= rows - 2:
        raise ValueError(
            f"keep must be an int in [0, L0 - 2] = [0, {rows - 2}] for a table of {rows} rows, "
            f"got {keep!r}"
        )
    if stretch is None:
        stretch = (length - keep) / (rows - keep)
    if not (isinstance(stretch, (int, float)) and math.isfinite(stretch) and stretch > 0):
        raise ValueError(f"stretch must be a positive finite number, got {stretch!r}")
    table = table.detach()
    if length <= keep:
        return table[:length].clone()
    i = torch.arange(keep, length, dtype=torch.float64, device=table.device)
    source = keep + (i - keep) / float(stretch)
    return torch.cat((table[:keep], _sample_rows(table, source)), dim=0)


def stretch_positional_table(
    table: Tensor,
    length: int,
    method: StretchMethod = "kps",
    *,
    keep: int = 20,
    stretch: float | None = None,
) -> Tensor:
    """Stretch ``table: (L0, D)`` to ``(length, D)`` with ``method`` ``"linear"`` or ``"kps"``.

    See :func:`linear_stretch` and :func:`kps_stretch` (``keep`` and ``stretch`` apply to
    ``"kps"`` only).

    Raises:
        ValueError: If ``method`` is unknown, or as the chosen function.
    """
    if method == "linear":
        return linear_stretch(table, length)
    if method == "kps":
        return kps_stretch(table, length, keep=keep, stretch=stretch)
    raise ValueError(f"method must be one of {STRETCH_METHODS}, got {method!r}")
