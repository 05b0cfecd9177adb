"""How a GTA representation's sections act on ``(B, H, L, D)`` tensors: SO(2) sections as
complex multiplications (RoPE's products, so 2-D GTA without the value transform is 2-D RoPE bit
for bit), other blocks as small matrix products (GTA, Miyato et al., 2024, arXiv:2310.10375).
Used by :mod:`multipos.groups`; nothing here is public.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from multipos.group_blocks import _checking
from multipos.rotary import apply_rotary

_Mode = Literal["rho", "inverse", "transpose", "inverse_transpose"]

# Channels per matmul column block: one AVX-512 register of float32. Measured (one thread,
# 4 x 4 blocks): 4 columns 0.20 ms, 8: 0.14, 16: 0.08, 32: 0.16 for the same product.
_CHUNK = 16
# Tokens sharing one matrix from which their rows are read in place (no transposed copy).
_IN_PLACE_RUN = 16


@dataclass(frozen=True)
class _Rotations:
    """SO(2) blocks on channels ``[start, start + 2 * count)``: per-block cos/sin
    ``(B | 1, L, count)`` in float32 or wider, and the same rotations as complex numbers
    ``(B | 1, 1, L, count)`` and their conjugates (None while compiling). RoPE's interleaved
    tables are formed only where the complex product cannot be used (compilation, pairs not
    aligned in memory): measured, forming them was a quarter of building a 2-D GTA
    representation (one thread, 256 tokens, 16 blocks)."""

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
            turn_inverse = torch.conj_physical(turn)  # cos - i sin, one operation
        return cls(start, cos.shape[-1], cos, sin, turn, turn_inverse)


@dataclass(frozen=True)
class _Matrices:
    r"""``count`` blocks of size ``size`` on channels ``[start, start + count * size)``:
    matrices and their inverses ``(B | 1, L, count | 1, size, size)`` (1: one block per token,
    repeated ``count`` times). For one block per token, outside compilation, also the right
    factors :math:`I_k \otimes M^\top` and :math:`I_k \otimes M^{-\top}`
    ``(B | 1, V, k size, k size)`` that act on row vectors of ``k size`` channels, one per run
    of ``L / V`` tokens sharing their matrix (a camera pose repeated over its view's patches)."""

    start: int
    count: int
    size: int
    matrix: Tensor
    inverse: Tensor
    right: Tensor | None = None
    right_inverse: Tensor | None = None
    # (mode, batch, heads, token-major) -> the factor of every row block, (N, c, c) contiguous:
    # built on the first call of a shape and reused (the representation lives one forward).
    expanded: dict[tuple[str, int, int, bool], Tensor] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, start: int, count: int, matrix: Tensor, inverse: Tensor) -> _Matrices:
        """From ``(B | 1, L, count | 1, size, size)`` matrices and their inverses."""
        size = matrix.shape[-1]
        if matrix.shape[2] != 1 or not _checking():
            return cls(start, count, size, matrix, inverse)
        run = _run_length(matrix)
        fits = (k for k in range(1, count + 1) if count % k == 0 and k * size <= _CHUNK)
        per = max(fits, default=1)
        right = _kron_right(matrix[:, ::run, 0], per)
        right_inverse = _kron_right(inverse[:, ::run, 0], per)
        return cls(start, count, size, matrix, inverse, right, right_inverse)


def _interleave(table: Tensor) -> Tensor:
    # (B | 1, L, n) -> (B | 1, 1, L, 2n): one value per channel of the pair, broadcast over heads.
    return table.repeat_interleave(2, dim=-1).unsqueeze(1)


def _run_length(matrix: Tensor) -> int:
    """Tokens per run when ``L`` splits into equal runs of one matrix each (every batch alike),
    else 1."""
    length = matrix.shape[1]
    flat = matrix.flatten(2)  # (B | 1, L, 1, d, d) -> (B | 1, L, d * d)
    same = (flat[:, 1:] == flat[:, :-1]).all(-1).all(0)  # (L - 1,): token t + 1 repeats t
    starts = torch.nonzero(~same).flatten() + 1
    run = int(starts[0]) if starts.numel() else length
    expected = torch.arange(run, length, run, device=starts.device)
    return run if length % run == 0 and torch.equal(starts, expected) else 1


