r"""Rotary position embedding inside an open_clip text tower (TULIP's relative positions).

From "TULIP: Token-length Upgraded CLIP" (Ivona Najdenkoska, Mohammad Mahdi Derakhshani,
Yuki M. Asano, Nanne van Noord, Marcel Worring, Cees G. M. Snoek, ICLR 2025,
arXiv:2410.10034): the absolute position table is removed and every text block rotates its
queries and keys (RoFormer, Su et al., 2021, arXiv:2104.09864, Eq. (34)):

.. math::
    a_{ij} = \operatorname{softmax}_j\Big(\frac{(R_i q_i)^\top (R_j k_j)}{\sqrt{D}}
    + m_{ij}\Big), \qquad m_{ij} = -\infty \text{ for } j > i

:class:`RotaryAttention` subclasses open_clip's own ``Attention`` and keeps its parameter names
(``in_proj_weight``, ``in_proj_bias``, ``out_proj``), which are also those of
``nn.MultiheadAttention``: a CLIP teacher's weights load into the student strictly.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import cast

import torch
import torch.nn.functional as F
from open_clip.transformer import (
    Attention,
    CustomResidualAttentionBlock,
    ResidualAttentionBlock,
)
from torch import Tensor, nn

from multipos.attention import attention
from multipos.rotary import RotaryEmbedding, apply_rotary

__all__ = ["RotaryAttention", "RotaryResidualBlock", "rotary_text_blocks"]


def _additive_mask(
    mask: Tensor | None, batch: int, heads: int, length: int, dtype: torch.dtype
) -> Tensor | None:
    """open_clip's mask conventions -> an additive float mask broadcastable to (B, H, L, S)."""
    if mask is None:
        return None
    if mask.dim() == 3:
        # open_clip passes (B * H, L, S) for per-sample masks.
        mask = mask.reshape(batch, heads, length, mask.shape[-1])
    if mask.dtype == torch.bool:
        # open_clip convention: True means "masked" (the opposite of SDPA's).
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


