r"""Group elements of token geometry for GTA: SO(2) blocks of coordinates, SE(3) of cameras.

From "GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers" (Miyato et al.,
2024, arXiv:2310.10375), Sec. 3: a token's geometry is a group element whose representation
acts on the head channels. This module builds the blocks and checks them;
:mod:`multipos.groups` assembles them into a representation and attends with it.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, get_args

import torch
from torch import Tensor

from multipos.frequencies import rotary_inv_freq

__all__ = [
    "Convention",
    "check_block_kind",
    "check_head_dim",
    "invert_blocks",
    "repeated_along_n",
    "se3_blocks",
    "so2_angles",
    "so2_blocks",
]

Convention = Literal["world_to_camera", "camera_to_world"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


def _checking() -> bool:
    # Data-dependent checks are skipped while compiling/exporting (they would break the graph).
    return not torch.compiler.is_compiling()


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64 input: the dtype angles and blocks are kept in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tolerance(dtype: torch.dtype) -> float:
    # sqrt(eps), at least float32's (3.5e-4): loose enough for rounding of composed transforms
    # and for float32-built blocks cast to float64, tight enough for any scale, shear or
    # reflection a caller could mistake for a rotation.
    return math.sqrt(max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps))


@functools.lru_cache(maxsize=32)
def _frequencies(num_freqs: int, base: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``rotary_inv_freq(2F, b)`` on ``device`` in ``dtype``, made once per combination (a
    representation is built every forward; measured inside a GTA attention loop, the three
    small operations that made them took 30-110 us there). Read only; made outside
    inference mode, so autograd may save it later."""
    with torch.inference_mode(False):
        return rotary_inv_freq(2 * num_freqs, base).to(device=device, dtype=dtype)


def so2_angles(coords: Tensor, num_freqs: int, *, base: float = 100.0) -> Tensor:
    r"""Rotation angles of the SO(2) blocks: every axis of ``coords`` at ``num_freqs`` frequencies.

    .. math::
        \theta_{a F + f} = c_a\, \omega_f,\qquad \omega_f = b^{-f/F},\quad f = 0, \dots, F - 1

    the frequency schedule of this library's axial 2-D RoPE (``rope_axial_2d``: each axis gets
    the full spectrum :func:`~multipos.frequencies.rotary_inv_freq` ``(2F, b)``, axes in
    contiguous sections), so blocks in this order on interleaved channel pairs are that RoPE.

    Args:
        coords: ``(..., L, A)`` float coordinates (e.g. ``(x, y)`` = (column, row) patch indices).
        num_freqs: Frequencies per axis ``F`` (>= 1).
        base: Frequency base ``b`` (100 as RoPE-ViT axial).

    Returns:
        ``(..., L, A * F)`` in float32 (float64 for float64 coordinates).

    Raises:
        TypeError: If ``coords`` is not floating point or ``num_freqs`` is not an int.
        ValueError: If ``coords`` has fewer than 2 dimensions, is not finite, or ``num_freqs``
            < 1 or ``base`` <= 1.
    """
    if not isinstance(coords, Tensor) or not coords.is_floating_point():
        raise TypeError(f"coords must be a floating-point tensor (..., L, A), got {coords!r:.80}")
    if coords.dim() < 2:
        raise ValueError(f"coords must be (..., L, A), got shape {tuple(coords.shape)}")
    if isinstance(num_freqs, bool) or not isinstance(num_freqs, int):
        raise TypeError(f"num_freqs must be an int, got {num_freqs!r}")
    if num_freqs < 1:
        raise ValueError(f"num_freqs must be >= 1, got {num_freqs}")
    if _checking() and not bool(torch.isfinite(coords).all()):
        raise ValueError(f"coords must be finite, got NaN or inf in {tuple(coords.shape)}")
    wide = _wide(coords.dtype)
    if _checking():
        freqs = _frequencies(num_freqs, float(base), coords.device, wide)
    else:  # traced: built in the graph
        freqs = rotary_inv_freq(2 * num_freqs, base).to(device=coords.device, dtype=wide)
    # (..., L, A) -> (..., L, A, F) -> (..., L, A * F): axis-major, as RoPE's sections.
    return (coords.to(wide).unsqueeze(-1) * freqs).flatten(-2)


