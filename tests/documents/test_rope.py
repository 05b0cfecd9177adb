from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

from multipos.documents import rope_codes, word_graph
from tests.documents._layouts import random_boxes

seeds = st.integers(0, 2**31 - 1)


def _page(seed: int, n: int) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    edge_index = word_graph(random_boxes(g, n))
    rank = torch.randperm(n, generator=g)
    return g, edge_index, rank


def test_snapshot_of_a_star() -> None:
    # target 2 with neighbours 0, 1, 3, 4 read in id order; a self-loop; one edge into 0
    ei = torch.tensor([[0, 1, 3, 4, 2, 2], [2, 2, 2, 2, 2, 0]])
    assert rope_codes(ei, torch.arange(5)).tolist() == [-2, -1, 1, 2, 0, 1]
    assert rope_codes(ei, torch.arange(5), "rank").tolist() == [0, 1, 3, 4, 2, 1]
    assert rope_codes(ei, torch.arange(5).flip(0)).tolist() == [2, 1, -1, -2, 0, -1]


@given(seed=seeds, n=st.integers(2, 40), convention=st.sampled_from(["signed", "rank"]))
def test_codes_unchanged_by_relabelling_the_nodes(seed: int, n: int, convention: str) -> None:
    g, edge_index, rank = _page(seed, n)
    perm = torch.randperm(n, generator=g)  # old node u becomes perm[u]
    new_rank = torch.empty_like(rank)
    new_rank[perm] = rank
    a = rope_codes(edge_index, rank, convention)  # type: ignore[arg-type]
    b = rope_codes(perm[edge_index], new_rank, convention)  # type: ignore[arg-type]
    assert torch.equal(a, b)


@given(seed=seeds, n=st.integers(2, 40), shift=st.integers(-1000, 1000), scale=st.floats(0.1, 9))
def test_codes_unchanged_by_shifting_or_reindexing_the_order(
    seed: int, n: int, shift: int, scale: float
) -> None:
    _, edge_index, rank = _page(seed, n)
    codes = rope_codes(edge_index, rank)
    assert torch.equal(rope_codes(edge_index, rank + shift), codes)
    assert torch.equal(rope_codes(edge_index, rank * 7 + rank**2 - 3), codes)  # increasing
    assert torch.equal(rope_codes(edge_index, torch.exp(rank * scale / n) + shift), codes)
    # reversing the order negates the signed codes
    assert torch.equal(rope_codes(edge_index, -rank), -codes)


@given(seed=seeds, n=st.integers(2, 40))
def test_codes_are_unique_per_target_and_count_the_neighbours(seed: int, n: int) -> None:
    _, edge_index, rank = _page(seed, n)
    signed = rope_codes(edge_index, rank)
    ranked = rope_codes(edge_index, rank, "rank")
    src, dst = edge_index
    for i in range(n):
        into = dst == i
        s, nbr = signed[into], src[into]
        assert s.unique().numel() == s.numel() and (s != 0).all()
        before = int((rank[nbr] < rank[i]).sum())
        assert int((s < 0).sum()) == before
        assert sorted(s.tolist()) == [*range(-before, 0), *range(1, s.numel() - before + 1)]
        assert torch.equal(ranked[into], s + before)  # pi_i(j) = signed + pi_i(i)
        # neighbours sorted by rank get increasing codes
        assert torch.equal(torch.argsort(s), torch.argsort(rank[nbr]))


def test_duplicate_edges_share_a_code_and_empty_graph() -> None:
    ei = torch.tensor([[0, 0, 2], [1, 1, 1]])
    assert rope_codes(ei, torch.tensor([5, 9, 1])).tolist() == [-1, -1, -2]
    assert rope_codes(torch.zeros(2, 0, dtype=torch.int64), torch.arange(3)).shape == (0,)


@pytest.mark.parametrize(
    ("edge_index", "rank", "error", "match"),
    [
        (torch.tensor([[0], [1]]), torch.tensor([0, 0]), ValueError, "distinct"),
        (torch.tensor([[0], [2]]), torch.arange(2), ValueError, "refers to node 2"),
        (torch.tensor([[0], [1]]), torch.tensor([0.0, float("nan")]), ValueError, "finite"),
        (torch.tensor([[0], [1]]), torch.arange(4).reshape(2, 2), ValueError, r"shape \(N,\)"),
        (torch.tensor([[0], [1]]), [0, 1], TypeError, "rank must be a torch.Tensor"),
        (torch.tensor([[0.0], [1.0]]), torch.arange(2), TypeError, "integer"),
        (torch.tensor([0, 1]), torch.arange(2), ValueError, r"shape \(2, E\)"),
    ],
)
def test_bad_input_raises(edge_index, rank, error, match) -> None:
    with pytest.raises(error, match=match):
        rope_codes(edge_index, rank)


def test_bad_convention_raises() -> None:
    with pytest.raises(ValueError, match="convention must be one of 'signed', 'rank'"):
        rope_codes(torch.tensor([[0], [1]]), torch.arange(2), "offset")  # type: ignore[arg-type]
