"""timm ``VisionTransformer`` with position schemes: the position context computed once per
forward and handed to every block, and the model-level scheme modules (LFF, axial RoPE).

``forward_features``, ``forward_intermediates`` and ``features_only`` all go through the
same position context, so every way of running the model keeps the scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from multipos.bias import irpe_buckets
from multipos.fourier import LearnableFourierFeatures
from multipos.gta import GeometricTransformAttention
from multipos.positions import build_grid_positions
from multipos.registry import create_scheme
from multipos.rotary import RotaryEmbedding
from multipos.vision.config import VisionSchemes
from multipos.vision.layers import (
    BlockModules,
    MultiposBlock,
    VisionPositionContext,
    build_block_modules,
)

__all__ = ["MultiposVisionMixin", "MultiposVisionTransformer"]


@dataclass(frozen=True)
class _NewModules:
    """Validated schemes and the submodules they add, built before a model is changed."""

    schemes: VisionSchemes
    lff: LearnableFourierFeatures | None
    rope: RotaryEmbedding | None
    gta: GeometricTransformAttention | None
    blocks: list[BlockModules]


class MultiposVisionMixin:
    """Position-context plumbing shared by :class:`MultiposVisionTransformer` and retrofitted
    models (whose class becomes a subclass of their own class and this mixin)."""

    pos_schemes: VisionSchemes
    lff: LearnableFourierFeatures | None
    rope: RotaryEmbedding | None
    gta: GeometricTransformAttention | None

    # Provided by timm's VisionTransformer.
    patch_embed: Any
    blocks: Any
    num_prefix_tokens: int
    norm: Any
    grad_checkpointing: bool
    _pos_embed: Callable[[Tensor], Tensor]
    patch_drop: Any
    norm_pre: Any

    def _check_schemes(self, schemes: VisionSchemes) -> None:
        """Raise before anything is changed if ``schemes`` cannot go on this model."""
        if schemes.relative and not isinstance(self.patch_drop, torch.nn.Identity):
            raise ValueError(
                "patch dropout drops tokens from the grid; it cannot be combined with "
                f"{schemes.names}"
            )
        peg = schemes.get("peg")
        for i in peg.blocks if peg is not None else ():
            if not 0 <= i < len(self.blocks):
                raise ValueError(f"peg block index {i} out of range for {len(self.blocks)} blocks")

    def _build_schemes(
        self, schemes: VisionSchemes, generator: torch.Generator | None
    ) -> _NewModules:
        """Check ``schemes`` against this model and build every new submodule (their own
        checks run here), changing nothing yet."""
        MultiposVisionMixin._check_schemes(self, schemes)  # also on a model not yet converted
        ref = self.patch_embed.proj.weight
        lff = rope = None
        if (c := schemes.get("lff")) is not None:
            lff = LearnableFourierFeatures(
                2,
                ref.shape[0],
                num_features=c.num_features,
                hidden_dim=c.hidden_dim,
                gamma=c.gamma,
                generator=generator,
                device=ref.device,
            ).to(dtype=ref.dtype)
            if c.init == "zero":
                last = lff.mlp[-1]
                assert isinstance(last, torch.nn.Linear)
                torch.nn.init.zeros_(last.weight)
                torch.nn.init.zeros_(last.bias)
        if (c := schemes.get("rope_axial_2d")) is not None:
            # The registered scheme fixes the axes and the layout; its tables carry the layout.
            module = create_scheme(
                "rope_axial_2d",
                head_dim=self.blocks[0].attn.head_dim,
                base=c.base,
                scaling=c.scaling,
            )
            assert isinstance(module, RotaryEmbedding)
            rope = module.to(ref.device)
        gta = None
        if (c := schemes.get("gta")) is not None:
            # SO(2) blocks with rope_axial_2d's frequencies and layout over the whole head.
            made = create_scheme(
                "gta",
                head_dim=self.blocks[0].attn.head_dim,
                base=c.base,
                transform_values=c.transform_values,
            )
            assert isinstance(made, GeometricTransformAttention)
            gta = made
        blocks = [
            build_block_modules(block, schemes, i, self.num_prefix_tokens, generator)
            for i, block in enumerate(self.blocks)
        ]
        return _NewModules(schemes, lff, rope, gta, blocks)

    def _install_schemes(self, new: _NewModules) -> None:
        self.pos_schemes = new.schemes
        self.lff, self.rope, self.gta = new.lff, new.rope, new.gta
        for block, modules in zip(self.blocks, new.blocks, strict=True):
            MultiposBlock.install(block, modules)

    @torch.jit.ignore  # type: ignore[untyped-decorator]
    def no_weight_decay(self) -> set[str]:
        """Parameter names timm's optimizer factory keeps out of weight decay.

        timm's own (``pos_embed``, ``cls_token``...), plus, as the official codes do: the
        RoPE-Mixed frequencies (naver-ai/rope-vit excludes ``freqs``) and every PEG parameter
        (Twins excludes ``pos_block.*``). iRPE tables and LFF stay decayed, as in the official
        DeiT+iRPE code (which excludes only ``pos_embed`` and ``cls_token``).
        """
        own = getattr(super(), "no_weight_decay", None)
        names: set[str] = set(own()) if own is not None else set()
        assert isinstance(self, torch.nn.Module)
        for name, _ in self.named_parameters():
            if name.endswith(".rope_mixed.freqs") or ".peg." in name:
                names.add(name)
        return names

    def position_context(
        self, grid: tuple[int, int], device: torch.device
    ) -> VisionPositionContext:
        """Grid positions, rotary tables, GTA representation and iRPE buckets of an
        ``(H, W)`` patch grid."""
        positions = build_grid_positions(
            grid, num_prefix_tokens=self.num_prefix_tokens, device=device
        )
        # (row, col) -> (x, y) = (col, row): the first rotary section turns with the column,
        # as in the official RoPE-ViT code and timm's Eva, so their weights transfer as they are.
        full = positions.with_prefix().flip(0)
        rope = self.rope(full) if self.rope is not None else None
        # Prefix tokens sit at 0: their SO(2) blocks are the identity.
        gta = getattr(self, "gta", None)
        rep = gta.representation(full) if gta is not None else None
        gta_values = gta.transform_values if gta is not None else True
        buckets = None
        if (c := self.pos_schemes.get("irpe")) is not None:
            buckets = irpe_buckets(
                positions.patches,
                method=c.method,
                ratio=c.ratio,
                num_prefix_tokens=self.num_prefix_tokens,
            )
        return VisionPositionContext(positions, full, rope, buckets, rep, gta_values)

    def _lff_term(self, pos: VisionPositionContext, x: Tensor) -> Tensor:
        assert self.lff is not None
        # Patch centres divided by this grid's size ("unit") or the model's default grid.
        if self.pos_schemes.get("lff").coords == "unit":
            sizes = pos.grid.shape
        else:
            sizes = tuple(self.patch_embed.grid_size)
        patches = pos.grid.patches
        coords = torch.stack([(patches[a] + 0.5) / sizes[a] for a in range(2)])
        pe = self.lff(coords).to(x.dtype)  # (N, C)
        prefix = pe.new_zeros(self.num_prefix_tokens, pe.shape[-1])
        return torch.cat((prefix, pe), dim=0).unsqueeze(0)

    def _embed(self, x: Tensor) -> tuple[Tensor, VisionPositionContext]:
        x = self.patch_embed(x)
        # Decided by configuration, not by the tensor, so that torch.fx can trace a model of
        # fixed input size (as it traces timm's own ViT): the grid and the position context are
        # then constants of the graph.
        if getattr(self, "dynamic_img_size", False):  # NHWC from the patch embedding
            grid = (x.shape[1], x.shape[2])
        else:
            grid = (self.patch_embed.grid_size[0], self.patch_embed.grid_size[1])
        assert isinstance(self, torch.nn.Module)
        pos = self.position_context(grid, next(self.parameters()).device)
        x = self._pos_embed(x)
        if self.lff is not None:
            x = x + self._lff_term(pos, x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        return x, pos

    def _run_block(
        self,
        block: MultiposBlock,
        x: Tensor,
        pos: VisionPositionContext,
        attn_mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            out: Tensor = checkpoint(block, x, attn_mask, is_causal, pos, use_reentrant=False)
            return out
        result: Tensor = block(x, attn_mask=attn_mask, is_causal=is_causal, pos=pos)
        return result

    def forward_features(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """Patch embedding, blocks (with the position context) and the final norm."""
        x, pos = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x, pos, attn_mask, is_causal)
        out: Tensor = self.norm(x)
        return out

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Any:
        """timm's ``forward_intermediates`` contract, with the position scheme applied."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        bsz = x.shape[0]
        x, pos = self._embed(x)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        inter: list[Tensor] = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, pos, attn_mask, is_causal)
            if i in take:
                inter.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in inter] if p else None
        inter = [y[:, p:] for y in inter]
        if output_fmt == "NCHW":
            height, width = pos.grid.shape
            # (B, H*W, C) -> (B, C, H, W)
            inter = [
                y.reshape(bsz, height, width, -1).permute(0, 3, 1, 2).contiguous() for y in inter
            ]
        if output_dict:
            result: dict[str, Any] = {"image_intermediates": inter}
            if prefix is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                result["image_features"] = self.norm(x)
            return result
        out: list[Any] = list(inter)
        if return_prefix_tokens and prefix is not None:
            out = list(zip(inter, prefix, strict=True))
        if intermediates_only:
            return out
        return self.norm(x), out


