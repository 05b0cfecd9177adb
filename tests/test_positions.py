"""Grid and sequence position builders."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from multipos import RotaryEmbedding, apply_rotary, build_grid_positions, build_sequence_positions


@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    prefix=st.integers(0, 4),
)
def test_grid_positions_row_major_with_prefix_apart(shape, prefix) -> None:
    grid = build_grid_positions(shape, num_prefix_tokens=prefix)
    n = 1
    for s in shape:
        n *= s
    assert grid.patches.shape == (len(shape), n)
    assert grid.num_tokens == prefix + n
    assert grid.shape == tuple(shape)
    # Row-major: token t sits at the multi-index unravel(t).
    for t in range(n):
        expected, rest = [], t
        for s in reversed(shape):
            expected.append(rest % s)
            rest //= s
        assert grid.patches[:, t].tolist() == list(reversed(expected))
    full = grid.with_prefix()
    assert full.shape == (len(shape), prefix + n)
    assert torch.all(full[:, :prefix] == 0)
    torch.testing.assert_close(full[:, prefix:], grid.patches)
    assert grid.is_prefix().tolist() == [True] * prefix + [False] * n


def test_non_square_grid_is_never_inferred() -> None:
    grid = build_grid_positions((3, 5), num_prefix_tokens=1)
    assert grid.patches[:, -1].tolist() == [2.0, 4.0]
    assert grid.patches[:, 5].tolist() == [1.0, 0.0]


def test_prefix_tokens_at_zero_are_left_unrotated() -> None:
    grid = build_grid_positions((2, 3), num_prefix_tokens=2)
    rope = RotaryEmbedding(8, num_axes=2)
    x = torch.randn(grid.num_tokens, 8)
    y = apply_rotary(x, *rope(grid.with_prefix()), layout=rope.layout)
    torch.testing.assert_close(y[:2], x[:2], rtol=0, atol=0)
    assert not torch.allclose(y[-1], x[-1])


def test_normalised_grids() -> None:
    unit = build_grid_positions((2, 4), normalize="unit").patches
    assert unit[1, :4].tolist() == [0.125, 0.375, 0.625, 0.875]
    sym = build_grid_positions((2,), normalize="symmetric").patches
    assert sym.tolist() == [[-0.5, 0.5]]
    ref = build_grid_positions((28, 28), reference_shape=(14, 14)).patches
    assert ref.max().item() == pytest.approx(13.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (0, 3)}, "positive sizes"),
        ({"shape": (2, 3), "num_prefix_tokens": -1}, "num_prefix_tokens"),
        ({"shape": (2, 3), "normalize": "pixels"}, "normalize must be one of"),
        ({"shape": (2, 3), "reference_shape": (4,)}, "reference_shape"),
    ],
)
def test_grid_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_grid_positions(**kwargs)


def test_sequence_positions_with_offset_and_step() -> None:
    assert build_sequence_positions(4, offset=10).tolist() == [[10.0, 11.0, 12.0, 13.0]]
    assert build_sequence_positions(3, step=0.25).tolist() == [[0.0, 0.25, 0.5]]
    batched = build_sequence_positions(2, offset=torch.tensor([0.0, 5.0]))
    assert batched.tolist() == [[[0.0, 1.0], [5.0, 6.0]]]


def test_packed_segments_restart_positions() -> None:
    seg = torch.tensor([[0, 0, 0, 1, 1, 2], [7, 7, 7, 7, 3, 3]])
    pos = build_sequence_positions(6, segment_ids=seg)
    assert pos.tolist() == [[[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]]
    # A repeated id after another segment is a new segment.
    again = build_sequence_positions(4, segment_ids=torch.tensor([0, 1, 0, 0]))
    assert again.tolist() == [[0, 0, 0, 1]]


@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_packed_positions_equal_concatenated_aranges(lengths) -> None:
    seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    pos = build_sequence_positions(len(seg), segment_ids=seg)[0]
    expected = torch.cat([torch.arange(n, dtype=torch.float32) for n in lengths])
    torch.testing.assert_close(pos, expected)


def test_sequence_errors() -> None:
    with pytest.raises(ValueError, match="segment_ids must be"):
        build_sequence_positions(3, segment_ids=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="offset"):
        build_sequence_positions(3, offset=torch.zeros(2, 2))