def so2_blocks(coords: Tensor, num_freqs: int, *, base: float = 100.0) -> Tensor:
    r"""SO(2) representation blocks :math:`R(\theta) = [[\cos\theta, -\sin\theta], [\sin\theta,
    \cos\theta]]` of 2-D (or any ``A``-axis) coordinates, GTA Sec. 3 (Miyato et al., 2024,
    arXiv:2310.10375).

    Block ``a * F + f`` turns by :math:`c_a\, b^{-f/F}` (see :func:`so2_angles`): with ``A = 2``,
    ``F = D / 4`` and coordinates ``(x, y)`` these blocks on the interleaved channel pairs of a
    ``D``-channel head are exactly ``rope_axial_2d`` (value transform off).

    Returns:
        ``(..., L, A * F, 2, 2)`` float32 (float64 for float64 coordinates).

    Raises:
        As :func:`so2_angles`.
    """
    theta = so2_angles(coords, num_freqs, base=base)
    cos, sin = theta.cos(), theta.sin()
    # (..., L, n) -> (..., L, n, 2, 2)
    return torch.stack((cos, -sin, sin, cos), dim=-1).view(*theta.shape, 2, 2)


def _check_rigid(mats: Tensor, name: str) -> None:
    tol = _tolerance(mats.dtype)
    bottom = mats.new_tensor([0.0, 0.0, 0.0, 1.0])
    if not bool(((mats[..., 3, :] - bottom).abs() <= tol).all()):
        raise ValueError(f"{name} must be rigid transforms: the last row must be [0, 0, 0, 1]")
    rot = mats[..., :3, :3]
    eye = torch.eye(3, dtype=mats.dtype, device=mats.device)
    if not bool(((rot.transpose(-1, -2) @ rot - eye).abs() <= tol).all()):
        raise ValueError(
            f"{name} must be rigid transforms: the rotation part R is not orthonormal "
            "(R^T R != I: a scale or shear?)"
        )
    if not bool((torch.linalg.det(rot) > 0).all()):
        raise ValueError(f"{name} must be rigid transforms: det R = -1 (a reflection)")


