from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

from multipos.documents import rank_from_order, reading_order, synthetic_form
from tests.documents import _layouts as lay


def _row_major(boxes: torch.Tensor) -> list[int]:
    """Raster expectation for aligned layouts: by top, then left."""
    order = sorted(range(len(boxes)), key=lambda i: (float(boxes[i, 1]), float(boxes[i, 0])))
    return order


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("layout", "strategy"),
    [
        (lay.two_columns, "xycut"),
        (lay.table, "xycut"),
        (lay.table, "raster"),
        (lay.header_over_columns, "xycut"),
        (lay.rotated_page, "raster"),
        (lay.rotated_page, "xycut"),
    ],
)
def test_strategy_reads_the_hand_made_layout(layout, strategy: str, seed: int) -> None:
    boxes, expected = layout()
    words, rank = lay.shuffled(boxes, expected, torch.Generator().manual_seed(seed))
    assert torch.equal(reading_order(words, strategy), rank)


def test_raster_reads_across_columns_and_xycut_does_not() -> None:
    boxes, _ = lay.two_columns()
    raster = rank_from_order(torch.tensor(_row_major(boxes)))
    assert torch.equal(reading_order(boxes, "raster"), raster)
    assert not torch.equal(reading_order(boxes, "xycut"), raster)


def test_raster_without_deskew_would_fail_on_the_rotated_page() -> None:
    boxes, expected = lay.rotated_page(5.0)
    # the naive sort by top edge mixes lines: the deskew is what makes raster right
    assert rank_from_order(torch.tensor(_row_major(boxes))).tolist() != expected
    assert reading_order(boxes, "raster").tolist() == expected


@pytest.mark.parametrize("skew", [-4.0, 0.0, 2.5])
def test_synthetic_form_in_raster_order(skew: float) -> None:
    form = synthetic_form(rows=5, columns=2, skew_degrees=skew)
    assert torch.equal(reading_order(form.boxes, "raster"), form.rank)


@given(seed=st.integers(0, 2**31 - 1), strategy=st.sampled_from(["raster", "xycut"]))
def test_relabelling_the_words_permutes_the_rank(seed: int, strategy: str) -> None:
    g = torch.Generator().manual_seed(seed)
    boxes = lay.random_boxes(g, 30)
    perm = torch.randperm(30, generator=g)
    assert torch.equal(reading_order(boxes[perm], strategy), reading_order(boxes, strategy)[perm])


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
@pytest.mark.parametrize("strategy", ["given", "raster", "xycut"])
def test_rank_is_a_permutation(strategy: str, seed: int, n: int) -> None:
    rank = reading_order(lay.random_boxes(torch.Generator().manual_seed(seed), n), strategy)
    assert rank.dtype == torch.int64
    assert torch.equal(torch.sort(rank).values, torch.arange(n))


def test_given_one_word_and_collinear_words() -> None:
    boxes = torch.tensor([[50.0, 0, 60, 10], [0, 0, 10, 10], [20, 0, 30, 10]])
    assert reading_order(boxes, "given").tolist() == [0, 1, 2]
    for strategy in ("raster", "xycut"):
        assert reading_order(boxes, strategy).tolist() == [2, 0, 1]
        assert reading_order(boxes[:1], strategy).tolist() == [0]
        points = torch.tensor([[0.0, 30, 0, 30], [0, 10, 0, 10], [0, 20, 0, 20]])  # a column
        assert reading_order(points, strategy).tolist() == [2, 0, 1]


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="strategy must be one of 'given', 'raster', 'xycut'"):
        reading_order(torch.zeros(2, 4), "columns")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        reading_order(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="x0 <= x1"):
        reading_order(torch.tensor([[3.0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="finite"):
        reading_order(torch.tensor([[0.0, 0, 1, float("nan")]]), "xycut")
