r"""Camera geometry of the multi-view encoder: input checks, patch rays, GTA channel layout.

Conventions (OpenCV): an extrinsic :math:`E = [R \mid t]` maps world points to camera points,
:math:`x_{cam} = R\, x_{world} + t`; the camera looks along :math:`+z`, :math:`x` right,
:math:`y` down; an intrinsic :math:`K` maps camera points to pixels,
:math:`(u, v, 1)^\top \propto K x_{cam}`, with pixel centres at half-integers (the pixel in
column 0 covers :math:`u \in [0, 1)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GTALayout", "check_extrinsics", "check_intrinsics", "patch_rays"]


@dataclass(frozen=True)
class GTALayout:
    r"""How the channels of one attention head are split among the GTA group blocks.

    From "GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers" (Miyato,
    Jaeger, Welling, Geiger, ICLR 2024, arXiv:2310.10375), Sec. 4 and its multi-view setting
    (SE(3) of the camera plus SO(2) of the patch position): the head channels are laid out as

    ``[ se3_dim | so2_dim | identity ]``

    - ``se3_dim`` channels (a multiple of 4): ``se3_dim / 4`` homogeneous 4-vectors, each acted
      on by the 4x4 rigid transform of the token's camera (camera to world, translation scaled
      by ``translation_scale``);
    - ``so2_dim`` channels (a multiple of 4): 2x2 rotations of the patch's (row, column) index
      in its view at ``so2_dim / 4`` frequencies per axis, :math:`\omega_f = b^{-f/F}`,
      :math:`f = 0 .. F-1` with base :math:`b` = ``base``;
    - the remaining channels: identity (plain attention channels).

    ``None`` picks the default of the paper's CLEVR-TR configuration, half of the head for
    SE(3) and half for SO(2) (rounded down to multiples of 4), the rest identity.

    Args:
        se3_dim: Channels per head acted on by SE(3); a multiple of 4, or ``None``.
        so2_dim: Channels per head acted on by SO(2); a multiple of 4, or ``None``.
        base: Frequency base of the SO(2) blocks.
        translation_scale: Factor on the camera translation (the paper's translation
            coefficient); choose it so that scaled translations are of order 1.

    Raises:
        ValueError: From :meth:`resolve` if the dims are negative, not multiples of 4 or sum
            to more than the head width; here if ``base`` or ``translation_scale`` is not
            positive.
    """

    se3_dim: int | None = None
    so2_dim: int | None = None
    base: float = 100.0
    translation_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.base > 0:
            raise ValueError(f"GTALayout base must be positive, got {self.base}")
        if not self.translation_scale > 0:
            raise ValueError(
                f"GTALayout translation_scale must be positive, got {self.translation_scale}"
            )

    def resolve(self, head_dim: int) -> tuple[int, int, int]:
        """``(se3_dim, so2_dim, identity_dim)`` for heads of width ``head_dim``."""
        se3 = 4 * (head_dim // 8) if self.se3_dim is None else self.se3_dim
        so2 = 4 * (head_dim // 8) if self.so2_dim is None else self.so2_dim
        for name, value in (("se3_dim", se3), ("so2_dim", so2)):
            if value < 0 or value % 4:
                raise ValueError(
                    f"GTALayout {name} must be a non-negative multiple of 4, got {value}"
                )
        if se3 + so2 > head_dim:
            raise ValueError(
                f"GTALayout se3_dim + so2_dim = {se3} + {so2} exceeds head_dim {head_dim}"
            )
        if se3 == 0 and so2 == 0:
            raise ValueError("GTALayout gives no channel to SE(3) or SO(2): nothing to encode")
        return se3, so2, head_dim - se3 - so2


def check_extrinsics(extrinsics: Tensor, batch: int, views: int, *, atol: float = 1e-4) -> None:
    r"""Raise unless ``extrinsics`` is ``(B, V, 4, 4)`` of rigid transforms.

    Rigid: bottom row :math:`(0, 0, 0, 1)`, :math:`R^\top R = I` and :math:`\det R = +1` to
    ``atol`` (scaled by the dtype's precision when that is coarser).

    Raises:
        TypeError: If ``extrinsics`` is not a floating-point tensor.
        ValueError: If the shape is not ``(batch, views, 4, 4)`` or a transform is not rigid.
    """
    if not isinstance(extrinsics, Tensor) or not extrinsics.is_floating_point():
        raise TypeError(f"extrinsics must be a floating-point tensor, got {type(extrinsics)}")
    if tuple(extrinsics.shape) != (batch, views, 4, 4):
        raise ValueError(
            f"extrinsics must be (B, V, 4, 4) = ({batch}, {views}, 4, 4) to match the images, "
            f"got {tuple(extrinsics.shape)}"
        )
    e = extrinsics.detach().double()
    tol = max(atol, 100 * torch.finfo(extrinsics.dtype).eps)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=e.dtype, device=e.device)
    rot = e[..., :3, :3]
    gram = rot.transpose(-1, -2) @ rot
    eye = torch.eye(3, dtype=e.dtype, device=e.device)
    bad = (
        ~torch.isfinite(e).all(dim=(-1, -2))
        | ((e[..., 3, :] - bottom).abs() > tol).any(dim=-1)
        | ((gram - eye).abs() > tol).flatten(-2).any(dim=-1)
        | ((torch.linalg.det(rot) - 1).abs() > tol)
    )
    if bad.any():
        b, v = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            "extrinsics must be rigid world-to-camera transforms [R | t; 0 0 0 1] with R a "
            f"rotation (R^T R = I, det R = 1); extrinsics[{b}, {v}] is not:\n{extrinsics[b, v]}"
        )


def check_intrinsics(intrinsics: Tensor, batch: int, views: int) -> None:
    """Raise unless ``intrinsics`` is ``(B, V, 3, 3)``, invertible, with bottom row (0, 0, 1).

    Raises:
        TypeError: If ``intrinsics`` is not a floating-point tensor.
        ValueError: On another shape, another bottom row or a singular matrix.
    """
    if not isinstance(intrinsics, Tensor) or not intrinsics.is_floating_point():
        raise TypeError(f"intrinsics must be a floating-point tensor, got {type(intrinsics)}")
    if tuple(intrinsics.shape) != (batch, views, 3, 3):
        raise ValueError(
            f"intrinsics must be (B, V, 3, 3) = ({batch}, {views}, 3, 3) to match the images, "
            f"got {tuple(intrinsics.shape)}"
        )
    k = intrinsics.detach().double()
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=k.dtype, device=k.device)
    if ((k[..., 2, :] - bottom).abs() > 1e-6).any() or (torch.linalg.det(k).abs() < 1e-12).any():
        raise ValueError(
            "intrinsics must be invertible camera matrices [[fx, s, cx], [0, fy, cy], [0, 0, 1]]"
        )


def patch_rays(
    extrinsics: Tensor, intrinsics: Tensor, grid: tuple[int, int], patch_size: int
) -> tuple[Tensor, Tensor]:
    r"""World-frame ray origin and unit direction through every patch centre.

    .. math::
        o = -R^\top t, \qquad d = \frac{R^\top K^{-1} (u, v, 1)^\top}
        {\lVert R^\top K^{-1} (u, v, 1)^\top \rVert}

    with :math:`(u, v)` the pixel coordinates of the patch centre.

    Args:
        extrinsics: ``(B, V, 4, 4)`` world-to-camera transforms.
        intrinsics: ``(B, V, 3, 3)``.
        grid: Patches per view ``(rows, cols)``.
        patch_size: Pixels per patch side.

    Returns:
        ``(origins, directions)``, each ``(B, V, P, 3)`` with ``P = rows * cols`` in row-major
        order, in the dtype of ``extrinsics`` (computed in float32 or wider).
    """
    dtype = torch.promote_types(extrinsics.dtype, torch.float32)
    e, k = extrinsics.to(dtype), intrinsics.to(dtype)
    rows, cols = grid
    centre = (torch.arange(rows, dtype=dtype, device=e.device) + 0.5) * patch_size
    v_pix, u_pix = torch.meshgrid(
        centre,
        (torch.arange(cols, dtype=dtype, device=e.device) + 0.5) * patch_size,
        indexing="ij",
    )
    pixels = torch.stack([u_pix, v_pix, torch.ones_like(u_pix)], dim=-1).reshape(-1, 3)  # (P, 3)
    rot_t = e[..., :3, :3].transpose(-1, -2)  # (B, V, 3, 3) camera -> world rotation
    cam = pixels @ torch.linalg.inv(k).transpose(-1, -2)  # (B, V, P, 3) camera-frame rays
    directions = torch.nn.functional.normalize(cam @ rot_t.transpose(-1, -2), dim=-1)
    origins = -(rot_t @ e[..., :3, 3:]).squeeze(-1)  # (B, V, 3)
    origins = origins.unsqueeze(-2).expand_as(directions)
    return origins.to(extrinsics.dtype), directions.to(extrinsics.dtype)