def _kron_right(matrix: Tensor, per: int) -> Tensor:
    # (B | 1, V, d, d) -> (B | 1, V, k, d, k, d) -> (B | 1, V, k d, k d): k copies of M^T on the
    # diagonal, so a row of k blocks times it is M applied to each block.
    eye = torch.eye(per, dtype=matrix.dtype, device=matrix.device)
    blocks = torch.einsum("ij,bvca->bviajc", eye, matrix)
    size = per * matrix.shape[-1]
    return blocks.reshape(*matrix.shape[:2], size, size)


def _pairs_ok(x: Tensor, table: Tensor) -> bool:
    # Complex views need float32/float64 matching the table, and aligned pairs in memory.
    return bool(
        x.dtype == table.dtype
        and x.dtype in (torch.float32, torch.float64)
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in x.stride()[:-1])
    )


def _complex(x: Tensor, count: int) -> Tensor:
    # (..., 2 count) -> (..., count) complex
    return torch.view_as_complex(x.view(*x.shape[:-1], count, 2))


def _turn(s: _Rotations, mode: _Mode) -> Tensor | None:
    # Rotations are orthogonal: rho^{-T} = rho and rho^{-1} = rho^T = R(-theta).
    return s.turn if mode in ("rho", "inverse_transpose") else s.turn_inverse


def write_sections(
    x: Tensor, sections: tuple[_Rotations | _Matrices, ...], mode: _Mode, dest: Tensor
) -> None:
    """Write every section's channels of the transformed ``x`` into ``dest`` (shape of ``x``;
    may be ``x`` itself: every piece is read before it is written).

    The views each section reads and writes depend only on the layouts of ``x`` and ``dest``:
    they are worked out once per layout (on meta tensors, cached) as ``as_strided``
    arguments, so a call costs one view per operand and the products, not the chain of
    slices, views and checks that finds them (measured: about a third of an SE(3) + SO(2)
    transform of 2 x 6 x 256 x 64, one thread).
    """
    layout = (tuple(x.shape), x.stride(), dest.stride())
    even = x.storage_offset() % 2 == 0 and dest.storage_offset() % 2 == 0
    for s in sections:
        if isinstance(s, _Rotations):
            turn = _turn(s, mode)
            if turn is not None and even and x.dtype == s.cos.dtype == dest.dtype:
                views = _rotation_views(s.start, s.count, *layout)
                if views is not None:
                    size, stride, x_off, dest_off = views
                    xc, dc = x.view(turn.dtype), dest.view(turn.dtype)
                    # as RoPE's complex product (apply_rotary), into dest's channels
                    torch.mul(
                        xc.as_strided(size, stride, xc.storage_offset() + x_off),
                        turn,
                        out=dc.as_strided(size, stride, dc.storage_offset() + dest_off),
                    )
                    continue
        elif _write_runs(x, s, mode, dest, layout):
            continue
        _write_pieces(x, s, mode, dest)


