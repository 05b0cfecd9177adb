"""multipos.attention: every combination equals the manual reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import multipos
import multipos.attention_cpu
from multipos import ContextualBias, RotaryEmbedding, ValueBias, apply_rotary, attention


def _manual(q, k, v, add=None, causal=False):
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if add is not None:
        logits = logits + add
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    return logits.softmax(-1) @ v


@pytest.fixture
def qkv(generator):
    return torch.randn(3, 2, 3, 6, 8, generator=generator)


def test_plain_is_sdpa(qkv) -> None:
    q, k, v = qkv
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_rotary_rotates_q_and_k(qkv) -> None:
    q, k, v = qkv
    tables = RotaryEmbedding(8)(torch.arange(6.0) * 3)
    cos, sin = tables
    expected = _manual(apply_rotary(q, cos, sin, "half"), apply_rotary(k, cos, sin, "half"), v)
    torch.testing.assert_close(attention(q, k, v, rotary=tables), expected)
    torch.testing.assert_close(attention(q, k, v, rotary=(cos, sin), layout="half"), expected)


@given(shift=st.floats(-1000, 1000, allow_nan=False))
def test_output_invariant_to_shifting_all_positions(shift) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 5, 8, generator=g, dtype=torch.float64)
    rope = RotaryEmbedding(8)
    pos = torch.rand(5, generator=g, dtype=torch.float64) * 50
    a = attention(q, k, v, rotary=rope(pos))
    b = attention(q, k, v, rotary=rope(pos + shift))
    torch.testing.assert_close(a, b)


def test_bias_mask_and_causal_compose(qkv, generator) -> None:
    q, k, v = qkv
    bias = torch.randn(1, 3, 6, 6, generator=generator)
    mask = torch.rand(2, 1, 6, 6, generator=generator) > 0.3
    mask[..., 0] = True
    add = bias + torch.zeros(6, 6).masked_fill(~mask, float("-inf"))
    got = attention(q, k, v, bias=bias, mask=mask, is_causal=True)
    torch.testing.assert_close(got, _manual(q, k, v, add, causal=True))
    float_mask = torch.randn(6, 6, generator=generator)
    got = attention(q, k, v, mask=float_mask)
    torch.testing.assert_close(got, _manual(q, k, v, float_mask))


def test_causal_alone_uses_sdpa_flag(qkv) -> None:
    q, k, v = qkv
    torch.testing.assert_close(attention(q, k, v, is_causal=True), _manual(q, k, v, causal=True))


def test_contextual_terms_and_value_terms(qkv, generator) -> None:
    q, k, v = qkv
    table_k = torch.randn(1, 8, 4, generator=generator)
    table_q = torch.randn(3, 8, 4, generator=generator)
    table_v = torch.randn(1, 4, 8, generator=generator)
    ids = torch.randint(0, 4, (1, 6, 6), generator=generator)
    s = 8**-0.5
    add = s * torch.einsum("bhid,dij->bhij", q, table_k[0][:, ids[0]])
    add = add + s * torch.einsum("bhjd,hdji->bhij", k, table_q[:, :, ids[0]])
    logits = s * q @ k.transpose(-1, -2) + add
    a = logits.softmax(-1)
    expected = a @ v + torch.einsum("bhij,ijd->bhid", a, table_v[0][ids[0]])
    got = attention(
        q,
        k,
        v,
        contextual=[ContextualBias(table_k, ids, "k"), ContextualBias(table_q, ids, "q")],
        values=[ValueBias(table_v, ids)],
    )
    torch.testing.assert_close(got, expected)


def test_value_path_with_causal_mask(qkv, generator) -> None:
    q, k, v = qkv
    table_v = torch.zeros(1, 2, 8)
    ids = torch.zeros(1, 6, 6, dtype=torch.long)
    got = attention(q, k, v, values=[ValueBias(table_v, ids)], is_causal=True)
    torch.testing.assert_close(got, _manual(q, k, v, causal=True))


def test_bf16_inputs_stay_bf16(qkv) -> None:
    q, k, v = (t.bfloat16() for t in qkv)
    tables = RotaryEmbedding(8)(torch.arange(6.0))
    out = attention(q, k, v, rotary=tables, bias=torch.zeros(6, 6))
    assert out.dtype == torch.bfloat16


def test_errors(qkv) -> None:
    q, k, v = qkv
    with pytest.raises(ValueError, match=r"\(B, H, L, D\)"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="incompatible"):
        attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="'q' or 'k'"):
        attention(
            q,
            k,
            v,
            contextual=[ContextualBias(torch.zeros(1, 8, 2), torch.zeros(1, 6, 6).long(), "v")],
        )  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool or floating"):
        attention(q, k, v, mask=torch.ones(6, 6, dtype=torch.long))


def test_learnable_bias_gradients_match_sdpa(qkv, generator) -> None:
    q, k, v = qkv
    table = torch.randn(1, 8, 4, generator=generator, requires_grad=True)
    ids = torch.randint(0, 4, (1, 6, 6), generator=generator)
    out = attention(q, k, v, contextual=[ContextualBias(table, ids, "k")], is_causal=True)
    (grad,) = torch.autograd.grad(out.square().sum(), table)
    bias = contextual_bias_reference(q, table, ids)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias + _causal(6))
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), table)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)


def contextual_bias_reference(q, table, ids):
    return 8**-0.5 * torch.einsum("bhid,dij->bhij", q, table[0][:, ids[0]])


def _causal(n):
    return torch.zeros(n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))


def test_learnable_static_bias_training_matches_sdpa(qkv, generator) -> None:
    """CPU training with a learnable bias takes the plain path: same output and gradients
    (bias, q, k, v) as SDPA."""
    q, k, v = (t.clone().requires_grad_() for t in qkv)
    bias = torch.randn(1, 3, 6, 6, generator=generator, requires_grad=True)
    out = attention(q, k, v, bias=bias)
    grads = torch.autograd.grad(out.square().sum(), (bias, q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    ref_grads = torch.autograd.grad(ref.square().sum(), (bias, q, k, v))
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_fully_masked_row_under_training_matches_sdpa(qkv, generator) -> None:
    """A user mask that blocks a whole row keeps SDPA's convention in training too."""
    q, k, v = qkv
    bias = torch.randn(1, 3, 6, 6, generator=generator, requires_grad=True)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[2] = False
    out = attention(q, k, v, bias=bias, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~mask, float("-inf")))
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(out).all()