def se3_blocks(
    extrinsics: Tensor,
    *,
    translation_scale: float | Tensor = 1.0,
    convention: Convention = "world_to_camera",
) -> Tensor:
    r"""SE(3) representation blocks of camera poses, GTA Sec. 3 (Miyato et al., 2024,
    arXiv:2310.10375).

    For world-to-camera extrinsics :math:`E = [[R, t], [0, 1]]` the token frame is the camera
    frame and :math:`\rho = E^{-1} = [[R^\top, -R^\top t], [0, 1]]` (camera-to-world); for
    ``convention="camera_to_world"`` poses :math:`C` it is ``C`` itself. The translation column
    is multiplied by ``translation_scale`` (a group homomorphism: conjugation by
    ``diag(1, 1, 1, 1/s)``), so :math:`\rho_i^{-1}\rho_j` still depends only on the relative
    pose and is unchanged when every extrinsic becomes :math:`E G` for one rigid :math:`G`.

    Args:
        extrinsics: ``(..., 4, 4)`` rigid transforms.
        translation_scale: Scale of the translation (a float or a scalar tensor, e.g. a
            learnable parameter as in the paper's code, initialised there at 0.01).
        convention: ``"world_to_camera"`` (default, OpenCV extrinsics) or
            ``"camera_to_world"``.

    Returns:
        ``(..., 4, 4)`` in float32 (float64 for float64 input).

    Raises:
        TypeError: If ``extrinsics`` is not a floating-point tensor.
        ValueError: If the shape is not ``(..., 4, 4)``, values are NaN/inf, the last row is not
            ``[0, 0, 0, 1]``, the rotation part is not orthonormal with det +1 (within
            ``sqrt(eps)`` of its dtype, at least 3.5e-4), or ``convention`` is unknown.
    """
    if not isinstance(extrinsics, Tensor) or not extrinsics.is_floating_point():
        raise TypeError(
            f"extrinsics must be a floating-point tensor (..., 4, 4), got {extrinsics!r:.80}"
        )
    if extrinsics.dim() < 2 or tuple(extrinsics.shape[-2:]) != (4, 4):
        raise ValueError(f"extrinsics must be (..., 4, 4), got shape {tuple(extrinsics.shape)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    mats = extrinsics.to(_wide(extrinsics.dtype))
    if _checking():
        if not bool(torch.isfinite(mats).all()):
            raise ValueError(f"extrinsics must be finite, got NaN or inf in {tuple(mats.shape)}")
        _check_rigid(mats, "extrinsics")
    rot, trans = mats[..., :3, :3], mats[..., :3, 3:]
    if convention == "world_to_camera":
        rot = rot.transpose(-1, -2)
        trans = -(rot @ trans)
    scale = torch.as_tensor(translation_scale, dtype=mats.dtype, device=mats.device)
    top = torch.cat((rot, trans * scale), dim=-1)  # (..., 3, 4)
    bottom = torch.zeros_like(mats[..., 3:, :])
    bottom[..., 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def invert_blocks(block: Tensor, kind: str, index: int) -> Tensor:
    if kind == "orthogonal":
        return block.transpose(-1, -2)
    if kind == "rigid":
        rot_t = block[..., :3, :3].transpose(-1, -2)
        top = torch.cat((rot_t, -(rot_t @ block[..., :3, 3:])), dim=-1)
        return torch.cat((top, block[..., 3:, :]), dim=-2)
    inv: Tensor
    inv, info = torch.linalg.inv_ex(block.to(torch.float64))
    if _checking() and bool((info != 0).any()):
        raise ValueError(f"blocks[{index}] has singular matrices; a representation is invertible")
    return inv.to(block.dtype)


def check_block_kind(block: Tensor, kind: str, index: int) -> None:
    tol = _tolerance(block.dtype)
    size = block.shape[-1]
    name = f"blocks[{index}] (kind {kind!r})"
    if kind == "rotation":
        a, b, c, d = block[..., 0, 0], block[..., 0, 1], block[..., 1, 0], block[..., 1, 1]
        ok = ((a - d).abs() <= tol) & ((b + c).abs() <= tol) & ((a * a + c * c - 1).abs() <= tol)
        if not bool(ok.all()):
            raise ValueError(
                f"{name} must hold SO(2) rotations [[cos, -sin], [sin, cos]]; pass kinds with "
                "'general' for other 2 x 2 blocks"
            )
    elif kind == "orthogonal":
        eye = torch.eye(size, dtype=block.dtype, device=block.device)
        if not bool(((block.transpose(-1, -2) @ block - eye).abs() <= tol).all()):
            raise ValueError(f"{name} is not orthogonal (M^T M != I); use kind 'general'")
    elif kind == "rigid":
        _check_rigid(block, name)


def repeated_along_n(block: Tensor) -> bool:
    """Whether every token's ``n`` blocks are one block: expanded (stride 0), or, outside
    compilation, equal."""
    if block.stride(2) == 0:
        return True
    return _checking() and torch.equal(block, block[:, :, :1].expand_as(block))


def check_head_dim(head_dim: int, covered: int) -> None:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int):
        raise TypeError(f"head_dim must be an int, got {head_dim!r}")
    if covered > head_dim:
        raise ValueError(
            f"the blocks cover {covered} channels but head_dim is {head_dim}; the partition "
            "(sum of n_i * d_i) must fit in the head"
        )
