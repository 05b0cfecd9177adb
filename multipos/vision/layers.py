"""Attention and block layers of timm ViTs that read a per-forward position context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import Tensor

from multipos.attention import attention
from multipos.bias import ContextualBias, ValueBias
from multipos.groups import GTARepresentation
from multipos.irpe import IRPE
from multipos.positions import GridPositions
from multipos.rotary import RotaryTables
from multipos.vision.config import VisionSchemes
from multipos.vision.peg import PositionalEncodingGenerator
from multipos.vision.rope_mixed import MixedRotaryEmbedding

# One graph node under torch.fx (as timm does for its own helpers): attention dispatches on
# shapes, dtypes and devices, which symbolic tracing cannot follow.
torch.fx.wrap("attention")

__all__ = [
    "BlockModules",
    "MultiposAttention",
    "MultiposBlock",
    "VisionPositionContext",
    "build_block_modules",
]


@dataclass(frozen=True)
class VisionPositionContext:
    """Everything position-related about the current input, computed once per forward.

    Attributes:
        grid: Patch grid ``(H, W)`` of this input with its prefix-token count.
        positions: ``(2, P + N)`` token positions in ``(x, y)`` = (column, row) order, prefix
            tokens at 0 (identity rotation): the rotary schemes' input, ordered as in the
            official RoPE-ViT code and timm's ``Eva`` (the first rotary section turns with the
            column), so their checkpoints load unchanged. ``grid.patches`` is ``(row, col)``.
        rope: Axial RoPE tables ``(cos, sin)``, each ``(P + N, D)``, with their layout, shared
            by all blocks; or None.
        irpe_buckets: ``(T, P + N, P + N)`` iRPE bucket ids shared by all blocks; or None.
        gta: GTA representation of the tokens (SO(2) blocks of ``positions``, prefix tokens
            identity), shared by all blocks; or None.
        gta_values: Whether GTA also transforms values and outputs (``False``: 2-D RoPE).
    """

    grid: GridPositions
    positions: Tensor
    rope: RotaryTables | None = None
    irpe_buckets: Tensor | None = None
    gta: GTARepresentation | None = None
    gta_values: bool = True


class MultiposAttention(Attention):
    """timm ``Attention`` that applies RoPE (axial or mixed), GTA and iRPE through
    :func:`multipos.attention`; parameter names are timm's, so timm weights load as they are.

    Installed by :meth:`MultiposBlock.install` on an existing ``Attention`` (class swap plus
    new submodules), which is how both ``timm.create_model`` and retrofitting install it.
    """

    irpe: IRPE | None
    rope_mixed: MixedRotaryEmbedding | None

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        pos: VisionPositionContext | None = None,
    ) -> Tensor:
        bsz, length, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        # (B, N, 3 * H * D) -> (3, B, H, N, D)
        qkv = (
            self.qkv(x)
            .reshape(bsz, length, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        rotary: RotaryTables | None = None
        bias: Tensor | None = None
        contextual: list[ContextualBias] = []
        values: list[ValueBias] = []
        if self.irpe is not None or self.rope_mixed is not None:
            if pos is None:
                raise ValueError("this attention uses grid positions; call it with pos=context")
            if self.rope_mixed is not None:
                rotary = self.rope_mixed(pos.positions)
            if self.irpe is not None:
                if pos.irpe_buckets is None:
                    raise ValueError("the position context has no iRPE buckets")
                bias, contextual, values = self.irpe.attention_terms(pos.irpe_buckets)
        if rotary is None and pos is not None:
            rotary = pos.rope
        gta = pos.gta if pos is not None else None
        out = attention(
            q,
            k,
            v,
            # A plain pair and its layout: torch.fx records this call as one node and cannot
            # rebuild a RotaryTables from its arguments.
            rotary=None if rotary is None else (rotary.cos, rotary.sin),
            layout=None if rotary is None else rotary.layout,
            bias=bias,
            contextual=contextual,
            values=values,
            mask=attn_mask,
            is_causal=is_causal,
            scale=self.scale,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            gta=gta,
            transform_values=pos.gta_values if gta is not None and pos is not None else True,
        )
        # (B, H, N, D) -> (B, N, H * D)
        out = out.transpose(1, 2).reshape(bsz, length, self.attn_dim)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        out = self.proj(out)
        result: Tensor = self.proj_drop(out)
        return result


@dataclass(frozen=True)
class BlockModules:
    """The new position submodules of one block: iRPE and RoPE-Mixed (in its attention) and a
    PEG (after it); ``None`` where the scheme is not used."""

    irpe: IRPE | None = None
    rope_mixed: MixedRotaryEmbedding | None = None
    peg: PositionalEncodingGenerator | None = None


def build_block_modules(
    block: Block,
    schemes: VisionSchemes,
    index: int,
    num_prefix_tokens: int,
    generator: torch.Generator | None = None,
) -> BlockModules:
    """Build (and so validate) the position submodules of block ``index`` without changing
    the block; :meth:`MultiposBlock.install` attaches them.

    Raises:
        TypeError: If ``block`` is not timm's ``Block`` with timm's ``Attention``.
        ValueError: If an option does not fit this block (e.g. RoPE-Mixed on a head width not
            divisible by 4).
    """
    if type(block) not in (Block, MultiposBlock):
        raise TypeError(
            f"can only convert timm's vision_transformer.Block, got {type(block).__name__}"
        )
    attn: Any = block.attn
    if type(attn) not in (Attention, MultiposAttention):
        raise TypeError(
            f"can only convert timm.layers.Attention, got {type(attn).__name__}; "
            "custom attention layers need their own adapter"
        )
    ref: Tensor = attn.qkv.weight
    irpe = rope_mixed = peg = None
    if (c := schemes.get("irpe")) is not None:
        irpe = IRPE(
            attn.num_heads,
            attn.head_dim,
            method=c.method,
            mode=c.mode,
            on=c.on,
            ratio=c.ratio,
            shared_heads=c.shared_heads,
            num_prefix_tokens=num_prefix_tokens,
        ).to(device=ref.device, dtype=ref.dtype)
    if (c := schemes.get("rope_mixed")) is not None:
        rope_mixed = MixedRotaryEmbedding(
            attn.num_heads,
            attn.head_dim,
            base=c.base,
            generator=generator,
            device=ref.device,
        ).to(dtype=ref.dtype)
    if (c := schemes.get("peg")) is not None and index in c.blocks:
        peg = PositionalEncodingGenerator(
            ref.shape[1],
            kernel_size=c.kernel_size,
            init=c.init,
            generator=generator,
            device=ref.device,
        ).to(dtype=ref.dtype)
    return BlockModules(irpe, rope_mixed, peg)


class MultiposBlock(Block):
    """timm ``Block`` that hands the position context to its attention and applies a PEG
    after itself when configured (CPVT places the PEG after a block)."""

    peg: PositionalEncodingGenerator | None

    @classmethod
    def install(cls, block: Block, modules: BlockModules) -> MultiposBlock:
        """Swap ``block`` (and its attention) to the multipos classes and attach ``modules``
        (from :func:`build_block_modules`, which has checked the block's types)."""
        block.__class__ = cls
        out = cast(MultiposBlock, block)
        out.attn.__class__ = MultiposAttention
        attn = cast(MultiposAttention, out.attn)
        attn.irpe, attn.rope_mixed = modules.irpe, modules.rope_mixed
        out.peg = modules.peg
        return out

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        pos: VisionPositionContext | None = None,
    ) -> Tensor:
        x = x + self.drop_path1(
            self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal, pos=pos))
        )
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        if self.peg is not None:
            if pos is None:
                raise ValueError("a block with a PEG needs the position context (pos=...)")
            shape = pos.grid.shape
            x = self.peg(x, (shape[0], shape[1]), pos.grid.num_prefix_tokens)
        return x
