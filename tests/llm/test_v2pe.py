import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from multipos.llm import (
    V2PE_TRAINING_DELTAS,
    packed_attention_mask,
    v2pe_position_ids,
    v2pe_positions,
)

IMG = 7


def _reference(segments, deltas, tokens_per_tile):
    """Plain-Python statement of the V2PE rule: r + 1 per text token, r + k*delta
    per visual token, r <- r + ceil(n * delta) after each image."""
    out, r, image = [], -1, 0
    for kind, count in segments:
        if kind == "text":
            out += [r + j for j in range(1, count + 1)]
            r += count
        else:
            n, d = count * tokens_per_tile, deltas[image]
            out += [r + k * d for k in range(1, n + 1)]
            r += math.ceil(n * d)
            image += 1
    return out


segments_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.integers(0, 5)),
        st.tuples(st.just("image"), st.integers(1, 3)),
    ),
    max_size=6,
)


@given(segments_strategy, st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 1 / 16]))
def test_positions_follow_the_rule(segments, delta):
    pos = v2pe_positions(segments, delta=delta, tokens_per_tile=5)
    ref = torch.tensor(_reference(segments, [delta] * len(segments), 5), dtype=torch.float64)
    assert pos.dtype == torch.float32
    torch.testing.assert_close(pos, ref.float(), rtol=0, atol=0)


@given(segments_strategy)
def test_delta_one_is_arange(segments):
    pos = v2pe_positions(segments, delta=1.0, tokens_per_tile=4)
    assert torch.equal(pos, torch.arange(pos.numel(), dtype=torch.float32))


def test_ceiling_rule_snapshot():
    # 2 tiles of 256 tokens at stride 64 (delta 1/4): 512 / 4 = 128 slots exactly.
    pos = v2pe_positions([("text", 2), ("image", 2), ("text", 1)], delta=0.25)
    assert pos[2].item() == 1.25 and pos[2 + 511].item() == 1 + 128
    assert pos[-1].item() == 1 + 128 + 1
    # 3 visual tokens at delta 1/4 end at r + 0.75: the image takes ceil(0.75) = 1 slot.
    pos = v2pe_positions([("text", 1), ("image", 1), ("text", 2)], delta=0.25, tokens_per_tile=3)
    assert pos.tolist() == [0.0, 0.25, 0.5, 0.75, 2.0, 3.0]
    # 1/3 times 3 is one slot, not two (float64 rounding must not push the ceiling).
    pos = v2pe_positions([("image", 1), ("text", 1)], delta=1 / 3, tokens_per_tile=3)
    assert pos[-1].item() == 1.0


def test_positions_stay_below_integer_positions():
    segs = [("text", 10), ("image", 4), ("text", 10), ("image", 4), ("text", 5)]
    full = v2pe_positions(segs, delta=1.0)
    for delta in (0.5, 0.25, 1 / 16):
        pos = v2pe_positions(segs, delta=delta)
        assert pos.max() < full.max()
        assert bool((pos.diff() > 0).all())  # strictly increasing


def test_per_image_sampling_is_reproducible_and_varies():
    segs = [("text", 3)] + [("image", 1), ("text", 2)] * 12
    g = torch.Generator().manual_seed(3)
    a = v2pe_positions(segs, delta=V2PE_TRAINING_DELTAS, generator=g)
    b = v2pe_positions(segs, delta=V2PE_TRAINING_DELTAS, generator=torch.Generator().manual_seed(3))
    c = v2pe_positions(segs, delta=V2PE_TRAINING_DELTAS, generator=g)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The step inside each image is that image's delta; images draw different deltas.
    steps = set()
    for i in range(12):
        start = 3 + i * 258
        image = a[start : start + 256]
        step = image.diff().unique()
        assert step.numel() == 1 and step.item() in V2PE_TRAINING_DELTAS
        steps.add(step.item())
    assert len(steps) > 3
    assert tuple(2.0**-k for k in range(8, -1, -1)) == V2PE_TRAINING_DELTAS


