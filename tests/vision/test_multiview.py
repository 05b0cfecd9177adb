"""MultiViewEncoder: GTA's world-frame invariance, token order, rays, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("timm")

from multipos.vision import GTALayout, MultiViewEncoder
from multipos.vision.multiview_geometry import patch_rays


def rigid(n: int, g: torch.Generator, shift: float = 2.0) -> torch.Tensor:
    """``n`` random rigid transforms (float64)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    e = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    e[:, :3, :3] = q
    e[:, :3, 3] = shift * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return e


def intrinsics(batch: int, views: int, size: int = 16) -> torch.Tensor:
    k = torch.tensor([[20.0, 0.0, size / 2], [0.0, 18.0, size / 2 - 1], [0.0, 0.0, 1.0]])
    return k.double().expand(batch, views, 3, 3).clone()


def encoder(geometry: str = "gta", **kwargs: object) -> MultiViewEncoder:
    torch.manual_seed(0)
    return MultiViewEncoder(
        image_size=(16, 12),
        patch_size=4,
        in_chans=3,
        dim=32,
        depth=2,
        num_heads=2,
        geometry=geometry,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    ).double()


def scene(g: torch.Generator, batch: int = 2, views: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(batch, views, 3, 16, 12, generator=g, dtype=torch.float64)
    return images, rigid(batch * views, g).reshape(batch, views, 4, 4)


@pytest.mark.parametrize(
    "layout",
    [GTALayout(), GTALayout(se3_dim=8, so2_dim=4), GTALayout(se3_dim=16, so2_dim=0)],
    ids=["default", "with_identity", "se3_only"],
)
@pytest.mark.parametrize("translation_scale", [1.0, 0.1])
def test_gta_outputs_unchanged_by_a_change_of_world_frame(
    layout: GTALayout, translation_scale: float
) -> None:
    g = torch.Generator().manual_seed(1)
    layout = GTALayout(layout.se3_dim, layout.so2_dim, translation_scale=translation_scale)
    model = encoder(gta=layout)
    images, extrinsics = scene(g)
    world = rigid(2, g, shift=5.0)  # one rigid transform per scene
    out = model(images, extrinsics)
    moved = model(images, extrinsics @ world[:, None])
    torch.testing.assert_close(moved, out, rtol=0, atol=1e-10)
    # The geometry does enter: moving one camera alone changes the output.
    one = extrinsics.clone()
    one[:, 1] = one[:, 1] @ world
    assert (model(images, one) - out).abs().max() > 1e-3


@pytest.mark.parametrize("kwargs", [{}, {"pose_embedding": "rays"}], ids=["extrinsic", "rays"])
def test_absolute_pose_embedding_is_not_invariant(kwargs: dict[str, str]) -> None:
    g = torch.Generator().manual_seed(2)
    model = encoder("absolute", **kwargs)
    images, extrinsics = scene(g)
    k = intrinsics(2, 3) if kwargs else None
    out = model(images, extrinsics, k)
    moved = model(images, extrinsics @ rigid(2, g, shift=5.0)[:, None], k)
    assert (moved - out).abs().max() > 1e-3


def test_none_ignores_the_cameras() -> None:
    g = torch.Generator().manual_seed(3)
    model = encoder("none")
    images, extrinsics = scene(g)
    other = rigid(6, g).reshape(2, 3, 4, 4)
    torch.testing.assert_close(model(images, other), model(images, extrinsics), rtol=0, atol=0)


@pytest.mark.parametrize("geometry", ["gta", "none"])
def test_token_order_is_view_major_and_views_are_a_set(geometry: str) -> None:
    g = torch.Generator().manual_seed(4)
    model = encoder(geometry)
    images, extrinsics = scene(g)
    perm = torch.tensor([2, 0, 1])
    out = model(images, extrinsics).unflatten(1, (3, model.num_patches))  # (B, V, P, dim)
    permuted = model(images[:, perm], extrinsics[:, perm]).unflatten(1, (3, model.num_patches))
    torch.testing.assert_close(permuted, out[:, perm], rtol=0, atol=1e-10)


def test_representation_blocks_follow_the_token_order() -> None:
    g = torch.Generator().manual_seed(5)
    model = encoder(gta=GTALayout(se3_dim=8, so2_dim=8, base=10.0, translation_scale=0.5))
    _, extrinsics = scene(g)
    dense = model.representation(extrinsics).dense()  # (B, V*P, D, D)
    rows, cols = model.grid
    assert dense.shape == (2, 3 * rows * cols, 16, 16)
    b, v, r, c = 1, 2, 3, 1
    token = v * rows * cols + r * cols + c
    scaled = extrinsics[b, v].clone()
    scaled[:3, 3] *= 0.5
    torch.testing.assert_close(dense[b, token, :4, :4], torch.linalg.inv(scaled))
    torch.testing.assert_close(dense[b, token, 4:8, 4:8], torch.linalg.inv(scaled))
    # SO(2): axis x = column at frequencies 1, 10^-1/2; then y = row; then identity.
    angles = torch.tensor([c, c * 10**-0.5, r, r * 10**-0.5], dtype=torch.float64)
    for f, theta in enumerate(angles):
        block = dense[b, token, 8 + 2 * f : 10 + 2 * f, 8 + 2 * f : 10 + 2 * f]
        expected = torch.stack([theta.cos(), -theta.sin(), theta.sin(), theta.cos()]).view(2, 2)
        torch.testing.assert_close(block, expected)
    torch.testing.assert_close(dense[b, token, 16:, 16:], torch.eye(0, dtype=torch.float64))


def test_patch_rays_pass_through_the_patch_centres() -> None:
    g = torch.Generator().manual_seed(6)
    extrinsics = rigid(2, g).reshape(1, 2, 4, 4)
    k = intrinsics(1, 2)
    origins, directions = patch_rays(extrinsics, k, (4, 3), 4)
    assert origins.shape == directions.shape == (1, 2, 12, 3)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 2, 12, dtype=torch.float64))
    points = origins + 3.0 * directions  # (1, V, P, 3) world points on the rays
    cam = points @ extrinsics[..., :3, :3].transpose(-1, -2) + extrinsics[..., None, :3, 3]
    pix = cam @ k.transpose(-1, -2)
    uv = pix[..., :2] / pix[..., 2:]
    row, col = torch.meshgrid(torch.arange(4), torch.arange(3), indexing="ij")
    centres = torch.stack([col, row], dim=-1).reshape(12, 2).double() * 4 + 2
    torch.testing.assert_close(uv, centres.expand(1, 2, 12, 2))
    assert (cam[..., 2] > 0).all()


