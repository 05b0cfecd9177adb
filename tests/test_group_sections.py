"""How GTA sections act (Miyato et al., 2024, arXiv:2310.10375): every path (SE(3) poses
shared by a view's tokens, one pose per token, in place on an owned output, under autograd)
equals the product with block-diagonal matrices built independently of the library."""

from __future__ import annotations

import pytest
import torch

from multipos import GTARepresentation, se3_blocks, so2_blocks
from multipos.group_sections import _IN_PLACE_RUN, _run_length
from tests.test_groups import _block_diag, _rigid

MODES = ("rho", "inverse", "transpose", "inverse_transpose")


def _blocks(per_view: int, views: int, num_se3: int, generator: torch.Generator, scale=0.5):
    """SE(3) blocks ``(B, V * per_view, num_se3, 4, 4)``, one pose per view, then SO(2) blocks."""
    ext = _rigid(2, views, generator=generator)
    se3 = se3_blocks(ext, translation_scale=scale).repeat_interleave(per_view, 1)
    se3 = se3[:, :, None].expand(-1, -1, num_se3, 4, 4)
    coords = torch.rand(1, views * per_view, 2, generator=generator, dtype=torch.float64) * 5
    return [se3, so2_blocks(coords, 2)]


def _reference(dense: torch.Tensor, x: torch.Tensor, mode: str) -> torch.Tensor:
    mats = {
        "rho": dense,
        "inverse": torch.linalg.inv(dense),
        "transpose": dense.mT,
        "inverse_transpose": torch.linalg.inv(dense).mT,
    }[mode]
    return torch.einsum("blij,bhlj->bhli", mats, x)


def _laid_out(shape: tuple[int, ...], layout: str, generator: torch.Generator) -> torch.Tensor:
    """``(B, H, L, D)`` in memory as given: head-major, token-major (SDPA's gradients, a ViT's
    q, k, v) or expanded over heads (the gradient of a sum)."""
    bsz, heads, length, dim = shape
    if layout == "token_major":
        x = torch.randn(bsz, length, heads, dim, generator=generator, dtype=torch.float64)
        return x.transpose(1, 2)
    if layout == "expanded":
        x = torch.randn(bsz, 1, length, dim, generator=generator, dtype=torch.float64)
        return x.expand(shape)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("per_view", [1, 3, _IN_PLACE_RUN, 2 * _IN_PLACE_RUN])
@pytest.mark.parametrize("num_se3", [1, 2, 8])
@pytest.mark.parametrize("layout", ["head_major", "token_major", "expanded"])
def test_every_path_equals_the_dense_product(per_view, num_se3, layout) -> None:
    g = torch.Generator().manual_seed(per_view * 10 + num_se3)
    blocks = _blocks(per_view, 2, num_se3, g)
    head_dim = 4 * num_se3 + 8 + 2  # SE(3), SO(2), identity
    rep = GTARepresentation.from_blocks(blocks, head_dim, kinds=["rigid", "rotation"])
    dense = _block_diag(blocks, head_dim)
    x = _laid_out((2, 3, 2 * per_view, head_dim), layout, g)
    for mode in MODES:
        ref = _reference(dense, x, mode)
        with torch.no_grad():
            fast = rep._act(x, mode, "x")
            owned = x.clone()
            in_place = rep._act(owned, mode, "x", owned=True)
        if layout != "expanded":
            assert in_place.data_ptr() == owned.data_ptr()
        leaf = x.detach().clone().requires_grad_()
        recorded = rep._act(leaf, mode, "x")
        for out in (fast, in_place, recorded):
            torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
        # The gradient of x -> A x is A^T applied to the upstream gradient.
        up = torch.randn(x.shape, generator=g, dtype=torch.float64)
        recorded.backward(up)
        transposed = {"rho": "transpose", "transpose": "rho", "inverse": "inverse_transpose"}
        back = transposed.get(mode, "inverse")
        assert leaf.grad is not None
        torch.testing.assert_close(leaf.grad, _reference(dense, up, back), atol=1e-12, rtol=0)


