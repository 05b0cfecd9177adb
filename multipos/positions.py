r"""Position builders: patch grids (2-D/3-D, prefix tokens kept apart) and token sequences.

Positions are always an explicit tensor ``(A, ..., L)``: ``A`` axes, float allowed. A grid is
never inferred from a token count.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "GridNormalize",
    "GridPositions",
    "build_grid_positions",
    "build_sequence_positions",
]

GridNormalize = Literal["index", "unit", "symmetric"]
GRID_NORMALIZE: tuple[str, ...] = get_args(GridNormalize)


@dataclass(frozen=True)
class GridPositions:
    """Positions of the patch tokens of a grid, with the prefix tokens kept apart.

    Attributes:
        patches: ``(A, N)`` float32 coordinates of the ``N = prod(shape)`` patch tokens in
            row-major order (axis 0 slowest: rows for 2-D, time for 3-D).
        shape: The grid, e.g. ``(H, W)`` or ``(T, H, W)``.
        num_prefix_tokens: Tokens before the patches (class token, registers) that have no
            grid position.
    """

    patches: Tensor
    shape: tuple[int, ...]
    num_prefix_tokens: int

    @property
    def num_axes(self) -> int:
        return len(self.shape)

    @property
    def num_tokens(self) -> int:
        """Prefix tokens plus patch tokens."""
        return self.num_prefix_tokens + self.patches.shape[-1]

    def with_prefix(self, value: float = 0.0) -> Tensor:
        """``(A, P + N)``: prefix tokens placed at ``value`` on every axis, then the patches.

        Placing prefix tokens at 0 is how rotary schemes leave them unrotated: the rotation
        at position 0 is the identity.
        """
        prefix = self.patches.new_full((self.num_axes, self.num_prefix_tokens), value)
        return torch.cat((prefix, self.patches), dim=-1)

    def is_prefix(self) -> Tensor:
        """``(P + N,)`` bool, true for prefix tokens."""
        mask = torch.zeros(self.num_tokens, dtype=torch.bool, device=self.patches.device)
        mask[: self.num_prefix_tokens] = True
        return mask


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{what} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None


def build_grid_positions(
    shape: Sequence[int],
    *,
    num_prefix_tokens: int = 0,
    normalize: GridNormalize = "index",
    reference_shape: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> GridPositions:
    r"""Coordinates of the tokens of a patch grid of any dimension.

    For axis size :math:`n` and index :math:`i`:

    .. math::
        \text{index: } i \qquad \text{unit: } \frac{i + 1/2}{n} \in (0, 1) \qquad
        \text{symmetric: } \frac{2i + 1}{n} - 1 \in (-1, 1)

    With ``reference_shape`` (only for ``"index"``), coordinates are rescaled by
    :math:`n_\text{ref} / n` so a grid of another resolution spans the positions of the
    reference grid (position interpolation for vision, as in EVA-02).

    Args:
        shape: Grid size per axis, e.g. ``(H, W)`` or ``(T, H, W)``.
        num_prefix_tokens: Class/register tokens before the patches.
        normalize: ``"index"``, ``"unit"`` or ``"symmetric"``.
        reference_shape: Grid the positions are rescaled to (same length as ``shape``).
        device: Device of the returned tensor.

    Returns:
        :class:`GridPositions` with ``patches: (A, N)`` float32.

    Raises:
        TypeError: On a size that is not a whole number (``14.7``).
        ValueError: On a non-positive size, a negative prefix count, an unknown
            ``normalize``, or a ``reference_shape`` of another length or with a size <= 0.
    """
    # Symbolic sizes (torch.compile / torch.export with dynamic shapes) stay symbolic; a
    # fractional size is refused rather than truncated.
    dims = tuple(n if isinstance(n, torch.SymInt) else _whole(n, "grid size") for n in shape)
    if not dims or any(n <= 0 for n in dims):
        raise ValueError(f"grid shape must be non-empty with positive sizes, got {tuple(shape)}")
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    if normalize not in GRID_NORMALIZE:
        raise ValueError(f"normalize must be one of {GRID_NORMALIZE}, got {normalize!r}")
    if reference_shape is not None:
        if len(reference_shape) != len(dims) or not all(float(n) > 0 for n in reference_shape):
            raise ValueError(
                f"reference_shape {tuple(reference_shape)} must have {len(dims)} positive "
                f"entries like shape {dims}"
            )
        if normalize != "index":
            raise ValueError("reference_shape applies to normalize='index' only")
    axes = []
    for a, n in enumerate(dims):
        i = torch.arange(n, dtype=torch.float32, device=device)
        if normalize == "unit":
            i = (i + 0.5) / n
        elif normalize == "symmetric":
            i = (2 * i + 1) / n - 1
        elif reference_shape is not None:
            i = i * (float(reference_shape[a]) / n)
        axes.append(i)
    # (A, *shape) -> (A, N), row-major.
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(len(dims), -1)
    return GridPositions(patches=grid, shape=dims, num_prefix_tokens=num_prefix_tokens)


def build_sequence_positions(
    length: int,
    *,
    offset: int | float | Tensor = 0,
    segment_ids: Tensor | None = None,
    step: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Positions of a token sequence: ``offset + step * i``, restarting at packed segments.

    With ``segment_ids`` (packed sequences, e.g. ``[0, 0, 0, 1, 1, 2]``), the position
    restarts at ``offset`` wherever the id changes from the previous token:

    .. math::
        p_i = o + \text{step} \cdot (i - s(i)), \quad s(i) = \max\{ t \le i : t = 0 \lor
        \text{seg}_t \ne \text{seg}_{t-1} \}

    Args:
        length: Tokens ``L``.
        offset: Scalar, or a ``(B,)`` tensor of per-sequence offsets (e.g. cached tokens).
        segment_ids: ``(L,)`` or ``(B, L)`` segment ids of packed sequences.
        step: Position increment per token (float allowed).
        device: Device of the returned tensor.

    Returns:
        ``(1, L)`` or ``(1, B, L)`` float32 (one position axis), ready for
        :class:`~multipos.rotary.RotaryEmbedding`.

    Raises:
        TypeError: If ``length`` is not a whole number (``4.5``).
        ValueError: If ``length`` is negative or ``segment_ids``/``offset`` do not match it.
    """
    length = _whole(length, "length")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if segment_ids is not None:
        device = segment_ids.device
        if segment_ids.shape[-1] != length or segment_ids.dim() not in (1, 2):
            raise ValueError(
                f"segment_ids must be (L={length},) or (B, L={length}), "
                f"got {tuple(segment_ids.shape)}"
            )
    idx = torch.arange(length, dtype=torch.float32, device=device)
    if segment_ids is not None and length > 0:
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[..., 1:] = segment_ids[..., 1:] != segment_ids[..., :-1]
        start_index = torch.where(starts, idx.to(torch.long), torch.zeros_like(segment_ids))
        # Running maximum of segment start indices = start of the current segment.
        idx = idx - start_index.cummax(dim=-1).values.to(torch.float32)
    pos = idx * step
    off = torch.as_tensor(offset, dtype=torch.float32, device=pos.device)
    if off.dim() == 1:
        if pos.dim() == 2 and off.shape[0] != pos.shape[0]:
            raise ValueError(
                f"offset has {off.shape[0]} entries but segment_ids has batch {pos.shape[0]}"
            )
        pos = off[:, None] + pos
    elif off.dim() == 0:
        pos = pos + off
    else:
        raise ValueError(f"offset must be a scalar or (B,), got shape {tuple(off.shape)}")
    return pos.unsqueeze(0)