@pytest.mark.parametrize(
    ("geometry", "kwargs"),
    [("gta", {}), ("absolute", {}), ("absolute", {"pose_embedding": "rays"}), ("none", {})],
)
def test_forward_backward_reaches_every_parameter(geometry: str, kwargs: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(7)
    model = encoder(geometry, **kwargs).float()
    images, extrinsics = scene(g, batch=2, views=2)
    k = intrinsics(2, 2).float() if kwargs else None
    out = model(images.float(), extrinsics.float(), k)
    assert out.shape == (2, 2 * 12, 32) and out.dtype == torch.float32
    out.pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bad_inputs_raise() -> None:
    g = torch.Generator().manual_seed(8)
    model = encoder()
    images, extrinsics = scene(g)
    with pytest.raises(ValueError, match=r"\(B, V, 4, 4\) = \(2, 3, 4, 4\)"):
        model(images, extrinsics[:, :2])
    with pytest.raises(ValueError, match="size"):
        model(images[..., :8], extrinsics)
    with pytest.raises(ValueError, match=r"\(B, V, C, H, W\)"):
        model(images[0], extrinsics)
    for bad in ("scale", "reflection", "bottom"):
        e = extrinsics.clone()
        if bad == "scale":
            e[1, 2, :3, :3] *= 1.1
        elif bad == "reflection":
            e[1, 2, :3, 0] *= -1
        else:
            e[1, 2, 3, 0] = 0.5
        with pytest.raises(ValueError, match=r"rigid.*extrinsics\[1, 2\]"):
            model(images, e)
    with pytest.raises(ValueError, match="only read by geometry='absolute'"):
        model(images, extrinsics, intrinsics(2, 3))
    rays = encoder("absolute", pose_embedding="rays")
    with pytest.raises(ValueError, match="needs intrinsics"):
        rays(images, extrinsics)
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 3\)"):
        rays(images, extrinsics, intrinsics(2, 2))
    with pytest.raises(TypeError, match="extrinsics"):
        model(images, extrinsics.long())
    with pytest.raises(ValueError, match="needs geometry='gta'"):
        encoder("none").representation(extrinsics)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"geometry": "rays"}, "geometry must be one of"),
        ({"patch_size": 5}, "must divide the image size"),
        ({"num_heads": 3}, "divisible by num_heads"),
        ({"geometry": "none", "gta": GTALayout()}, "only used with geometry='gta'"),
        ({"pose_embedding": "rays"}, "only used with geometry='absolute'"),
        ({"geometry": "absolute", "pose_embedding": "plucker"}, "pose_embedding must be"),
        ({"gta": GTALayout(se3_dim=6)}, "multiple of 4"),
        ({"gta": GTALayout(se3_dim=16, so2_dim=8)}, "exceeds head_dim 16"),
        ({"gta": GTALayout(se3_dim=0, so2_dim=0)}, "nothing to encode"),
        ({"patch_position": "sincos"}, "patch_position"),
    ],
)
def test_bad_configurations_raise(kwargs: dict[str, Any], match: str) -> None:
    base = {"image_size": 16, "patch_size": 4, "dim": 32, "num_heads": 2}
    with pytest.raises(ValueError, match=match):
        MultiViewEncoder(**{**base, **kwargs})


def test_layout_rejects_non_positive_scales() -> None:
    with pytest.raises(ValueError, match="translation_scale"):
        GTALayout(translation_scale=0.0)
    with pytest.raises(ValueError, match="base"):
        GTALayout(base=-1.0)
