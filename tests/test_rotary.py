"""Rotary embedding: paper properties, then bounds, then small snapshots."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from multipos import FrequencyScaling, RotaryEmbedding, apply_rotary, rotate_pairs
from multipos.frequencies import rotary_inv_freq, scaled_inv_freq

SCALINGS = [
    None,
    {"kind": "linear", "factor": 4.0},
    {"kind": "ntk", "factor": 4.0},
    {"kind": "yarn", "factor": 4.0, "original_length": 64},
    {"kind": "dynamic", "factor": 4.0, "original_length": 64},
]
floats = st.floats(-500.0, 500.0, allow_nan=False, width=32)


def _rotate(rope: RotaryEmbedding, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    # A fixed length keeps dynamic scaling's frequencies identical across the shift.
    cos, sin = rope(pos.double(), length=1000.0)
    return apply_rotary(x.double(), cos, sin, rope.layout)


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: "none" if s is None else s["kind"])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@given(m=floats, n=floats, shift=floats, seed=st.integers(0, 2**16))
def test_score_depends_only_on_relative_position(scaling, layout, m, n, shift, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    rope = RotaryEmbedding(16, layout=layout, scaling=scaling)
    q, k = torch.randn(2, 16, generator=g)
    a = (
        _rotate(rope, q, torch.tensor([m], dtype=torch.float64))[0]
        @ _rotate(rope, k, torch.tensor([n], dtype=torch.float64))[0]
    )
    b = (
        _rotate(rope, q, torch.tensor([m + shift], dtype=torch.float64))[0]
        @ _rotate(rope, k, torch.tensor([n + shift], dtype=torch.float64))[0]
    )
    assert a.item() == pytest.approx(b.item(), abs=1e-6 * (1 + abs(a.item())))


@pytest.mark.parametrize("spectrum", ["per_axis", "shared"])
@given(
    pos=st.lists(floats, min_size=4, max_size=4),
    shift=st.lists(floats, min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_multi_axis_score_depends_only_on_offsets(spectrum, pos, shift, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    rope = RotaryEmbedding(16, num_axes=2, sections=(3, 5), spectrum=spectrum)
    q, k = torch.randn(2, 16, generator=g)
    p_q = torch.tensor(pos[:2], dtype=torch.float64)[:, None]
    p_k = torch.tensor(pos[2:], dtype=torch.float64)[:, None]
    t = torch.tensor(shift, dtype=torch.float64)[:, None]
    a = _rotate(rope, q, p_q)[0] @ _rotate(rope, k, p_k)[0]
    b = _rotate(rope, q, p_q + t)[0] @ _rotate(rope, k, p_k + t)[0]
    assert a.item() == pytest.approx(b.item(), abs=1e-6 * (1 + abs(a.item())))


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: "none" if s is None else s["kind"])
@given(p=floats, seed=st.integers(0, 2**16))
def test_rotation_preserves_norm(scaling, p, seed) -> None:
    rope = RotaryEmbedding(32, scaling=scaling)
    x = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    y = _rotate(rope, x, torch.tensor([p]))[0]
    magnitude = FrequencyScaling.coerce(scaling).magnitude
    assert y.norm().item() == pytest.approx(magnitude * x.double().norm().item(), rel=1e-9)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_position_zero_is_identity(layout) -> None:
    rope = RotaryEmbedding(8, num_axes=3, sections=(1, 2, 1), layout=layout)
    x = torch.randn(2, 5, 8)
    cos, sin = rope(torch.zeros(3, 5))
    torch.testing.assert_close(apply_rotary(x, cos, sin, layout), x)


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_factor_one_equals_plain_rope(kind) -> None:
    pos = torch.linspace(-100, 5000, 97)
    plain = RotaryEmbedding(64)(pos)
    scaled = RotaryEmbedding(64, scaling={"kind": kind, "factor": 1.0, "original_length": 128})(pos)
    for a, b in zip(plain, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_linear_scaling_equals_divided_positions() -> None:
    pos = torch.linspace(0, 4000, 33)
    a = RotaryEmbedding(32, scaling={"kind": "linear", "factor": 8.0}).angles(pos)
    b = RotaryEmbedding(32).angles(pos / 8.0)
    torch.testing.assert_close(a, b)


def _interleaved_to_half(dim: int) -> torch.Tensor:
    return torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))


@given(seed=st.integers(0, 2**16), pos=floats)
def test_layouts_agree_after_channel_permutation(seed, pos) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 24, generator=g)
    perm = _interleaved_to_half(24)
    half = RotaryEmbedding(24, layout="half")
    inter = RotaryEmbedding(24, layout="interleaved")
    p = torch.full((3,), pos)
    y_inter = apply_rotary(x, *inter(p), layout="interleaved")
    y_half = apply_rotary(x[..., perm], *half(p), layout="half")
    torch.testing.assert_close(y_inter[..., perm], y_half)


def test_bf16_module_keeps_fp32_angles_at_8191() -> None:
    ref = RotaryEmbedding(128)
    low = RotaryEmbedding(128).to(torch.bfloat16)
    assert low.inv_freq.dtype == torch.float32
    pos = torch.tensor([8191.0])
    torch.testing.assert_close(low.angles(pos), ref.angles(pos), rtol=0, atol=0)
    for a, b in zip(low(pos), ref(pos), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Quantised frequencies would be off by whole radians at this position.
    bf16_angles = pos * rotary_inv_freq(128).bfloat16().float()
    assert (bf16_angles - ref.angles(pos)).abs().max() > 1.0
    # The tables can be cast once for a bf16 model.
    assert low(pos, dtype=torch.bfloat16)[0].dtype == torch.bfloat16


def test_half_precision_input_is_rotated_in_fp32_and_returned_in_its_dtype() -> None:
    rope = RotaryEmbedding(16)
    x = torch.randn(4, 16)
    cos, sin = rope(torch.arange(4.0) * 1000)
    y = apply_rotary(x.bfloat16(), cos, sin, "half")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), apply_rotary(x, cos, sin, "half"), rtol=1e-2, atol=1e-2)


def test_partial_rotary_leaves_tail_unchanged() -> None:
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 5, 12)
    cos, sin = rope(torch.arange(5.0))
    y = apply_rotary(x, cos, sin, "half")
    torch.testing.assert_close(y[..., 8:], x[..., 8:], rtol=0, atol=0)
    torch.testing.assert_close(y[..., :8], apply_rotary(x[..., :8], cos, sin, "half"))


def test_rotate_pairs_is_multiplication_by_i() -> None:
    x = torch.arange(1.0, 5.0)
    assert rotate_pairs(x, "half").tolist() == [-3.0, -4.0, 1.0, 2.0]
    assert rotate_pairs(x, "interleaved").tolist() == [-2.0, 1.0, -4.0, 3.0]
    # Applying it twice negates: i * i = -1.
    torch.testing.assert_close(rotate_pairs(rotate_pairs(x, "half"), "half"), -x)


def test_per_axis_sections_use_their_own_spectrum() -> None:
    rope = RotaryEmbedding(16, num_axes=2, base=100.0)
    one = rotary_inv_freq(8, 100.0)
    torch.testing.assert_close(rope.inv_freq, torch.cat((one, one)))
    angles = rope.angles(torch.tensor([[2.0], [3.0]]))[0]
    torch.testing.assert_close(angles, torch.cat((2 * one, 3 * one)))


def test_shared_spectrum_sections_read_their_axis() -> None:
    rope = RotaryEmbedding(12, num_axes=3, sections=(1, 2, 3), spectrum="shared")
    full = rotary_inv_freq(12)
    angles = rope.angles(torch.tensor([[1.0], [10.0], [100.0]]))[0]
    expected = full * torch.tensor([1.0, 10.0, 10.0, 100.0, 100.0, 100.0])
    torch.testing.assert_close(angles, expected)


def test_snapshot_first_pairs() -> None:
    cos, sin = RotaryEmbedding(4, layout="interleaved")(torch.tensor([1.0]))
    c, s = math.cos(1.0), math.sin(1.0)
    c2, s2 = math.cos(0.01), math.sin(0.01)
    torch.testing.assert_close(cos[0], torch.tensor([c, c, c2, c2]))
    torch.testing.assert_close(sin[0], torch.tensor([s, s, s2, s2]))


def test_yarn_ramp_keeps_high_and_interpolates_low_frequencies() -> None:
    dim, factor = 64, 8.0
    plain = rotary_inv_freq(dim)
    yarn = scaled_inv_freq(dim, scaling={"kind": "yarn", "factor": factor, "original_length": 512})
    torch.testing.assert_close(yarn[:4], plain[:4])
    torch.testing.assert_close(yarn[-4:], plain[-4:] / factor)
    ratio = plain / yarn
    assert torch.all(ratio[1:] >= ratio[:-1] - 1e-6)
    assert FrequencyScaling("yarn", 8.0, 512).magnitude == pytest.approx(0.1 * math.log(8) + 1)


def test_dynamic_scaling_grows_only_beyond_original_length() -> None:
    rope = RotaryEmbedding(32, scaling={"kind": "dynamic", "factor": 2.0, "original_length": 100})
    short = rope.angles(torch.arange(50.0))
    torch.testing.assert_close(short, RotaryEmbedding(32).angles(torch.arange(50.0)))
    long = rope.angles(torch.arange(400.0))
    assert torch.all(long[-1, 1:] < RotaryEmbedding(32).angles(torch.tensor([399.0]))[0, 1:])


@pytest.mark.parametrize(
    ("kind", "params", "extra"),
    [
        ("linear", {"factor": 4.0}, {}),
        ("yarn", {"factor": 4.0, "original_max_position_embeddings": 16}, {}),
        ("dynamic", {"factor": 4.0}, {"seq_len": 200}),
    ],
)
def test_matches_hugging_face_rope_utils(kind, params, extra) -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=1,
        max_position_embeddings=64,
        rope_parameters={"rope_type": kind, "rope_theta": 10000.0, **params},
    )
    theirs, attention_factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", **extra)
    original = params.get("original_max_position_embeddings", 64)
    scaling = FrequencyScaling(kind, factor=4.0, original_length=original)
    length = torch.tensor(float(extra.get("seq_len", 0)))
    ours = scaled_inv_freq(64, 10000.0, scaling, length=length)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-7)
    assert scaling.magnitude == pytest.approx(attention_factor)


def test_matches_timm_axial_rotary() -> None:
    pytest.importorskip("timm")
    from timm.layers import RotaryEmbeddingCat

    from multipos import build_grid_positions

    emb = RotaryEmbeddingCat(64, in_pixels=False, temperature=100.0).get_embed([5, 7])
    tsin, tcos = emb.chunk(2, dim=-1)
    cos, sin = RotaryEmbedding(64, num_axes=2, base=100.0, layout="interleaved")(
        build_grid_positions((5, 7)).patches
    )
    torch.testing.assert_close(cos, tcos)
    torch.testing.assert_close(sin, tsin)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_dim": 7}, "even"),
        ({"head_dim": 8, "layout": "pairs"}, "layout must be one of"),
        ({"head_dim": 8, "spectrum": "mixed"}, "spectrum must be one of"),
        ({"head_dim": 8, "num_axes": 3}, "sections="),
        ({"head_dim": 8, "num_axes": 2, "sections": (1, 2)}, "summing to head_dim // 2"),
        ({"head_dim": 8, "scaling": "fancy"}, "scaling kind must be one of"),
        ({"head_dim": 8, "scaling": {"kind": "yarn", "factor": 2.0}}, "original_length"),
    ],
)
def test_bad_arguments_raise(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RotaryEmbedding(**kwargs)


def test_bad_positions_and_tables_raise() -> None:
    rope = RotaryEmbedding(8, num_axes=2)
    with pytest.raises(ValueError, match=r"\(A=2, \.\.\., L\)"):
        rope(torch.zeros(3, 4))
    cos, sin = RotaryEmbedding(8)(torch.arange(3.0))
    with pytest.raises(ValueError, match="at most the channel count"):
        apply_rotary(torch.zeros(3, 4), cos, sin, "half")
    with pytest.raises(TypeError, match="unknown scaling field"):
        FrequencyScaling.coerce({"kind": "linear", "scale": 2.0})


def test_config_round_trip() -> None:
    rope = RotaryEmbedding(16, num_axes=2, sections=(3, 5), scaling={"kind": "ntk", "factor": 2})
    again = RotaryEmbedding(**rope.config())
    pos = torch.rand(2, 9) * 30
    for a, b in zip(rope(pos), again(pos), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("rot", [8, 16])
def test_interleaved_fast_path_equals_real_formula_with_gradients(rot) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 7, 3, 16, generator=g).transpose(1, 2).requires_grad_()  # non-contiguous
    cos, sin = RotaryEmbedding(rot, layout="interleaved")(torch.rand(7, generator=g) * 100)
    fast = apply_rotary(x, cos, sin, "interleaved")
    head = x[..., :rot]
    slow = torch.cat((head * cos + rotate_pairs(head, "interleaved") * sin, x[..., rot:]), dim=-1)
    torch.testing.assert_close(fast, slow)
    weight = torch.randn(fast.shape, generator=g)
    (g_fast,) = torch.autograd.grad((fast * weight).sum(), x)
    (g_slow,) = torch.autograd.grad((slow * weight).sum(), x)
    torch.testing.assert_close(g_fast, g_slow)


@pytest.mark.parametrize(
    "shape, channels",
    [((2, 3, 5, 18), slice(1, 17)), ((2, 5, 17), slice(0, 17))],
    ids=["odd-offset", "odd-stride"],
)
def test_interleaved_on_unaligned_views(shape, channels) -> None:
    """Views whose pairs are not aligned for a complex view (odd storage offset, odd row
    stride) take the real-valued formula instead of failing."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(shape, generator=g)[..., channels]
    rot = 16
    cos, sin = RotaryEmbedding(rot, layout="interleaved")(torch.rand(x.shape[-2], generator=g))
    out = apply_rotary(x, cos, sin, "interleaved")
    head = x[..., :rot]
    expected = torch.cat((head * cos + rotate_pairs(head, "interleaved") * sin, x[..., rot:]), -1)
    torch.testing.assert_close(out, expected)


def test_tables_carry_their_layout_and_unpack_as_a_pair() -> None:
    import copy
    import pickle

    from multipos.rotary import RotaryTables

    tables = RotaryEmbedding(8, layout="interleaved")(torch.arange(3.0))
    assert isinstance(tables, RotaryTables) and tables.layout == "interleaved"
    cos, sin = tables
    assert cos is tables.cos and sin is tables.sin and cos.shape == (3, 8)
    for again in (copy.deepcopy(tables), pickle.loads(pickle.dumps(tables))):
        assert isinstance(again, RotaryTables) and again.layout == "interleaved"
        torch.testing.assert_close(again.cos, cos, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layout must be one of"):
        RotaryTables(cos, sin, "pairs")  # type: ignore[arg-type]


def test_apply_rotary_needs_the_layout() -> None:
    cos, sin = RotaryEmbedding(8)(torch.arange(3.0))
    with pytest.raises(TypeError, match="layout"):
        apply_rotary(torch.zeros(3, 8), cos, sin)  # type: ignore[call-arg]
