r"""Geometric transform attention (GTA): token geometry as group representations.

From "GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers" (Miyato et al.,
2024, arXiv:2310.10375), Eq. (5): every token ``i`` carries a group element ``g_i`` (a camera
pose in SE(3), a 2-D image position acting through SO(2) rotations) and a block-diagonal
representation :math:`\rho_i = \rho(g_i)` over the head channels. Attention becomes

.. math::
    o_i = \rho_i^{-1} \sum_j \operatorname{softmax}_j\!\Big(s\,
        (\rho_i^{-\top} q_i)^\top (\rho_j k_j)\Big)\, \rho_j v_j
        = \sum_j a_{ij}\, \rho_i^{-1}\rho_j v_j,\qquad
    a_{ij} \propto \exp\big(s\, q_i^\top \rho_i^{-1} \rho_j k_j\big)

so only the relative transform :math:`\rho_i^{-1}\rho_j` enters, and fused SDPA is kept: the
transforms act on q, k, v and the output, never on the ``L x S`` scores. With the value
transform off and only SO(2) blocks this is axial 2-D RoPE.

The representation is built once per forward (:class:`GTARepresentation`) and shared by all
layers and heads. SO(2) blocks are applied as RoPE is (each channel pair rotated by its
cos/sin); other blocks by batched matrix products, the rows of a product being the tokens that
share a matrix (a camera pose over its view's patches) read where they lie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from multipos.group_blocks import (
    Convention,
    _checking,
    _wide,
    check_block_kind,
    check_head_dim,
    invert_blocks,
    repeated_along_n,
    se3_blocks,
    so2_angles,
    so2_blocks,
)
from multipos.group_sections import (
    Action,
    _Matrices,
    _Mode,
    _Rotations,
    _section_pieces,
)
from multipos.group_workspace import keys_values, scratch_buffer, transform_into

__all__ = [
    "BlockKind",
    "Convention",
    "GTARepresentation",
    "gta_attention",
    "se3_blocks",
    "so2_angles",
    "so2_blocks",
]

BlockKind = Literal["rotation", "orthogonal", "rigid", "general"]
BLOCK_KINDS: tuple[str, ...] = get_args(BlockKind)


@dataclass(frozen=True)
class GTARepresentation:
    r"""Per-token block-diagonal representation :math:`\rho_i` over a ``head_dim``-channel head.

    GTA (Miyato et al., 2024, arXiv:2310.10375), Eq. (5). Channels are covered in order by
    sections of blocks (SE(3) 4 x 4, SO(2) 2 x 2, any square block), and the channels after
    the last section are the identity (GTA's trivial representation). Build it with
    :meth:`from_blocks` (or :meth:`from_angles` for SO(2) only), once per forward; apply it to
    ``(B, H, L, D)`` tensors with :meth:`apply` (:math:`\rho`), :meth:`apply_inverse`,
    :meth:`apply_transpose` and :meth:`apply_inverse_transpose`. Rotation blocks are applied as
    RoPE applies its tables; orthogonal blocks reuse the matrix for :math:`\rho^{-\top}`; SE(3)
    is not orthogonal, so its :math:`\rho^{-\top}` uses the inverse, computed once here.

    Attributes:
        head_dim: Channels per head ``D``.
        length: Tokens ``L``.
        batch: Batch ``B`` of the blocks (1: shared by the batch).
        sections: The block sections in channel order.
    """

    head_dim: int
    length: int
    batch: int
    sections: tuple[_Rotations | _Matrices, ...]

    def __post_init__(self) -> None:
        # The buffers attention's q, k, v are written to outside autograd (scratch_buffer);
        # not a field, so a representation's fields stay its value (equality, FX, replace).
        object.__setattr__(self, "_workspace", {})
        object.__setattr__(self, "_kernel_tables", {})  # group_native's, per mode and dtype

    @property
    def covered(self) -> int:
        """Channels covered by blocks; the rest (up to ``head_dim``) are identity."""
        last = self.sections[-1] if self.sections else None
        if last is None:
            return 0
        width = 2 * last.count if isinstance(last, _Rotations) else last.count * last.size
        return last.start + width

    @classmethod
    def from_angles(cls, angles: Tensor, head_dim: int) -> GTARepresentation:
        r"""SO(2) blocks only, from their angles ``(B | 1, L, n)`` (:func:`so2_angles`), on the
        first ``2 n`` channels as interleaved pairs; the rest are identity. Skips forming the
        2 x 2 matrices.

        Raises:
            ValueError: If ``angles`` is not 3-D or ``2 n > head_dim``.
        """
        if not isinstance(angles, Tensor) or angles.dim() != 3:
            raise ValueError(
                f"angles must be (B or 1, L, n), got {getattr(angles, 'shape', angles)}"
            )
        check_head_dim(head_dim, 2 * angles.shape[-1])
        theta = angles.to(_wide(angles.dtype))
        section = _Rotations.build(0, theta.cos(), theta.sin())
        return cls(head_dim, angles.shape[1], angles.shape[0], (section,))

    @classmethod
    def from_blocks(
        cls,
        blocks: Sequence[Tensor],
        head_dim: int,
        *,
        kinds: Sequence[BlockKind] | None = None,
    ) -> GTARepresentation:
        r"""Representation from lists of blocks, in channel order; remaining channels identity.

        Args:
            blocks: Tensors ``(B | 1, L, n_i, d_i, d_i)``: ``n_i`` blocks of size ``d_i`` per
                token, covering channels ``n_i * d_i`` each, e.g. ``[se3, so2]`` with ``se3``
                from :func:`se3_blocks` expanded to the tokens and ``so2`` from
                :func:`so2_blocks`.
            head_dim: Channels per head ``D`` >= the channels the blocks cover.
            kinds: One per block list: ``"rotation"`` (SO(2), 2 x 2; applied with cos/sin),
                ``"orthogonal"`` (:math:`\rho^{-1} = \rho^\top`), ``"rigid"`` (4 x 4 SE(3);
                inverse in closed form) or ``"general"`` (inverse by LU, in float64). Default:
                ``"rotation"`` for 2 x 2 blocks, ``"general"`` otherwise. Each kind is checked
                (within ``sqrt(eps)``) outside compilation.

        Raises:
            TypeError: If a block is not a floating-point tensor or ``head_dim`` not an int.
            ValueError: On an empty list, a block that is not ``(B | 1, L, n, d, d)``, blocks
                that disagree on ``L`` or ``B``, blocks covering more than ``head_dim``
                channels, an unknown kind or one that does not fit the block (size, structure),
                NaN/inf or singular blocks.

        Blocks that repeat one matrix along ``n`` (e.g. a camera pose expanded over its
        channels) are stored once; outside compilation, equal runs of tokens sharing it (the
        patches of one view) are found once here, and ``k`` blocks at a time (up to 16
        channels) are applied as one matrix :math:`I_k \otimes M^\top` on the right of the
        tokens' rows: the blockwise product up to rounding for finite inputs, while a NaN or
        inf entry spreads to the other channels of its ``k`` blocks (same token and head).
        """
        if isinstance(blocks, Tensor) or not isinstance(blocks, Sequence) or not blocks:
            raise ValueError("blocks must be a non-empty list of (B or 1, L, n, d, d) tensors")
        if kinds is not None and len(kinds) != len(blocks):
            raise ValueError(f"kinds {list(kinds)} must have one entry per block ({len(blocks)})")
        length = batch = -1
        for i, block in enumerate(blocks):
            if not isinstance(block, Tensor) or not block.is_floating_point():
                raise TypeError(f"blocks[{i}] must be a floating-point tensor, got {block!r:.80}")
            shape = tuple(block.shape)
            if block.dim() != 5 or shape[-1] != shape[-2] or shape[-1] < 1:
                raise ValueError(f"blocks[{i}] must be (B or 1, L, n, d, d), got shape {shape}")
            if length not in (-1, shape[1]):
                raise ValueError(f"blocks[{i}] covers {shape[1]} tokens, blocks[0] {length}")
            length = shape[1]
            if batch in (-1, 1) or shape[0] in (1, batch):
                batch = max(batch, shape[0])
            else:
                raise ValueError(f"blocks[{i}] has batch {shape[0]}, another block {batch}")
        check_head_dim(head_dim, sum(b.shape[2] * b.shape[3] for b in blocks))
        sections: list[_Rotations | _Matrices] = []
        start = 0
        for i, block in enumerate(blocks):
            size = block.shape[-1]
            kind = (kinds[i] if kinds is not None else None) or (
                "rotation" if size == 2 else "general"
            )
            if kind not in BLOCK_KINDS:
                raise ValueError(f"kinds[{i}] must be one of {BLOCK_KINDS}, got {kind!r}")
            if (kind == "rotation" and size != 2) or (kind == "rigid" and size != 4):
                raise ValueError(f"kinds[{i}]={kind!r} does not fit blocks of size {size}")
            if kind != "rotation" and block.shape[2] > 1 and repeated_along_n(block):
                # One transform per token repeated along n (an SE(3) camera pose over its
                # channels): kept once, applied by one matmul per run of tokens.
                block = block[:, :, :1]
            mats = block.to(_wide(block.dtype))
            if _checking():
                if not bool(torch.isfinite(mats).all()):
                    raise ValueError(f"blocks[{i}] must be finite, got NaN or inf")
                check_block_kind(mats, kind, i)
            if kind == "rotation":
                cos, sin = mats[..., 0, 0], mats[..., 1, 0]
                sections.append(_Rotations.build(start, cos, sin))
            else:
                count = blocks[i].shape[2]
                sections.append(_Matrices.build(start, count, mats, invert_blocks(mats, kind, i)))
            start += blocks[i].shape[2] * size
        return cls(head_dim, length, batch, tuple(sections))

    def _check(self, x: Tensor, name: str) -> None:
        if x.dim() != 4 or x.shape[-1] != self.head_dim or x.shape[-2] != self.length:
            raise ValueError(
                f"{name} must be (B, H, L={self.length}, D={self.head_dim}) for this "
                f"representation, got {tuple(x.shape)}"
            )
        if self.batch not in (1, x.shape[0]):
            raise ValueError(f"{name} has batch {x.shape[0]}, the representation {self.batch}")

    def _act(
        self, x: Tensor, mode: _Mode, name: str, *, owned: bool = False, scratch: bool = False
    ) -> Tensor:
        """``x`` transformed in ``mode``. ``owned``: ``x`` may be overwritten (the attention
        output). ``scratch``: the result is read only until the caller's next call with the same
        ``name`` (attention's q, k, v), so outside autograd it may live in a reused buffer."""
        self._check(x, name)
        grad = torch.is_grad_enabled()
        recorded = grad and (x.requires_grad or self._requires_grad())
        written = owned or (scratch and not grad)  # into x or a reused buffer: no allocation
        if (
            torch.compiler.is_compiling()
            or (self._whole() and (recorded or not written))
            or (recorded and self._requires_grad())
        ):
            return self._pieces(x, mode)
        if recorded:
            # Linear in x: the backward is the transposed action, written like the forward
            # (autograd through slices would zero-fill a full gradient per piece).
            out: Tensor = Action.apply(x, self, mode)
            return out
        return self._write(x, mode, owned=owned, role=name if scratch else None)

    def _act_keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``rho k`` and ``rho v`` for attention; outside autograd both in one reused buffer,
        one pass of the sections (:func:`~multipos.group_workspace.keys_values`)."""
        if (
            torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or (k.shape, k.dtype, k.device) != (v.shape, v.dtype, v.device)
        ):
            return self._act(k, "rho", "k", scratch=True), self._act(v, "rho", "v", scratch=True)
        self._check(k, "k")
        workspace, tables = self._workspace, self._kernel_tables  # type: ignore[attr-defined]
        return keys_values(workspace, tables, self.sections, k, v, self._whole())

    def _pieces(self, x: Tensor, mode: _Mode) -> Tensor:
        # Out-of-place pieces joined once: what autograd records through the blocks, and what
        # compilation traces.
        pieces = [p for s in self.sections for p in _section_pieces(x, s, mode)]
        covered = self.covered
        if covered == self.head_dim and len(pieces) == 1:
            return pieces[0]
        if covered < self.head_dim:
            pieces.append(x[..., covered:])
        return torch.cat(pieces, dim=-1)

    def _write(
        self, x: Tensor, mode: _Mode, *, owned: bool = False, role: str | None = None
    ) -> Tensor:
        # Every section writes its channels of one buffer, which is x itself when the caller
        # owns it (the attention output, outside autograd), saving a buffer per call.
        own = owned
        if not (x.is_contiguous() or x.transpose(1, 2).is_contiguous()):
            x, own = x.contiguous(), True  # e.g. an expanded gradient: a dense copy of our own
        if own and not x.is_inference():
            dest = x
        elif role is not None and not torch.is_grad_enabled():
            dest = scratch_buffer(self._workspace, role, x)  # type: ignore[attr-defined]
        else:
            dest = torch.empty_like(x)
        whole = self._whole()
        tables = self._kernel_tables  # type: ignore[attr-defined]
        return transform_into(tables, self.sections, mode, x, dest, whole, self.covered)

    def _whole(self) -> bool:
        # One SO(2) section over the whole head: a single complex product (cheap to record),
        # nothing to assemble.
        s = self.sections[0]
        return (
            len(self.sections) == 1 and isinstance(s, _Rotations) and self.covered == self.head_dim
        )

    def _requires_grad(self) -> bool:
        return any(
            t is not None and t.requires_grad
            for s in self.sections
            for t in (
                (s.cos, s.sin, s.turn)
                if isinstance(s, _Rotations)
                else (s.matrix, s.inverse, s.right)
            )
        )

    def apply(self, x: Tensor) -> Tensor:
        r""":math:`\rho_i x_i` for ``x: (B, H, L, D)``; same shape and dtype (computed in
        float32 or wider)."""
        return self._act(x, "rho", "x")

    def apply_inverse(self, x: Tensor) -> Tensor:
        r""":math:`\rho_i^{-1} x_i`."""
        return self._act(x, "inverse", "x")

    def apply_transpose(self, x: Tensor) -> Tensor:
        r""":math:`\rho_i^\top x_i`."""
        return self._act(x, "transpose", "x")

    def apply_inverse_transpose(self, x: Tensor) -> Tensor:
        r""":math:`\rho_i^{-\top} x_i`."""
        return self._act(x, "inverse_transpose", "x")

    def dense(self) -> Tensor:
        r"""The full ``(B | 1, L, D, D)`` matrices :math:`\rho_i` (for tests and references)."""
        dim = self.head_dim
        eye = torch.eye(dim, dtype=self._dtype(), device=self._device())
        # Basis vector e_c in "head" c of every token: (B, D, L, D); rho e_c is column c.
        basis = eye[None, :, None, :].expand(self.batch, dim, self.length, dim).contiguous()
        return self.apply(basis).permute(0, 2, 3, 1)  # (B, D, L, D) -> (B, L, D, D)

    def _dtype(self) -> torch.dtype:
        s = self.sections[0]
        return s.cos.dtype if isinstance(s, _Rotations) else s.matrix.dtype

    def _device(self) -> torch.device:
        s = self.sections[0]
        return s.cos.device if isinstance(s, _Rotations) else s.matrix.device


def gta_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rep: GTARepresentation,
    *,
    rep_k: GTARepresentation | None = None,
    transform_values: bool = True,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    r"""Geometric transform attention with fused SDPA, GTA Eq. (5) (Miyato et al., 2024,
    arXiv:2310.10375).

    .. math::
        o_i = \rho_i^{-1} \operatorname{SDPA}\big(\rho^{-\top} q,\ \rho k,\ \rho v\big)_i
            = \sum_j a_{ij}\, \rho_i^{-1} \rho_j v_j

    With ``transform_values=False`` values and outputs are left alone (only the scores see the
    geometry: RoPE when all blocks are SO(2)). For masks composed with other position terms use
    :func:`multipos.attention` with ``gta=rep``.

    Args:
        q: ``(B, H, L, D)``.
        k: ``(B, H, S, D)``.
        v: ``(B, H, S, D)`` (``(B, H, S, Dv)`` when values are not transformed).
        rep: Representation of the query tokens (``L``), and of the keys too unless ``rep_k``.
        rep_k: Representation of the key/value tokens (``S``), for cross-attention.
        transform_values: Apply :math:`\rho_j` to values and :math:`\rho_i^{-1}` to outputs.
        attn_mask: Boolean or additive mask, as SDPA takes it.
        is_causal: Causal mask, as SDPA.
        dropout_p: Dropout on the attention probabilities.
        scale: Logit scale; default ``1 / sqrt(D)``.

    Returns:
        ``(B, H, L, Dv)`` in the dtype of ``q``.

    Raises:
        TypeError: If ``rep`` or ``rep_k`` is not a :class:`GTARepresentation`.
        ValueError: If q, k or v do not fit the representations' ``(L, D)`` and batch.
    """
    keys = rep if rep_k is None else rep_k
    for name, r in (("rep", rep), ("rep_k", keys)):
        if not isinstance(r, GTARepresentation):
            raise TypeError(f"{name} must be a GTARepresentation, got {type(r).__name__}")
    q = rep._act(q, "inverse_transpose", "q", scratch=True)
    if transform_values:
        k, v = keys._act_keys_values(k, v)
    else:
        k = keys._act(k, "rho", "k", scratch=True)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    return rep._act(out, "inverse", "output", owned=True) if transform_values else out