def test_runs_of_one_pose_are_found_only_when_even() -> None:
    g = torch.Generator().manual_seed(0)
    poses = _rigid(1, 3, generator=g)
    even = poses.repeat_interleave(4, 1)[:, :, None]  # (1, 12, 1, 4, 4)
    assert _run_length(even) == 4
    uneven = torch.cat([poses[:, :1].expand(1, 4, 4, 4), poses[:, 1:].repeat_interleave(8, 1)], 1)
    assert _run_length(uneven[:, :, None]) == 1
    assert _run_length(poses[:, :1, None].expand(1, 5, 1, 4, 4)) == 5
    # Equal in one batch element but not the other: no shared runs.
    pair = torch.stack([even[0], torch.cat([even[0, :2], even[0, 3:], even[0, :1]])])
    assert _run_length(pair) == 1


@pytest.mark.parametrize("per_view", [1, _IN_PLACE_RUN])
def test_gradients_reach_learnable_poses_and_inputs(per_view) -> None:
    g = torch.Generator().manual_seed(per_view)
    ext = _rigid(1, 2, generator=g)
    coords = torch.rand(1, 2 * per_view, 2, generator=g, dtype=torch.float64)
    x = torch.randn(1, 2, 2 * per_view, 14, generator=g, dtype=torch.float64)

    def transform(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        se3 = se3_blocks(ext, translation_scale=scale).repeat_interleave(per_view, 1)
        blocks = [se3[:, :, None].expand(-1, -1, 2, 4, 4), so2_blocks(coords, 1)]
        rep = GTARepresentation.from_blocks(blocks, 14, kinds=["rigid", "rotation"])
        return rep.apply_inverse_transpose(x) + rep.apply(x)

    scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transform, (scale, x.requires_grad_()))


def test_float32_blocks_on_bfloat16_and_float64_inputs() -> None:
    g = torch.Generator().manual_seed(3)
    blocks = [b.float() for b in _blocks(_IN_PLACE_RUN, 2, 8, g)]
    rep = GTARepresentation.from_blocks(blocks, 44, kinds=["rigid", "rotation"])
    dense = _block_diag(blocks, 44)
    x = torch.randn(2, 2, 2 * _IN_PLACE_RUN, 44, generator=g, dtype=torch.float64)
    with torch.no_grad():
        wide = rep.apply(x)
        narrow = rep.apply(x.bfloat16())
    assert wide.dtype == torch.float64 and narrow.dtype == torch.bfloat16
    ref = _reference(dense, x, "rho")
    torch.testing.assert_close(wide, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(narrow.double(), ref, atol=0.1, rtol=0.02)


def test_second_derivatives_of_the_action() -> None:
    g = torch.Generator().manual_seed(5)
    blocks = _blocks(_IN_PLACE_RUN, 2, 2, g)
    rep = GTARepresentation.from_blocks(blocks, 18, kinds=["rigid", "rotation"])
    x = torch.randn(2, 1, 2 * _IN_PLACE_RUN, 18, generator=g, dtype=torch.float64)
    x.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a: rep.apply_inverse_transpose(a) ** 2, (x,))


def test_one_representation_serves_every_shape_and_layout_in_turn() -> None:
    # The expanded factors are kept per (mode, batch, heads, layout): a representation reused
    # with other head counts, batches of one and both layouts must still give the product.
    g = torch.Generator().manual_seed(7)
    per_view = 2 * _IN_PLACE_RUN
    blocks = _blocks(per_view, 2, 4, g)
    head_dim = 4 * 4 + 8
    rep = GTARepresentation.from_blocks(blocks, head_dim, kinds=["rigid", "rotation"])
    dense = _block_diag(blocks, head_dim)
    for bsz, heads, layout in [
        (2, 3, "head_major"),
        (2, 5, "head_major"),
        (2, 3, "token_major"),
        (2, 5, "token_major"),
        (2, 3, "head_major"),
    ]:
        x = _laid_out((bsz, heads, 2 * per_view, head_dim), layout, g)
        for mode in MODES:
            with torch.no_grad():
                got = rep._act(x, mode, "x")
            torch.testing.assert_close(got, _reference(dense, x, mode), atol=1e-12, rtol=0)