class RotaryAttention(Attention):  # type: ignore[misc]
    r"""open_clip ``Attention`` with rotary embedding on q and k (TULIP).

    From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034),
    Sec. 3.1; rotation as in RoFormer (Su et al., 2021, arXiv:2104.09864), Eq. (34):
    :math:`q_i \mapsto R_{\Theta, i}\, q_i`, :math:`k_j \mapsto R_{\Theta, j}\, k_j` at token
    positions :math:`i, j = 0, \dots, L - 1`, after open_clip's optional q/k LayerNorm.

    The cos/sin tables are computed in float32 inside ``forward`` from ``arange(L)`` (no cache,
    no state written). ``causal=True`` adds the text tower's causal mask through SDPA's
    ``is_causal`` (so the tower need not pass one); a mask passed by the caller is added on top.
    Dynamic NTK scaling is evaluated at ``context_length`` (not at the padded input length), so
    padding after the end token never changes an embedding.

    Args:
        dim: Model width ``C``.
        num_heads: Heads ``H``; the head size ``D = C / H`` must be even.
        rotary: The rotary table module (its ``dim`` is the rotated width, at most ``D``).
        context_length: Longest input ``N``; the length used by dynamic NTK scaling.
        causal: Apply a causal mask.
        qkv_bias, qk_norm, scaled_cosine, scale_heads, inner_norm, norm_layer, attn_drop,
            proj_drop: As open_clip's ``Attention``.

    Shape:
        ``forward(x: (B, L, C), attn_mask: (L, L) | (B * H, L, L) | None) -> (B, L, C)``.

    Raises:
        ValueError: If the rotary width is odd or wider than the head size, or
            ``context_length < 1``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        rotary: RotaryEmbedding,
        context_length: int,
        causal: bool = True,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        scaled_cosine: bool = False,
        scale_heads: bool = False,
        inner_norm: bool = False,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            scaled_cosine=scaled_cosine,
            scale_heads=scale_heads,
            inner_norm=inner_norm,
            norm_layer=norm_layer,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
        )
        if rotary.head_dim > self.head_dim:
            raise ValueError(
                f"rotary head_dim {rotary.head_dim} must be at most the head size {self.head_dim} "
                f"(width {dim} / {num_heads} heads)"
            )
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.rotary = rotary
        self.context_length = int(context_length)
        self.causal = bool(causal)

    @classmethod
    def from_module(
        cls,
        source: nn.Module,
        rotary: RotaryEmbedding,
        *,
        context_length: int,
        causal: bool = True,
    ) -> RotaryAttention:
        """Build from an ``nn.MultiheadAttention`` or open_clip ``Attention``, reusing its weights.

        Raises:
            TypeError: If ``source`` is another kind of module.
            ValueError: If ``source`` uses features open_clip's text blocks never use
                (separate k/v widths, ``bias_k``, ``add_zero_attn``, not batch-first).
        """
        if isinstance(source, nn.MultiheadAttention):
            if (
                not source._qkv_same_embed_dim
                or source.bias_k is not None
                or source.add_zero_attn
                or not source.batch_first
            ):
                raise ValueError(
                    "only batch-first nn.MultiheadAttention with one in_proj, no bias_k/bias_v "
                    "and no add_zero_attn can be converted (open_clip's text blocks)"
                )
            # Built on the meta device: no throw-away init, no draw from the global RNG.
            with torch.device("meta"):
                new = cls(
                    source.embed_dim,
                    source.num_heads,
                    rotary=rotary,
                    context_length=context_length,
                    causal=causal,
                    qkv_bias=source.in_proj_bias is not None,
                    attn_drop=source.dropout,
                )
            new.load_state_dict(source.state_dict(), strict=True, assign=True)
            return new
        if isinstance(source, Attention):
            with torch.device("meta"):
                new = cls(
                    source.in_proj_weight.shape[1],
                    source.num_heads,
                    rotary=rotary,
                    context_length=context_length,
                    causal=causal,
                    qkv_bias=source.in_proj_bias is not None,
                    qk_norm=not isinstance(source.ln_q, nn.Identity),
                    scaled_cosine=source.logit_scale is not None,
                    scale_heads=source.head_scale is not None,
                    inner_norm=not isinstance(source.ln_inner, nn.Identity),
                )
            # Keep the source's norm/dropout modules (their class and eps) as they are.
            new.ln_q, new.ln_k, new.ln_inner = source.ln_q, source.ln_k, source.ln_inner
            new.attn_drop, new.out_drop = source.attn_drop, source.out_drop
            new.logit_scale_max = source.logit_scale_max
            new.load_state_dict(source.state_dict(), strict=True, assign=True)
            return new
        raise TypeError(
            "source must be nn.MultiheadAttention or open_clip.transformer.Attention, "
            f"got {type(source).__name__}"
        )

    def extra_repr(self) -> str:
        return f"context_length={self.context_length}, causal={self.causal}"

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        batch, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        # (B, L, C) -> (B, L, H, D) -> (B, H, L, D)
        q = q.reshape(batch, length, self.num_heads, -1).transpose(1, 2)
        k = k.reshape(batch, length, self.num_heads, -1).transpose(1, 2)
        v = v.reshape(batch, length, self.num_heads, -1).transpose(1, 2)
        q, k = self.ln_q(q), self.ln_k(k)
        positions = torch.arange(length, device=x.device)
        tables = self.rotary(positions, length=self.context_length, dtype=q.dtype)
        mask = _additive_mask(attn_mask, batch, self.num_heads, length, q.dtype)
        dropout_p = self.attn_drop.p if self.training else 0.0
        if self.logit_scale is not None:
            # Scaled cosine attention: rotation is orthogonal, so normalising after it is exact.
            q = F.normalize(apply_rotary(q, tables.cos, tables.sin, tables.layout), dim=-1)
            k = F.normalize(apply_rotary(k, tables.cos, tables.sin, tables.layout), dim=-1)
            scale = torch.clamp(self.logit_scale, max=self.logit_scale_max).exp()
            logits = torch.matmul(q, k.transpose(-1, -2)) * scale
            if mask is not None:
                logits = logits + mask
            if self.causal:
                future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
                logits = logits.masked_fill(future, float("-inf"))
            probs = self.attn_drop(logits.softmax(dim=-1))
            out = torch.matmul(probs, v)
        else:
            out = attention(
                q,
                k,
                v,
                rotary=tables,
                mask=mask,
                is_causal=self.causal,
                dropout_p=dropout_p,
            )
        if self.head_scale is not None:
            out = out * self.head_scale
        # (B, H, L, D) -> (B, L, C)
        out = out.transpose(1, 2).reshape(batch, length, width)
        out = self.ln_inner(out)
        return cast(Tensor, self.out_drop(self.out_proj(out)))


class RotaryResidualBlock(CustomResidualAttentionBlock):  # type: ignore[misc]
    """open_clip's ``CustomResidualAttentionBlock`` that also takes the call open_clip's
    ``Transformer`` makes under gradient checkpointing, ``block(x, None, None, attn_mask)``
    (the signature of its default block); the unused key/value slots must be ``None``."""

    def forward(
        self,
        x: Tensor,
        k_x: Tensor | None = None,
        v_x: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        if k_x is not None or v_x is not None:
            raise ValueError("rotary text blocks are self-attention: k_x and v_x must be None")
        return cast(Tensor, super().forward(x, attn_mask=attn_mask))


def _custom_block(block: nn.Module) -> CustomResidualAttentionBlock:
    """A :class:`RotaryResidualBlock` that reuses the submodules of an open_clip block."""
    if isinstance(block, CustomResidualAttentionBlock):
        block.__class__ = RotaryResidualBlock
        return block
    if not isinstance(block, ResidualAttentionBlock):
        raise TypeError(
            "text blocks must be open_clip ResidualAttentionBlock or "
            f"CustomResidualAttentionBlock, got {type(block).__name__}"
        )
    if hasattr(block, "ln_1_kv"):
        raise ValueError("cross-attention blocks cannot be converted to rotary self-attention")
    width = block.attn.embed_dim
    hidden = block.mlp.c_fc.out_features
    with torch.device("meta"):
        new = RotaryResidualBlock(width, block.attn.num_heads, mlp_ratio=hidden / width)
    # Reuse the modules themselves: parameter names, norm classes and activations stay.
    new.ln_1, new.ls_1, new.ln_2, new.ls_2 = block.ln_1, block.ls_1, block.ln_2, block.ls_2
    new.attn = block.attn
    new.mlp = nn.Sequential(
        OrderedDict(
            [
                ("c_fc", block.mlp.c_fc),
                ("gelu", block.mlp.gelu),
                ("ln", nn.Identity()),
                ("c_proj", block.mlp.c_proj),
            ]
        )
    )
    return new


def rotary_text_blocks(
    blocks: nn.ModuleList,
    rotary: RotaryEmbedding,
    *,
    context_length: int,
) -> None:
    """Give every block of an open_clip text ``Transformer`` a :class:`RotaryAttention`.

    Default blocks (``nn.MultiheadAttention``) become ``CustomResidualAttentionBlock`` with the
    same submodules; their state-dict keys are unchanged, so checkpoints of the original tower
    load strictly. All blocks share one ``rotary`` module (it has no persistent state).

    Raises:
        TypeError: If a block is not an open_clip residual attention block.
    """
    for index, block in enumerate(blocks):
        custom = _custom_block(block)
        custom.attn = RotaryAttention.from_module(
            custom.attn, rotary, context_length=context_length, causal=True
        )
        blocks[index] = custom
