"""HiRoPE rotary: per-level relative property, channel split, window (arXiv:2403.19115)."""

from __future__ import annotations

import pytest
import torch

from multipos import RotaryEmbedding, apply_rotary
from multipos.llm import HierarchicalRotaryEmbedding, hirope_sections, window_logits

D, L = 16, 12


def scores(
    rope: HierarchicalRotaryEmbedding, q: torch.Tensor, k: torch.Tensor, pos
) -> torch.Tensor:
    cos, sin = rope(pos)
    qr = apply_rotary(q, cos, sin, rope.rotary.layout)
    kr = apply_rotary(k, cos, sin, rope.rotary.layout)
    return qr @ kr.transpose(-1, -2)


def hierarchical(generator: torch.Generator) -> torch.Tensor:
    block = torch.sort(torch.randint(0, 4, (L,), generator=generator)).values
    token = torch.randint(0, 30, (L,), generator=generator)
    return torch.stack((token, block))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_scores_depend_only_on_per_level_offsets(layout, generator) -> None:
    rope = HierarchicalRotaryEmbedding(D, layout=layout)
    q, k = torch.randn(L, D, generator=generator), torch.randn(L, D, generator=generator)
    pos = hierarchical(generator)
    ref = scores(rope, q, k, pos)
    for level, shift in ((0, 17), (1, 5), (0, -3)):
        moved = pos.clone()
        moved[level] += shift
        torch.testing.assert_close(scores(rope, q, k, moved), ref, atol=1e-4, rtol=1e-4)
    # the property can fail: moving one token on one level changes its scores
    for level in (0, 1):
        moved = pos.clone()
        moved[level, 3] += 2
        assert not torch.allclose(scores(rope, q, k, moved)[3], ref[3], atol=1e-3)


def test_token_level_with_all_channels_is_plain_rope(generator) -> None:
    rope = HierarchicalRotaryEmbedding(D, sections=(D // 2, 0), base=500.0)
    flat = torch.arange(L)
    pos = torch.stack((flat, torch.zeros(L, dtype=torch.long)))
    plain = RotaryEmbedding(D, base=500.0)(flat)
    got = rope(pos)
    torch.testing.assert_close(got.cos, plain.cos, atol=0, rtol=0)
    torch.testing.assert_close(got.sin, plain.sin, atol=0, rtol=0)


def test_default_split_gives_high_frequencies_to_tokens() -> None:
    assert hirope_sections(16) == [4, 4]
    assert hirope_sections(18) == [5, 4]
    assert hirope_sections(12, levels=3) == [2, 2, 2]
    rope = HierarchicalRotaryEmbedding(8)
    # token level alone turns the first (fastest) pairs; block level the slow ones
    phi = rope.rotary.angles(torch.tensor([[1], [0]]))
    assert phi[0, :2].ne(0).all() and phi[0, 2:].eq(0).all()


def test_window_equals_flat_rope_for_near_pairs(generator) -> None:
    rope = HierarchicalRotaryEmbedding(D)
    flat_rope = RotaryEmbedding(D)
    q, k = torch.randn(2, L, D, generator=generator), torch.randn(2, L, D, generator=generator)
    pos = hierarchical(generator)
    flat = torch.arange(L)
    far = scores(rope, q, k, pos)
    cos, sin = flat_rope(flat)
    near = apply_rotary(q, cos, sin, "half") @ apply_rotary(k, cos, sin, "half").transpose(-1, -2)
    merged = window_logits(near, far, flat, flat, window=3)
    distance = (flat[:, None] - flat[None, :]).abs()
    assert torch.equal(merged[:, distance < 3], near[:, distance < 3])
    assert torch.equal(merged[:, distance >= 3], far[:, distance >= 3])
    assert not torch.allclose(near[:, distance >= 3], far[:, distance >= 3])
    assert torch.equal(window_logits(near, far, flat, flat, window=0), far)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="sections"):
        HierarchicalRotaryEmbedding(D, sections=(3, 3))
    with pytest.raises(ValueError, match="levels"):
        HierarchicalRotaryEmbedding(D, levels=4)
    with pytest.raises(ValueError, match="positions must be"):
        HierarchicalRotaryEmbedding(D)(torch.zeros(3, L))
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        window_logits(a, torch.zeros(3, 3), torch.arange(2), torch.arange(3), 1)
    with pytest.raises(ValueError, match="window"):
        window_logits(a, a, torch.arange(2), torch.arange(3), -1)
