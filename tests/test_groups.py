"""GTA core: group blocks, representations and geometric transform attention (Miyato et al.,
2024, arXiv:2310.10375), checked against the paper's properties and a dense reference."""

from __future__ import annotations

import math

import pytest
import torch

import multipos
from multipos import (
    GTARepresentation,
    RotaryEmbedding,
    attention,
    gta_attention,
    rotary_inv_freq,
    se3_blocks,
    so2_angles,
    so2_blocks,
)
from multipos.bias import ValueBias


def _rigid(*shape: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Random proper rigid transforms ``(*shape, 4, 4)``."""
    q, _ = torch.linalg.qr(torch.randn(*shape, 3, 3, generator=generator, dtype=dtype))
    q = q * torch.linalg.det(q).sign()[..., None, None]  # det +1
    out = torch.eye(4, dtype=dtype).repeat(*shape, 1, 1)
    out[..., :3, :3] = q
    out[..., :3, 3] = torch.randn(*shape, 3, generator=generator, dtype=dtype)
    return out


def _multiview_rep(extrinsics, coords, head_dim, num_se3=2, num_freqs=3, scale=0.7):
    """SE(3) per view (tokens of view v share it), SO(2) of 2-D coordinates, identity rest."""
    views = extrinsics.shape[1]
    per_view = coords.shape[1] // views
    se3 = se3_blocks(extrinsics, translation_scale=scale)  # (B, V, 4, 4)
    # (B, V, 4, 4) -> (B, V * T, n, 4, 4)
    se3 = se3.repeat_interleave(per_view, 1)[:, :, None].expand(-1, -1, num_se3, 4, 4)
    so2 = so2_blocks(coords, num_freqs)
    return GTARepresentation.from_blocks([se3, so2], head_dim, kinds=["rigid", "rotation"])


def _dense_reference(q, k, v, dense, transform_values=True, bias=None):
    """Softmax attention written from Eq. (5) with full rho matrices per token."""
    inv = torch.linalg.inv(dense)
    rel = torch.einsum("bikl,bjlm->bijkm", inv, dense)  # rho_i^{-1} rho_j, (B, L, S, D, D)
    logits = torch.einsum("bhik,bijkm,bhjm->bhij", q, rel, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    probs = logits.softmax(-1)
    if not transform_values:
        return probs @ v
    return torch.einsum("bhij,bijkm,bhjm->bhik", probs, rel, v)


def _block_diag(blocks, head_dim):
    """``(B, L, D, D)`` from block lists, built independently of the library."""
    bsz = max(b.shape[0] for b in blocks)
    length = blocks[0].shape[1]
    out = torch.zeros(bsz, length, head_dim, head_dim, dtype=torch.float64)
    for b in range(bsz):
        for t in range(length):
            mats = [m for blk in blocks for m in blk[min(b, blk.shape[0] - 1), t]]
            block = torch.block_diag(*[m.double() for m in mats])
            n = block.shape[0]
            out[b, t] = torch.eye(head_dim, dtype=torch.float64)
            out[b, t, :n, :n] = block
    return out


def test_so2_blocks_are_rotations_on_ropes_frequency_schedule() -> None:
    coords = torch.tensor([[[3.0, -2.0], [0.5, 7.0]]])  # (1, L=2, A=2)
    blocks = so2_blocks(coords, 4)
    assert blocks.shape == (1, 2, 8, 2, 2) and blocks.dtype == torch.float32
    eye = torch.eye(2).expand_as(blocks)
    torch.testing.assert_close(blocks.transpose(-1, -2) @ blocks, eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(blocks), torch.ones(1, 2, 8))
    # Block a * F + f turns by coord_a * 100^(-f/F): axis-major, RoPE's per-axis spectrum.
    freqs = rotary_inv_freq(8, 100.0)
    expected = torch.cat((coords[..., :1] * freqs, coords[..., 1:] * freqs), dim=-1)
    torch.testing.assert_close(so2_angles(coords, 4), expected)
    assert so2_angles(coords, 4)[0, 0, 5].item() == pytest.approx(-2.0 * 100 ** (-0.25))
    torch.testing.assert_close(blocks[..., 1, 0], expected.sin())


def test_angles_are_float32_or_wider() -> None:
    coords = torch.tensor([[[300.0, 17.0]]])
    assert so2_angles(coords.bfloat16(), 2).dtype == torch.float32
    assert so2_angles(coords.half(), 2).dtype == torch.float32
    assert so2_angles(coords.double(), 2).dtype == torch.float64


@pytest.mark.parametrize("transform_values", [True, False])
def test_value_transform_off_is_axial_rope_exactly(transform_values) -> None:
    g = torch.Generator().manual_seed(0)
    head_dim, length = 16, 10
    coords = torch.randint(0, 9, (length, 2), generator=g).float()  # (x, y) per token
    q, k, v = torch.randn(3, 2, 3, length, head_dim, generator=g)
    rope = multipos.create_scheme("rope_axial_2d", head_dim=head_dim)
    tables = rope(coords.T)
    expected = attention(q, k, v, rotary=tables)
    rep = GTARepresentation.from_blocks([so2_blocks(coords[None], head_dim // 4)], head_dim)
    got = gta_attention(q, k, v, rep, transform_values=False)
    assert torch.equal(got, expected)
    assert torch.equal(attention(q, k, v, gta=rep, transform_values=False), expected)
    module = multipos.create_scheme("gta", head_dim=head_dim, transform_values=False)
    assert torch.equal(module(q, k, v, coords.T), expected)
    # The value transform is what GTA adds: it changes the output.
    if transform_values:
        assert not torch.allclose(gta_attention(q, k, v, rep), expected, atol=1e-3)


def test_value_transform_off_is_rope_in_bfloat16() -> None:
    g = torch.Generator().manual_seed(1)
    coords = torch.rand(6, 2, generator=g) * 5
    q, k, v = torch.randn(3, 1, 2, 6, 8, generator=g).bfloat16()
    tables = RotaryEmbedding(8, num_axes=2, base=100.0, layout="interleaved")(coords.T)
    rep = GTARepresentation.from_blocks([so2_blocks(coords[None], 2)], 8)
    got = gta_attention(q, k, v, rep, transform_values=False)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, attention(q, k, v, rotary=tables))


def test_unchanged_when_all_coordinates_shift_together() -> None:
    g = torch.Generator().manual_seed(2)
    coords = torch.rand(2, 9, 2, generator=g, dtype=torch.float64) * 8
    q, k, v = torch.randn(3, 2, 2, 9, 16, generator=g, dtype=torch.float64)
    reps = [
        GTARepresentation.from_blocks([so2_blocks(c, 4)], 16)
        for c in (coords, coords + torch.tensor([3.25, -11.5], dtype=torch.float64))
    ]
    a, b = (gta_attention(q, k, v, r) for r in reps)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # Moving one token alone changes its relations: the test can fail.
    moved = coords.clone()
    moved[:, 0] += 1.0
    c = gta_attention(q, k, v, GTARepresentation.from_blocks([so2_blocks(moved, 4)], 16))
    assert not torch.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_se3_unchanged_when_every_extrinsic_moves_by_one_rigid_transform(dtype, tol) -> None:
    g = torch.Generator().manual_seed(3)
    bsz, views, per_view, head_dim = 2, 3, 4, 24
    extrinsics = _rigid(bsz, views, generator=g)
    coords = torch.rand(bsz, views * per_view, 2, generator=g, dtype=torch.float64) * 4
    q, k, v = torch.randn(3, bsz, 2, views * per_view, head_dim, generator=g, dtype=torch.float64)
    world = _rigid(generator=g)  # one change of world frame: x_w = G x_w'
    outs = []
    for ext in (extrinsics, extrinsics @ world):
        rep = _multiview_rep(ext.to(dtype), coords.to(dtype), head_dim)
        outs.append(gta_attention(q.to(dtype), k.to(dtype), v.to(dtype), rep))
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=0)
    # A different transform per camera is not a change of frame: the output moves.
    other = extrinsics @ _rigid(bsz, views, generator=g)
    moved = gta_attention(q, k, v, _multiview_rep(other, coords, head_dim))
    assert not torch.allclose(outs[0].double(), moved, atol=1e-3)


def test_only_the_relative_transform_enters_against_a_dense_reference() -> None:
    g = torch.Generator().manual_seed(4)
    bsz, views, per_view, head_dim = 2, 2, 3, 20  # 8 SE(3) + 6 SO(2) + 6 identity channels
    extrinsics = _rigid(bsz, views, generator=g)
    coords = torch.rand(bsz, views * per_view, 2, generator=g, dtype=torch.float64) * 4
    rep = _multiview_rep(extrinsics, coords, head_dim)
    se3 = se3_blocks(extrinsics, translation_scale=0.7).repeat_interleave(per_view, 1)
    blocks = [se3[:, :, None].expand(-1, -1, 2, 4, 4), so2_blocks(coords, 3)]
    dense = _block_diag(blocks, head_dim)
    torch.testing.assert_close(rep.dense(), dense)
    q, k, v = torch.randn(3, bsz, 2, views * per_view, head_dim, generator=g, dtype=torch.float64)
    for tv in (True, False):
        expected = _dense_reference(q, k, v, dense, transform_values=tv)
        torch.testing.assert_close(gta_attention(q, k, v, rep, transform_values=tv), expected)
        torch.testing.assert_close(attention(q, k, v, gta=rep, transform_values=tv), expected)
    # The four actions against the dense matrices.
    x = torch.randn(bsz, 2, views * per_view, head_dim, generator=g, dtype=torch.float64)
    inv = torch.linalg.inv(dense)
    for act, mat in (
        (rep.apply, dense),
        (rep.apply_inverse, inv),
        (rep.apply_transpose, dense.transpose(-1, -2)),
        (rep.apply_inverse_transpose, inv.transpose(-1, -2)),
    ):
        torch.testing.assert_close(act(x), torch.einsum("blij,bhlj->bhli", mat, x))
    # SE(3) is not orthogonal: rho^{-T} differs from rho there.
    assert not torch.allclose(rep.apply_inverse_transpose(x), rep.apply(x), atol=1e-3)
    # Copied (not expanded) blocks take the per-block path; distinct general blocks too.
    copied = GTARepresentation.from_blocks([blocks[0].contiguous(), blocks[1]], head_dim)
    torch.testing.assert_close(copied.apply_inverse_transpose(x), rep.apply_inverse_transpose(x))
    general = torch.randn(bsz, views * per_view, 2, 3, 3, generator=g, dtype=torch.float64)
    mixed = GTARepresentation.from_blocks([general, blocks[1]], head_dim)
    dense = _block_diag([general, blocks[1]], head_dim)
    torch.testing.assert_close(mixed.dense(), dense)
    expected = _dense_reference(q, k, v, dense)
    torch.testing.assert_close(gta_attention(q, k, v, mixed), expected)


def test_masks_bias_and_value_terms_compose_with_gta() -> None:
    g = torch.Generator().manual_seed(5)
    length, head_dim = 6, 8
    coords = torch.rand(1, length, 2, generator=g, dtype=torch.float64) * 5
    rep = GTARepresentation.from_blocks([so2_blocks(coords, 2)], head_dim)
    q, k, v = torch.randn(3, 2, 2, length, head_dim, generator=g, dtype=torch.float64)
    bias = torch.randn(1, 2, length, length, generator=g, dtype=torch.float64)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    dense = rep.dense()
    masked = bias.masked_fill(~causal, float("-inf"))
    expected = _dense_reference(q, k, v, dense, bias=masked)
    torch.testing.assert_close(attention(q, k, v, gta=rep, bias=bias, mask=causal), expected)
    torch.testing.assert_close(attention(q, k, v, gta=rep, bias=bias, is_causal=True), expected)
    # Value terms are added after the output transform: out = GTA(...) + sum_j a_ij r_ij.
    table = torch.randn(2, 3, head_dim, generator=g, dtype=torch.float64)
    buckets = torch.randint(0, 3, (1, length, length), generator=g)
    got = attention(q, k, v, gta=rep, values=[ValueBias(table, buckets)])
    probs = (
        torch.einsum("bhik,bhjk->bhij", rep.apply_inverse_transpose(q), rep.apply(k))
        / math.sqrt(head_dim)
    ).softmax(-1)
    extra = torch.einsum("bhij,hijd->bhid", probs, table[:, buckets[0]])
    torch.testing.assert_close(got, _dense_reference(q, k, v, dense) + extra)


def test_cross_attention_with_a_key_representation() -> None:
    g = torch.Generator().manual_seed(6)
    cq = torch.rand(1, 4, 2, generator=g, dtype=torch.float64)
    ck = torch.rand(1, 7, 2, generator=g, dtype=torch.float64)
    rq = GTARepresentation.from_blocks([so2_blocks(cq, 2)], 8)
    rk = GTARepresentation.from_blocks([so2_blocks(ck, 2)], 8)
    q = torch.randn(1, 2, 4, 8, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, 7, 8, generator=g, dtype=torch.float64)
    shift = torch.tensor([2.0, -1.0], dtype=torch.float64)
    rq2 = GTARepresentation.from_blocks([so2_blocks(cq + shift, 2)], 8)
    rk2 = GTARepresentation.from_blocks([so2_blocks(ck + shift, 2)], 8)
    torch.testing.assert_close(
        gta_attention(q, k, v, rq, rep_k=rk), attention(q, k, v, gta=rq2, gta_k=rk2)
    )


def test_inverse_round_trips_and_translation_scale() -> None:
    g = torch.Generator().manual_seed(7)
    ext = _rigid(3, generator=g)
    torch.testing.assert_close(se3_blocks(ext), torch.linalg.inv(ext))
    torch.testing.assert_close(
        se3_blocks(ext, convention="camera_to_world"), ext, atol=1e-12, rtol=0
    )
    # The scale is the conjugation S rho S^{-1}, S = diag(1, 1, 1, 1/s).
    s = torch.diag(torch.tensor([1.0, 1.0, 1.0, 10.0], dtype=torch.float64))
    scaled = se3_blocks(ext, translation_scale=0.1)
    torch.testing.assert_close(scaled, s @ torch.linalg.inv(ext) @ torch.linalg.inv(s))
    learn = torch.tensor(0.01, requires_grad=True)
    se3_blocks(ext.float(), translation_scale=learn).sum().backward()
    assert learn.grad is not None and learn.grad.abs() > 0
    rep = GTARepresentation.from_blocks([se3_blocks(ext)[None, :, None]], 6)
    x = torch.randn(1, 2, 3, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rep.apply_inverse(rep.apply(x)), x)
    torch.testing.assert_close(rep.apply_transpose(rep.apply_inverse_transpose(x)), x)
    general = GTARepresentation.from_blocks([se3_blocks(ext)[None, :, None]], 6, kinds=["general"])
    torch.testing.assert_close(general.apply_inverse_transpose(x), rep.apply_inverse_transpose(x))


def test_bfloat16_inputs_work_and_return_bfloat16() -> None:
    g = torch.Generator().manual_seed(8)
    ext = _rigid(1, 2, generator=g).float()
    coords = torch.rand(1, 6, 2, generator=g) * 3
    rep = _multiview_rep(ext, coords, 16, num_se3=1, num_freqs=2)
    q, k, v = torch.randn(3, 1, 2, 6, 16, generator=g)
    ref = gta_attention(q, k, v, rep)
    got = gta_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), rep)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.eye(3).expand(2, 3, 3), r"extrinsics must be \(\.\.\., 4, 4\)"),
        (torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])), "not orthonormal"),
        (torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])), "reflection"),
        (torch.tensor([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "orthonormal"),
        (torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
        (torch.full((4, 4), float("nan")), "finite"),
    ],
)
def test_non_rigid_extrinsics_raise(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        se3_blocks(bad)


def test_bad_blocks_shapes_and_partitions_raise() -> None:
    so2 = so2_blocks(torch.rand(1, 5, 2), 2)  # (1, 5, 4, 2, 2): 8 channels
    with pytest.raises(ValueError, match=r"blocks\[0\] must be \(B or 1, L, n, d, d\)"):
        GTARepresentation.from_blocks([so2[0]], 8)
    with pytest.raises(ValueError, match="cover 8 channels but head_dim is 6"):
        GTARepresentation.from_blocks([so2], 6)
    with pytest.raises(ValueError, match="non-empty list"):
        GTARepresentation.from_blocks([], 6)
    with pytest.raises(ValueError, match=r"blocks\[1\] covers 3 tokens"):
        GTARepresentation.from_blocks([so2, so2[:, :3]], 16)
    with pytest.raises(ValueError, match="SO\\(2\\) rotations"):
        GTARepresentation.from_blocks([so2 * 2], 8)
    with pytest.raises(ValueError, match="does not fit blocks of size 2"):
        GTARepresentation.from_blocks([so2], 8, kinds=["rigid"])
    with pytest.raises(ValueError, match="singular"):
        GTARepresentation.from_blocks([torch.zeros(1, 5, 1, 3, 3)], 8)
    with pytest.raises(TypeError, match="head_dim must be an int"):
        GTARepresentation.from_blocks([so2], 8.0)  # type: ignore[arg-type]
    rep = GTARepresentation.from_blocks([so2], 10)  # 2 identity channels
    assert rep.covered == 8
    with pytest.raises(ValueError, match=r"q must be \(B, H, L=5, D=10\)"):
        gta_attention(*torch.randn(3, 1, 2, 4, 10), rep)
    with pytest.raises(ValueError, match=r"coords must be \(\.\.\., L, A\)"):
        so2_blocks(torch.rand(5), 2)


def test_attention_rejects_gta_combinations_that_do_not_compose() -> None:
    coords = torch.rand(1, 4, 2)
    rep = GTARepresentation.from_blocks([so2_blocks(coords, 2)], 8)
    q = k = v = torch.randn(1, 2, 4, 8)
    tables = RotaryEmbedding(8, num_axes=2, layout="interleaved")(coords[0].T)
    with pytest.raises(ValueError, match="gta and rotary"):
        attention(q, k, v, gta=rep, rotary=tables)
    with pytest.raises(ValueError, match="transform_values=False given without gta"):
        attention(q, k, v, transform_values=False)
    with pytest.raises(TypeError, match="gta must be a GTARepresentation"):
        attention(q, k, v, gta=so2_blocks(coords, 2))  # type: ignore[arg-type]


def test_gradients_through_every_block_kind() -> None:
    g = torch.Generator().manual_seed(9)
    ext = _rigid(1, 2, generator=g)
    coords = torch.rand(1, 6, 2, generator=g, dtype=torch.float64)
    rep = _multiview_rep(ext, coords, 20, num_se3=2, num_freqs=2)  # 8 SE(3), 8 SO(2), 4 identity
    q, k, v = (
        torch.randn(1, 2, 6, 20, generator=g, dtype=torch.float64).requires_grad_()
        for _ in range(3)
    )
    assert torch.autograd.gradcheck(lambda a, b, c: gta_attention(a, b, c, rep), (q, k, v))


def test_output_rotated_in_place_only_outside_autograd() -> None:
    # The output rotation reuses the attention output's buffer when nothing needs it later;
    # the result must equal the autograd path's, and gradients must still flow there.
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    coords = torch.stack((cols.flatten(), rows.flatten()), dim=-1)[None]
    rep = GTARepresentation.from_blocks([so2_blocks(coords, num_freqs=4)], head_dim=16)
    q, k, v = torch.randn(3, 2, 3, 20, 16)
    with torch.no_grad():
        fast = gta_attention(q, k, v, rep)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    slow = gta_attention(*leaves, rep)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=0)
    slow.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves)
    dense = rep.dense()[0]  # (L, D, D)
    ref = torch.nn.functional.scaled_dot_product_attention(
        torch.einsum("lji,bhlj->bhli", torch.linalg.inv(dense), q),
        torch.einsum("lij,bhlj->bhli", dense, k),
        torch.einsum("lij,bhlj->bhli", dense, v),
    )
    ref = torch.einsum("lij,bhlj->bhli", torch.linalg.inv(dense), ref)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