def test_position_ids_match_segments_with_padding_and_sampling():
    segs = [("text", 2), ("image", 1), ("text", 3), ("image", 1), ("text", 1)]
    ids = [1, 2] + [IMG] * 4 + [3, 4, 5] + [IMG] * 4 + [6]
    pad = 3
    left = torch.tensor([[0] * pad + ids])
    right = torch.tensor([ids + [0] * pad])
    mask_left = torch.tensor([[0] * pad + [1] * len(ids)])
    mask_right = torch.tensor([[1] * len(ids) + [0] * pad])
    for delta in (1.0, 0.25, 1 / 3):
        ref = v2pe_positions(segs, delta=delta, tokens_per_tile=4)
        got_l = v2pe_position_ids(left, IMG, mask_left, delta=delta)
        got_r = v2pe_position_ids(right, IMG, mask_right, delta=delta)
        assert got_l.dtype == torch.float32 and got_l.shape == (1, len(ids) + pad)
        assert torch.equal(got_l[0, pad:], ref) and torch.equal(got_l[0, :pad], torch.zeros(pad))
        assert torch.equal(got_r[0, : len(ids)], ref) and torch.equal(
            got_r[0, len(ids) :], torch.zeros(pad)
        )
    # Sampling: the same generator state gives the same per-image draws as the segment form.
    a = v2pe_positions(
        segs, delta=(0.5, 0.25), tokens_per_tile=4, generator=torch.Generator().manual_seed(5)
    )
    b = v2pe_position_ids(
        left, IMG, mask_left, delta=(0.5, 0.25), generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(b[0, pad:], a)


@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.integers(0, 3),
    st.sampled_from(["left", "right"]),
)
def test_delta_one_is_arange_with_padding_and_packing(lengths, pad, side):
    g = torch.Generator().manual_seed(sum(lengths))
    total = sum(lengths)
    ids = torch.randint(1, 10, (total,), generator=g)  # includes IMG tokens at random
    seq = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    expected = torch.cat([torch.arange(n, dtype=torch.float32) for n in lengths])
    zeros = torch.zeros(pad, dtype=torch.long)
    if side == "left":
        ids, seq = torch.cat((zeros, ids)), torch.cat((zeros, seq))
        mask = torch.cat((zeros, torch.ones(total, dtype=torch.long)))
        expected = torch.cat((zeros.float(), expected))
    else:
        ids, seq = torch.cat((ids, zeros)), torch.cat((seq, zeros + 99))
        mask = torch.cat((torch.ones(total, dtype=torch.long), zeros))
        expected = torch.cat((expected, zeros.float()))
    got = v2pe_position_ids(ids[None], IMG, mask[None], delta=1.0, sequence_ids=seq[None])
    assert torch.equal(got[0], expected)
    # Without sequence_ids a row is one sample: attention_mask.cumsum(-1) - 1 on real tokens.
    got = v2pe_position_ids(ids[None], IMG, mask[None], delta=1.0)
    assert torch.equal(got[0], ((mask.cumsum(0) - 1) * mask).float())


def test_packed_rows_restart_per_sample_and_split_images():
    ids = torch.tensor([[1, IMG, IMG, IMG, IMG, 2, IMG, IMG]])
    seq = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2]])
    got = v2pe_position_ids(ids, IMG, delta=0.5, sequence_ids=seq)
    # Each sample starts from r = -1: sample 0 is text 0, image 0.5, 1.0; sample 1 opens with
    # an image at -1 + 0.5, -1 + 1.0, then text at -1 + ceil(2 * 0.5) + 1 = 1; sample 2 as 1.
    assert got.tolist() == [[0.0, 0.5, 1.0, -0.5, 0.0, 1.0, -0.5, 0.0]]


def test_packed_attention_mask_blocks_across_samples():
    seq = torch.tensor([[0, 0, 1, 1, 1]])
    mask = packed_attention_mask(seq, torch.tensor([[1, 1, 1, 1, 0]]), dtype=torch.bfloat16)
    assert mask.shape == (1, 1, 5, 5) and mask.dtype == torch.bfloat16
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding query: its diagonal only, so softmax stays finite
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"segments": [("video", 2)]}, ValueError, "kind"),
        ({"segments": [("text", -1)]}, ValueError, "text length"),
        ({"segments": [("image", 0)]}, ValueError, "image tiles"),
        ({"segments": [("image", 1.5)]}, TypeError, "image tiles"),
        ({"segments": ["text"]}, TypeError, r"segments\[0\]"),
        ({"segments": [("image", 1)], "delta": 0.0}, ValueError, "delta"),
        ({"segments": [("image", 1)], "delta": 1.5}, ValueError, "delta"),
        ({"segments": [("image", 1)], "delta": (0.5, 0.25)}, ValueError, "generator"),
        ({"segments": [("image", 1)], "delta": ()}, ValueError, "empty"),
        ({"segments": [("image", 1)], "tokens_per_tile": 0}, ValueError, "tokens_per_tile"),
        (
            {"segments": [("image", 1)], "delta": (0.5,), "generator": 3},
            TypeError,
            "generator",
        ),
    ],
)
def test_bad_segments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        v2pe_positions(**kwargs)


def test_bad_token_inputs_raise():
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="input_ids"):
        v2pe_position_ids(ids[0], IMG)
    with pytest.raises(TypeError, match="input_ids"):
        v2pe_position_ids(ids.float(), IMG)
    with pytest.raises(ValueError, match="attention_mask"):
        v2pe_position_ids(ids, IMG, torch.ones(2, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        v2pe_position_ids(ids, IMG, torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="sequence_ids"):
        v2pe_position_ids(ids, IMG, sequence_ids=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="sequence_ids"):
        v2pe_position_ids(ids, IMG, sequence_ids=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="image_token_id"):
        v2pe_position_ids(ids, "7")
    with pytest.raises(TypeError, match="dtype"):
        packed_attention_mask(torch.zeros(1, 3, dtype=torch.long), dtype=torch.long)