def _meta(shape: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    return torch.empty_strided(shape, stride, device="meta")


def _strided(view: Tensor, base: Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    # as_strided arguments of ``view`` relative to ``base`` (same dtype and storage)
    return tuple(view.shape), view.stride(), int(view.storage_offset() - base.storage_offset())


@functools.lru_cache(maxsize=256)
def _rotation_views(
    start: int,
    count: int,
    shape: tuple[int, ...],
    x_stride: tuple[int, ...],
    dest_stride: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[int, ...], int, int] | None:
    """``(size, stride, x offset, dest offset)`` of the section's channels as complex views
    of ``x`` and ``dest`` (offsets from the complex views of the whole tensors), or ``None``
    when the pairs are not aligned complex numbers in memory."""
    x, dest = _meta(shape, x_stride), _meta(shape, dest_stride)
    channels = slice(start, start + 2 * count)
    part, target = x[..., channels], dest[..., channels]
    if not (
        shape[-1] % 2 == 0
        and all(_pairs_ok(t, t) for t in (x, dest, part, target))
        and part.stride() == target.stride()
    ):
        return None
    size, stride, x_off = _strided(_complex(part, count), x.view(torch.complex64))
    _, _, dest_off = _strided(_complex(target, count), dest.view(torch.complex64))
    return size, stride, x_off, dest_off


@functools.lru_cache(maxsize=256)
def _run_views(
    start: int,
    width: int,
    chunk: int,
    rows_per: int,
    token_major: bool,
    shape: tuple[int, ...],
    x_stride: tuple[int, ...],
    dest_stride: tuple[int, ...],
) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int, int]]:
    """Per ``chunk`` channels: ``(size, x stride, dest stride, x offset, dest offset)`` of the
    rows ``(B H V, L / V, c)`` or ``(B V, L H / V, c)`` read and written in place."""
    x, dest = _meta(shape, x_stride), _meta(shape, dest_stride)
    out = []
    for lo in range(start, start + width, chunk):
        size, x_str, x_off = _strided(
            _chunk_rows(x[..., lo : lo + chunk], rows_per, token_major), x
        )
        _, d_str, d_off = _strided(
            _chunk_rows(dest[..., lo : lo + chunk], rows_per, token_major), dest
        )
        out.append((size, x_str, d_str, x_off, d_off))
    return out


def _write_runs(
    x: Tensor,
    s: _Matrices,
    mode: _Mode,
    dest: Tensor,
    layout: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
) -> bool:
    """Write a section whose matrices are shared by runs of tokens with batched matmuls of
    the rows read in place into one scratch buffer, copied into ``dest``, for ``x`` and
    ``dest`` both ``(B, H, L, D)`` or both ``(B, L, H, D)`` in memory (q, k, v of a ViT,
    SDPA's gradients). Returns whether it applied."""
    right = _right_factor(s, mode)
    if right is None or right.dtype != x.dtype:
        return False
    bsz, heads, length, _ = x.shape
    views, chunk = right.shape[1], right.shape[-1]
    run = length // views
    if run < _IN_PLACE_RUN:
        return False
    if x.is_contiguous() and dest.is_contiguous():
        rows_per, token_major = run, False
    elif _token_major(x) and _token_major(dest):
        rows_per, token_major = run * heads, True
    else:
        return False
    key = (mode, bsz, heads, token_major)
    factor = s.expanded.get(key)
    if factor is None:
        if token_major:
            # (B | 1, V, c, c) -> (B V, c, c): the rows are the run's tokens of every head
            factor = right.expand(bsz, views, chunk, chunk)
        else:
            # (B | 1, V, c, c) -> (B H V, c, c): the factor of every (batch, head, run), whose
            # rows are the run's tokens
            factor = right.unsqueeze(1).expand(bsz, heads, views, chunk, chunk)
        factor = s.expanded[key] = factor.reshape(-1, chunk, chunk).contiguous()
    scratch: Tensor | None = None
    width = s.count * s.size
    for size, x_str, d_str, x_off, d_off in _run_views(
        s.start, width, chunk, rows_per, token_major, *layout
    ):
        rows = x.as_strided(size, x_str, x.storage_offset() + x_off)
        scratch = (
            torch.bmm(rows, factor) if scratch is None else torch.bmm(rows, factor, out=scratch)
        )
        dest.as_strided(size, d_str, dest.storage_offset() + d_off).copy_(scratch)
    return True


def _write_pieces(x: Tensor, s: _Rotations | _Matrices, mode: _Mode, dest: Tensor) -> None:
    start = s.start
    for piece in _section_pieces(x, s, mode):
        dest[..., start : start + piece.shape[-1]].copy_(piece)
        start += piece.shape[-1]