def _scores_by_offset(rotary, **kwargs) -> torch.Tensor:
    """Attention logits of one fixed q, k pair placed at query/key positions along one axis."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64)
    cos, sin = rotary
    layout = kwargs.get("layout", getattr(rotary, "layout", None))
    rq = apply_rotary(q.expand(cos.shape[0], -1), cos, sin, layout)
    rk = apply_rotary(k.expand(cos.shape[0], -1), cos, sin, layout)
    return rq @ rk.T


def test_rotary_layout_mismatch_raises_instead_of_a_silent_wrong_result() -> None:
    # Axial 2-D tables from the registry are interleaved; applying them with the "half" pairing
    # used to pass silently and scores stopped depending on the offset alone.
    rope = multipos.create_scheme("rope_axial_2d", head_dim=16)
    positions = torch.stack((torch.zeros(12), torch.arange(12.0))).double()
    tables = rope(positions)
    assert tables.layout == "interleaved"
    right = _scores_by_offset(tables)
    wrong = _scores_by_offset(tables, layout="half")
    # Same offset (+1), different places: equal with the right pairing, not with the wrong one.
    torch.testing.assert_close(right[0, 1], right[5, 6])
    assert not torch.isclose(wrong[0, 1], wrong[5, 6])
    q, k, v = torch.randn(3, 1, 2, 12, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="built for layout='interleaved' but layout says 'half'"):
        attention(q, k, v, rotary=tables, layout="half")
    cos, sin = tables
    with pytest.raises(ValueError, match="plain \\(cos, sin\\) pair"):
        attention(q, k, v, rotary=(cos, sin))
    out = attention(q, k, v, rotary=tables)
    torch.testing.assert_close(out, attention(q, k, v, rotary=(cos, sin), layout="interleaved"))
    torch.testing.assert_close(out, attention(q, k, v, rotary=tables, layout="interleaved"))


def test_rotary_tables_for_q_and_k_must_share_a_layout(qkv) -> None:
    q, k, v = qkv
    pos = torch.arange(6.0)
    half = RotaryEmbedding(8, layout="half")(pos)
    inter = RotaryEmbedding(8, layout="interleaved")(pos)
    with pytest.raises(ValueError, match="rotary_k tables were built for layout='interleaved'"):
        attention(q, k, v, rotary=half, rotary_k=inter)
    with pytest.raises(ValueError, match="without rotary"):
        attention(q, k, v, layout="half")


@pytest.mark.parametrize(
    "bias_shape",
    [(1, 1, 5, 7), (1, 3, 5, 7), (2, 3, 5, 7), (5, 7)],
    ids=["shared", "per_head", "per_sample", "2d"],
)
@pytest.mark.parametrize("block_bytes", [1, 2 << 20], ids=["one_sample_per_block", "one_block"])
def test_cpu_training_path_gradients_equal_autograd_of_the_definition(
    bias_shape, block_bytes, monkeypatch
) -> None:
    # The learnable-bias CPU path has a hand-written backward, block by block: every gradient
    # (q, k, v and the bias, summed to its broadcast shape) must equal autograd through the
    # formula, whatever the blocks.
    monkeypatch.setattr(multipos.attention_cpu, "_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(bias_shape, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    got = attention(q, k, v, bias=bias, scale=0.3)
    grads = torch.autograd.grad((got * up).sum(), (q, k, v, bias))
    ref = ((q @ k.transpose(-1, -2)) * 0.3 + bias).softmax(-1) @ v
    ref_grads = torch.autograd.grad((ref * up).sum(), (q, k, v, bias))
    torch.testing.assert_close(got, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("loss", ["sum", "mean", "dense"])
def test_cpu_training_path_takes_expanded_gradients(loss) -> None:
    # out.sum() / out.mean() hand the backward a gradient with zero strides: the same
    # gradients as a dense one of the same values, and as autograd through the definition.
    g = torch.Generator().manual_seed(5)
    q, k, v = (
        torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    bias = torch.randn(1, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)

    def reduce(out: torch.Tensor) -> torch.Tensor:
        if loss == "dense":
            return (out * torch.full_like(out, 1.0 / out.numel())).sum()
        return out.sum() if loss == "sum" else out.mean()

    got = torch.autograd.grad(reduce(attention(q, k, v, bias=bias, scale=0.3)), (q, k, v, bias))
    ref = ((q @ k.transpose(-1, -2)) * 0.3 + bias).softmax(-1) @ v
    ref_grads = torch.autograd.grad(reduce(ref), (q, k, v, bias))
    for a, b in zip(got, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_value_path_leaves_caller_tensors_unchanged_and_has_the_reference_gradients(
    qkv, generator, training
) -> None:
    q, k, v = (t.clone().requires_grad_(training) for t in qkv)
    table_k = torch.randn(3, 8, 4, generator=generator, requires_grad=training)
    table_q = torch.randn(1, 8, 4, generator=generator, requires_grad=training)
    table_v = torch.randn(1, 4, 8, generator=generator, requires_grad=training)
    ids = torch.randint(0, 4, (2, 6, 6), generator=generator)
    bias = torch.randn(2, 3, 6, 6, generator=generator)
    mask = torch.randn(1, 1, 6, 6, generator=generator)
    kept = (bias.clone(), mask.clone())
    got = attention(
        q,
        k,
        v,
        bias=bias,
        mask=mask,
        contextual=[ContextualBias(table_k, ids, "k"), ContextualBias(table_q, ids, "q")],
        values=[ValueBias(table_v, ids)],
    )
    assert torch.equal(bias, kept[0]) and torch.equal(mask, kept[1])
    s = 8**-0.5
    add = bias + mask
    for t in range(2):
        add = add + s * torch.einsum("bhid,hdij->bhij", q, table_k[:, :, ids[t]])
        add = add + s * torch.einsum("bhjd,hdji->bhij", k, table_q[:, :, ids[t]])
    a = (s * q @ k.transpose(-1, -2) + add).softmax(-1)
    expected = a @ v
    for t in range(2):
        expected = expected + torch.einsum("bhij,ijd->bhid", a, table_v[0][ids[t]])
    torch.testing.assert_close(got, expected)
    if training:
        leaves = (q, k, v, table_k, table_q, table_v)
        weights = torch.randn(got.shape, generator=generator)
        grads = torch.autograd.grad((got * weights).sum(), leaves)
        reference = torch.autograd.grad((expected * weights).sum(), leaves)
        for a_grad, b_grad in zip(grads, reference, strict=True):
            torch.testing.assert_close(a_grad, b_grad)


def test_cpu_training_path_keeps_the_bias_and_guards_its_saved_output() -> None:
    # The logits are the path's own buffer (bias added, softmax taken in place); the caller's
    # bias is never written. The backward reads the output: writing into it is refused by
    # autograd, never a silently wrong gradient.
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 1, 6, 6, generator=g, requires_grad=True)
    kept = bias.detach().clone()
    out = attention(q, k, v, bias=bias)
    assert torch.equal(bias.detach(), kept)
    with pytest.raises(RuntimeError, match="inplace"):
        out.mul_(2.0)
    out.sum().backward()
    assert bias.grad is not None and torch.equal(bias.detach(), kept)


@pytest.mark.parametrize("bias_shape", [(1, 1, 5, 7), (1, 3, 5, 7), (2, 3, 5, 7), (5, 7)])
def test_cpu_forward_without_autograd_keeps_no_probabilities(bias_shape, monkeypatch) -> None:
    # Outside autograd the blocks share one scratch buffer: the same output as SDPA.
    monkeypatch.setattr(multipos.attention_cpu, "_BLOCK_BYTES", 1)
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(3, 3, n, 8, generator=g, dtype=torch.float64) for n in (5, 7, 7))
    bias = torch.randn(bias_shape, generator=g, dtype=torch.float64)
    if bias.dim() == 4 and bias.shape[0] == 2:
        q, k, v = q[:2], k[:2], v[:2]
    out = multipos.attention_cpu.BiasedAttention.apply(q, k, v, bias, 0.3)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
    torch.testing.assert_close(out, ref)
