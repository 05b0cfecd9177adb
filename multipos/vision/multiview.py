r"""MultiViewEncoder: a transformer over the patches of V posed views, with GTA attention.

From "GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers" (Miyato, Jaeger,
Welling, Geiger, ICLR 2024, arXiv:2310.10375). Camera conventions: see
:mod:`multipos.vision.multiview_geometry`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multipos.groups import BlockKind, GTARepresentation, gta_attention, se3_blocks, so2_blocks
from multipos.vision.multiview_geometry import (
    GTALayout,
    check_extrinsics,
    check_intrinsics,
    patch_rays,
)

__all__ = ["GTALayout", "Geometry", "MultiViewEncoder", "PoseEmbedding"]

Geometry = Literal["gta", "absolute", "none"]
PoseEmbedding = Literal["extrinsic", "rays"]
GEOMETRIES: tuple[str, ...] = get_args(Geometry)
POSE_EMBEDDINGS: tuple[str, ...] = get_args(PoseEmbedding)


class _Block(nn.Module):
    """Pre-norm transformer block whose attention takes optional GTA representations."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, rep: GTARepresentation | None) -> Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, length, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, D)
        if rep is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = gta_attention(q, k, v, rep)
        x = x + self.proj(out.transpose(1, 2).reshape(b, length, dim))
        y: Tensor = x + self.mlp(self.norm2(x))
        return y