def _token_major(x: Tensor) -> bool:
    return x.transpose(1, 2).is_contiguous()


def _chunk_rows(part: Tensor, rows_per: int, token_major: bool) -> Tensor:
    part = part.transpose(1, 2) if token_major else part
    return part.view(-1, rows_per, part.shape[-1])


def _right_factor(s: _Matrices, mode: _Mode) -> Tensor | None:
    right = s.right if mode in ("rho", "transpose") else s.right_inverse
    if right is None or torch.compiler.is_compiling():
        return None
    # (I_k (x) M^T)^T = I_k (x) M, as a strided operand of the matmul
    return right.mT if mode in ("transpose", "inverse_transpose") else right


def _section_pieces(x: Tensor, s: _Rotations | _Matrices, mode: _Mode) -> list[Tensor]:
    """The section's channels of the transformed ``x``, in channel order, in ``x``'s dtype."""
    if isinstance(s, _Rotations):
        part = x if s.count * 2 == x.shape[-1] else x[..., s.start : s.start + 2 * s.count]
        turn = _turn(s, mode)
        if turn is not None and _pairs_ok(part, s.cos) and not torch.compiler.is_compiling():
            # As apply_rotary's complex path (same products, so 2-D RoPE is matched bit for
            # bit), with the complex table built once instead of per call.
            return [torch.view_as_real(_complex(part, s.count) * turn).flatten(-2)]
        sin = s.sin if mode in ("rho", "inverse_transpose") else -s.sin
        return [apply_rotary(part, _interleave(s.cos), _interleave(sin), layout="interleaved")]
    right = _right_factor(s, mode)
    if right is None:
        return [_per_token(x, s, mode)]
    bsz, heads, length, _ = x.shape
    views, chunk, width = right.shape[1], right.shape[-1], s.count * s.size
    wide = torch.promote_types(x.dtype, right.dtype)
    right = right.to(wide)
    if length // views >= _IN_PLACE_RUN:
        # A run's tokens are the rows of one matmul, read where they lie (row stride D).
        pieces = []
        for lo in range(s.start, s.start + width, chunk):
            # (B, H, L, c) -> (B, H, V, L / V, c) @ (B | 1, 1, V, c, c) -> (B, H, L, c)
            part = x[..., lo : lo + chunk].to(wide)
            part = part.reshape(bsz, heads, views, length // views, chunk)
            pieces.append((part @ right.unsqueeze(1)).flatten(2, 3).to(x.dtype))
        return pieces
    # Heads, tokens of a run and chunks become the rows of one matmul per run:
    # (B, H, L, W) -> (B, L, H, W) -> (B, V, (L / V) H W / c, c) @ (B | 1, V, c, c)
    rows = x[..., s.start : s.start + width].transpose(1, 2)
    rows = rows.contiguous().to(wide).view(bsz, views, -1, chunk)
    # (B, V, (L / V) H W / c, c) -> (B, L, H, W) -> (B, H, L, W)
    out = (rows @ right).view(bsz, length, heads, width).transpose(1, 2)
    return [out.to(x.dtype)]


def _per_token(x: Tensor, s: _Matrices, mode: _Mode) -> Tensor:
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


_TRANSPOSED: dict[str, _Mode] = {
    "rho": "transpose",
    "transpose": "rho",
    "inverse": "inverse_transpose",
    "inverse_transpose": "inverse",
}


class Action(torch.autograd.Function):
    """``x -> rho x`` (in one of the four modes) of a representation (``rep``, a
    :class:`~multipos.groups.GTARepresentation`) whose blocks need no gradient: linear in
    ``x``, so the backward is the transposed action, written like the forward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rep: Any, mode: _Mode) -> Tensor:
        ctx.rep, ctx.mode = rep, mode
        out: Tensor = rep._write(x, mode)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.rep._act(grad, _TRANSPOSED[ctx.mode], "gradient"), None, None