class MultiposVisionTransformer(MultiposVisionMixin, VisionTransformer):
    """timm ``VisionTransformer`` with position schemes selected by ``pos_scheme``.

    Args:
        pos_scheme: A registry name declared for timm (``"irpe"``, ``"peg"``, ``"lff"``,
            ``"rope_axial_2d"``, ``"rope_mixed"``, ``"gta"``; all of them:
            :func:`multipos.vision.vit_scheme_names`), ``"ape"`` (timm's learned absolute
            table), ``"none"``, or a list combining them (e.g. ``["ape", "irpe"]`` as in the
            iRPE paper, ``["peg"]`` as CPVT).
        pos_cfg: Options per scheme, e.g. ``{"irpe": {"method": "product", "mode":
            "contextual", "on": "qkv"}, "peg": {"blocks": [0, 1, 2]}}``; see
            :mod:`multipos.vision.schemes` for every option.
        generator: Random generator for the new position parameters' initialisation.
        **kwargs: Everything timm's ``VisionTransformer`` accepts (``img_size``,
            ``dynamic_img_size``, ``class_token``, ``reg_tokens``...). ``pos_embed`` follows from
            ``pos_scheme`` (``"learn"`` with ``"ape"``, ``"none"`` without).

    Raises:
        ValueError: On an unknown or inconsistent scheme, or an explicit ``pos_embed`` that
            contradicts it.
    """

    def __init__(
        self,
        *args: Any,
        pos_scheme: str | Sequence[str] = "ape",
        pos_cfg: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        schemes = VisionSchemes.parse(pos_scheme, pos_cfg)
        wanted = "learn" if schemes.uses("ape") else "none"
        given = kwargs.get("pos_embed", wanted)
        if (given in ("", "none")) != (wanted == "none"):
            raise ValueError(
                f"pos_embed={given!r} contradicts pos_scheme {list(schemes.names) or 'none'}; "
                "include 'ape' in pos_scheme for a learned absolute table"
            )
        kwargs["pos_embed"] = given
        super().__init__(*args, **kwargs)
        self._install_schemes(self._build_schemes(schemes, generator))