class MultiViewEncoder(nn.Module):
    r"""Transformer encoder over the patch tokens of V posed views of one scene.

    Each view is cut into ``P = (H / p) * (W / p)`` patches of side ``p`` = ``patch_size``,
    embedded linearly, and every patch gets a learned embedding of its (row, column) within
    its view (shared by the views; ``patch_position="none"`` drops it). The camera geometry
    enters by ``geometry``:

    - ``"gta"``: geometric transform attention, Eq. (5) of "GTA: A Geometry-Aware Attention
      Mechanism for Multi-View Transformers" (Miyato, Jaeger, Welling, Geiger, ICLR 2024,
      arXiv:2310.10375). Every token :math:`i` carries a block-diagonal representation
      :math:`\rho_i = \operatorname{diag}(\rho^{SE(3)}(g_i)^{\oplus n}, \rho^{SO(2)}(x_i),
      I)`, with :math:`g_i` = the camera-to-world transform of its view (the inverse of its
      extrinsic) and :math:`x_i` its (row, column) in the view; the channel split is
      ``gta`` (a :class:`GTALayout`). Attention uses

      .. math::
          o_i = \rho_i^{-1} \sum_j \operatorname{softmax}_j\big(
          q_i^\top \rho_i^{-1} \rho_j k_j / \sqrt{D}\big)\, \rho_j v_j,

      so only :math:`\rho_i^{-1}\rho_j` = (camera :math:`j` to camera :math:`i`) enters and
      the output is unchanged when every extrinsic of a scene is composed with the same rigid
      transform (a change of world frame).
    - ``"absolute"``: a learned linear embedding of the pose added to the tokens:
      ``pose_embedding="extrinsic"`` embeds the top three rows of the view's extrinsic
      (12 numbers, one embedding per view); ``"rays"`` embeds each patch centre's world-frame
      ray origin and direction (6 numbers per token; needs ``intrinsics``).
    - ``"none"``: no camera geometry; only the within-view patch position.

    Args:
        image_size: ``(H, W)`` (or one int for square images) of every view.
        patch_size: Patch side ``p``; must divide ``H`` and ``W``.
        in_chans: Image channels ``C``.
        dim: Token width.
        depth: Number of transformer blocks.
        num_heads: Attention heads; ``dim / num_heads`` is the head width ``D``.
        mlp_ratio: MLP hidden width over ``dim``.
        geometry: ``"gta"``, ``"absolute"`` or ``"none"``.
        gta: Channel layout of the GTA heads (default :class:`GTALayout`\ ``()``); only
            with ``geometry="gta"``.
        pose_embedding: ``"extrinsic"`` or ``"rays"``; only with ``geometry="absolute"``.
        patch_position: ``"learned"`` (default) or ``"none"``.

    Shape:
        ``forward(images, extrinsics, intrinsics=None)`` with ``images: (B, V, C, H, W)``,
        ``extrinsics: (B, V, 4, 4)`` world-to-camera rigid transforms and ``intrinsics:
        (B, V, 3, 3)`` (read only by ``geometry="absolute"`` with ``pose_embedding="rays"``)
        returns ``(B, V * P, dim)``. Token order: view-major, then row-major within a view:
        token ``v * P + r * (W / p) + c`` is patch (row ``r``, column ``c``) of view ``v``.

    Raises:
        ValueError: At construction on an unknown ``geometry``, ``pose_embedding`` or
            ``patch_position``, an option given to a geometry that does not use it,
            ``dim`` not divisible by ``num_heads``, a patch size that does not divide the
            image, or a :class:`GTALayout` that does not fit the head. In ``forward`` on
            images of another size or channel count, extrinsics or intrinsics whose batch or
            view count differ from the images', non-rigid extrinsics, missing intrinsics for
            rays and intrinsics given to a geometry that does not read them.
    """

    patch_coords: Tensor  # (P, 2) (column, row) of every patch, a buffer

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_chans: int = 3,
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        geometry: Geometry = "gta",
        gta: GTALayout | None = None,
        pose_embedding: PoseEmbedding | None = None,
        patch_position: Literal["learned", "none"] = "learned",
    ) -> None:
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        if gta is not None and geometry != "gta":
            raise ValueError(
                f"gta (a GTALayout) is only used with geometry='gta', not {geometry!r}"
            )
        if pose_embedding is not None and geometry != "absolute":
            raise ValueError(
                f"pose_embedding is only used with geometry='absolute', not {geometry!r}"
            )
        if geometry == "absolute" and pose_embedding is None:
            pose_embedding = "extrinsic"
        if pose_embedding is not None and pose_embedding not in POSE_EMBEDDINGS:
            raise ValueError(
                f"pose_embedding must be one of {POSE_EMBEDDINGS}, got {pose_embedding!r}"
            )
        if patch_position not in ("learned", "none"):
            raise ValueError(f"patch_position must be 'learned' or 'none', got {patch_position!r}")
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ValueError(
                f"patch_size {patch_size} must divide the image size ({height}, {width})"
            )
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.image_size = (height, width)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid = (height // patch_size, width // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.geometry = geometry
        self.pose_embedding = pose_embedding
        self.head_dim = dim // num_heads
        self.gta = (gta or GTALayout()) if geometry == "gta" else None
        self.layout = self.gta.resolve(self.head_dim) if self.gta is not None else None

        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.patch_pos = (
            nn.Parameter(torch.zeros(self.num_patches, dim))
            if patch_position == "learned"
            else None
        )
        self.pose_embed = (
            nn.Linear(12 if pose_embedding == "extrinsic" else 6, dim)
            if geometry == "absolute"
            else None
        )
        self.blocks = nn.ModuleList(_Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        rows, cols = self.grid
        row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        coords = torch.stack([col, row], dim=-1)  # (rows, cols, 2) as (x, y)
        self.register_buffer("patch_coords", coords.reshape(-1, 2).float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal (std 0.02) linear weights and position tables, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if self.patch_pos is not None:
            nn.init.trunc_normal_(self.patch_pos, std=0.02)

    def representation(self, extrinsics: Tensor) -> GTARepresentation:
        """The GTA representation of every token, built once per forward.

        Blocks in channel order: SE(3) ``(B, V*P, se3_dim / 4, 4, 4)`` (the view's
        camera-to-world transform, :func:`multipos.groups.se3_blocks`), SO(2)
        ``(1, V*P, so2_dim / 2, 2, 2)`` of the patch's (column, row) in its view
        (:func:`multipos.groups.so2_blocks`); identity on the rest. Blocks with no channels are
        left out; computed in float32 or wider.

        Args:
            extrinsics: ``(B, V, 4, 4)`` world-to-camera rigid transforms.

        Raises:
            ValueError: If the encoder's geometry is not ``"gta"``, or (from
                :func:`multipos.groups.se3_blocks`) an extrinsic is not rigid.
        """
        if self.gta is None or self.layout is None:
            raise ValueError(f"representation() needs geometry='gta', not {self.geometry!r}")
        se3_dim, so2_dim, _ = self.layout
        batch, views = extrinsics.shape[:2]
        length = views * self.num_patches
        blocks: list[Tensor] = []
        kinds: list[BlockKind] = []
        if se3_dim:
            rho = se3_blocks(extrinsics, translation_scale=self.gta.translation_scale)
            # (B, V, 4, 4) -> (B, V, P, n, 4, 4) -> (B, V*P, n, 4, 4)
            rho = rho[:, :, None, None].expand(batch, views, self.num_patches, se3_dim // 4, 4, 4)
            blocks.append(rho.reshape(batch, length, se3_dim // 4, 4, 4))
            kinds.append("rigid")
        if so2_dim:
            coords = self.patch_coords.to(torch.promote_types(extrinsics.dtype, torch.float32))
            so2 = so2_blocks(coords, so2_dim // 4, base=self.gta.base)  # (P, n, 2, 2)
            blocks.append(so2.repeat(views, 1, 1, 1).unsqueeze(0))
            kinds.append("rotation")
        return GTARepresentation.from_blocks(blocks, self.head_dim, kinds=kinds)

    def _check(self, images: Tensor, extrinsics: Tensor, intrinsics: Tensor | None) -> None:
        if not isinstance(images, Tensor) or images.dim() != 5:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images)
            raise ValueError(f"images must be (B, V, C, H, W), got {shape}")
        batch, views, chans, height, width = images.shape
        if chans != self.in_chans or (height, width) != self.image_size:
            raise ValueError(
                f"images must have {self.in_chans} channels of size {self.image_size} "
                f"(patch_size {self.patch_size}), got {tuple(images.shape)}"
            )
        check_extrinsics(extrinsics, batch, views)
        if intrinsics is not None:
            if self.pose_embedding != "rays":
                raise ValueError(
                    "intrinsics are only read by geometry='absolute' with pose_embedding='rays'"
                    f"; this encoder has geometry={self.geometry!r}"
                )
            check_intrinsics(intrinsics, batch, views)
        elif self.pose_embedding == "rays":
            raise ValueError("pose_embedding='rays' needs intrinsics (B, V, 3, 3)")

    def forward(
        self, images: Tensor, extrinsics: Tensor, intrinsics: Tensor | None = None
    ) -> Tensor:
        """Tokens ``(B, V * P, dim)`` of the views, view-major (see the class docstring)."""
        self._check(images, extrinsics, intrinsics)
        batch, views = images.shape[:2]
        x = self.patch_embed(images.flatten(0, 1))  # (B*V, dim, rows, cols)
        x = x.flatten(2).transpose(1, 2).unflatten(0, (batch, views))  # (B, V, P, dim)
        if self.patch_pos is not None:
            x = x + self.patch_pos
        if self.pose_embed is not None:
            if self.pose_embedding == "rays":
                assert intrinsics is not None
                origins, directions = patch_rays(extrinsics, intrinsics, self.grid, self.patch_size)
                x = x + self.pose_embed(torch.cat([origins, directions], dim=-1).to(x.dtype))
            else:
                pose = extrinsics[..., :3, :].flatten(-2).to(x.dtype)  # (B, V, 12)
                x = x + self.pose_embed(pose).unsqueeze(2)
        x = x.flatten(1, 2)  # (B, V*P, dim)
        rep = self.representation(extrinsics) if self.gta is not None else None
        for block in self.blocks:
            x = block(x, rep)
        out: Tensor = self.norm(x)
        return out
