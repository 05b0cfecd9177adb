"""How a GTA representation's sections act on ``(B, H, L, D)`` tensors: SO(2) sections as
complex multiplications (RoPE's products, so 2-D GTA without the value transform is 2-D RoPE bit
for bit), other blocks as one small matmul per token (GTA, Miyato et al., 2024,
arXiv:2310.10375). Used by :mod:`multipos.groups`; nothing here is public.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from multipos.group_blocks import _checking
from multipos.rotary import apply_rotary

_Mode = Literal["rho", "inverse", "transpose", "inverse_transpose"]


@dataclass(frozen=True)
class _Rotations:
    """SO(2) blocks on channels ``[start, start + 2 * count)``: interleaved cos/sin tables
    ``(B | 1, 1, L, 2 * count)`` in float32 or wider, as RoPE's, and the same rotations as
    complex numbers ``(B | 1, 1, L, count)`` and their conjugates (None while compiling)."""

    start: int
    count: int
    cos: Tensor
    sin: Tensor
    turn: Tensor | None = None
    turn_inverse: Tensor | None = None

    @classmethod
    def build(cls, start: int, cos: Tensor, sin: Tensor) -> _Rotations:
        """From per-block ``cos``/``sin`` ``(B | 1, L, n)``."""
        turn = turn_inverse = None
        if _checking():
            # The complex form RoPE uses in eager mode (apply_rotary), built once here.
            turn = torch.complex(cos, sin).unsqueeze(1)
            turn_inverse = torch.complex(cos, -sin).unsqueeze(1)
        return cls(start, cos.shape[-1], _interleave(cos), _interleave(sin), turn, turn_inverse)


@dataclass(frozen=True)
class _Matrices:
    """``count`` blocks of size ``size`` on channels ``[start, start + count * size)``:
    matrices and their inverses ``(B | 1, L, count | 1, size, size)`` (1: one block per token,
    repeated ``count`` times)."""

    start: int
    count: int
    size: int
    matrix: Tensor
    inverse: Tensor


def _interleave(table: Tensor) -> Tensor:
    # (B | 1, L, n) -> (B | 1, 1, L, 2n): one value per channel of the pair, broadcast over heads.
    return table.repeat_interleave(2, dim=-1).unsqueeze(1)


def _rotate_in_place(
    x: Tensor, sections: Sequence[_Rotations | _Matrices], head_dim: int, mode: _Mode
) -> bool:
    """Rotate ``x`` in place when one SO(2) section covers the head and nothing needs ``x``
    later (an attention output the caller owns, outside autograd and compilation); saves a
    fresh buffer per call. Returns whether it did."""
    if len(sections) != 1 or torch.compiler.is_compiling():
        return False
    s = sections[0]
    if not isinstance(s, _Rotations) or s.count * 2 != head_dim:
        return False
    if x.requires_grad or x.is_inference() or not _pairs_ok(x, s.cos):
        return False
    turn = s.turn if mode in ("rho", "inverse_transpose") else s.turn_inverse
    if turn is None:
        return False
    torch.view_as_complex(x.view(*x.shape[:-1], s.count, 2)).mul_(turn)
    return True


def _pairs_ok(x: Tensor, table: Tensor) -> bool:
    # Complex views need float32/float64 matching the table, and aligned pairs in memory.
    return bool(
        x.dtype == table.dtype
        and x.dtype in (torch.float32, torch.float64)
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in x.stride()[:-1])
    )


def _apply_section(x: Tensor, s: _Rotations | _Matrices, mode: _Mode) -> Tensor:
    if isinstance(s, _Rotations):
        part = x if s.count * 2 == x.shape[-1] else x[..., s.start : s.start + 2 * s.count]
        # Rotations are orthogonal: rho^{-T} = rho and rho^{-1} = rho^T = R(-theta).
        forward = mode in ("rho", "inverse_transpose")
        turn = s.turn if forward else s.turn_inverse
        if turn is not None and _pairs_ok(part, s.cos) and not torch.compiler.is_compiling():
            # As apply_rotary's complex path (same products, so 2-D RoPE is matched bit for
            # bit), with the complex table built once instead of per call.
            pairs = torch.view_as_complex(part.view(*part.shape[:-1], s.count, 2))
            return torch.view_as_real(pairs * turn).flatten(-2)
        sin = s.sin if forward else -s.sin
        return apply_rotary(part, s.cos, sin, layout="interleaved")
    bsz, heads, length, _ = x.shape
    width = s.count * s.size
    wide = torch.promote_types(x.dtype, s.matrix.dtype)
    # (B, H, L, n * d) -> (B, H, L, n, d)
    part = x[..., s.start : s.start + width].to(wide)
    part = part.reshape(bsz, heads, length, s.count, s.size)
    mats = s.matrix if mode in ("rho", "transpose") else s.inverse
    if mode in ("transpose", "inverse_transpose"):
        mats = mats.transpose(-1, -2)
    if mats.shape[2] == 1:
        # One block per token: the heads and the n copies are the columns of one matmul.
        # (B, H, L, n, d) -> (B, L, d, H * n) -> (B, L, d, H * n) -> (B, H, L, n * d)
        cols = part.permute(0, 2, 4, 1, 3).reshape(bsz, length, s.size, heads * s.count)
        out = (mats[:, :, 0] @ cols).view(bsz, length, s.size, heads, s.count)
        return out.permute(0, 3, 1, 4, 2).reshape(bsz, heads, length, width).to(x.dtype)
    # (B | 1, 1, L, n, d, d) @ (B, H, L, n, d, 1) -> (B, H, L, n * d)
    out = (mats.unsqueeze(1) @ part.unsqueeze(-1)).squeeze(-1)
    return out.reshape(bsz, heads, length, width).to(x.dtype)
