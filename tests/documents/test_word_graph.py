from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

from multipos.documents import word_graph
from tests.documents._layouts import random_boxes


def _edges(e: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, e.t().tolist()))


def _components(e: torch.Tensor, n: int) -> int:
    a = coo_matrix((np.ones(e.shape[1]), (e[0].numpy(), e[1].numpy())), shape=(n, n))
    return int(connected_components(a, directed=False)[0])


def _lune_skeleton(points: np.ndarray, beta: float) -> set[tuple[int, int]]:
    """Brute-force O(N^3) lune beta-skeleton of points, from the definition."""
    n = len(points)
    out = set()
    for i in range(n):
        for j in range(i + 1, n):
            p, q = points[i], points[j]
            r = beta * np.linalg.norm(q - p) / 2
            c1, c2 = p + beta / 2 * (q - p), q + beta / 2 * (p - q)
            others = np.delete(points, [i, j], axis=0)
            inside = (np.linalg.norm(others - c1, axis=1) < r * (1 - 1e-9)) & (
                np.linalg.norm(others - c2, axis=1) < r * (1 - 1e-9)
            )
            if not inside.any():
                out |= {(i, j), (j, i)}
    return out


seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds, n=st.integers(3, 25), beta=st.floats(1.0, 3.0))
def test_points_give_the_lune_skeleton_of_the_centres(seed: int, n: int, beta: float) -> None:
    boxes = random_boxes(torch.Generator().manual_seed(seed), n, points=True)
    assert _edges(word_graph(boxes, beta=beta)) == _lune_skeleton(boxes[:, :2].numpy(), beta)


@given(seed=seeds, n=st.integers(2, 60), beta=st.floats(1.0, 2.0))
def test_points_contain_the_minimum_spanning_tree(seed: int, n: int, beta: float) -> None:
    boxes = random_boxes(torch.Generator().manual_seed(seed), n, points=True)
    mst = minimum_spanning_tree(squareform(pdist(boxes[:, :2].numpy()))).tocoo()
    edges = _edges(word_graph(boxes, beta=beta))
    assert {(int(a), int(b)) for a, b in zip(mst.row, mst.col, strict=True)} <= edges


@given(seed=seeds, n=st.integers(1, 80), beta=st.floats(1.0, 2.0))
def test_boxes_are_connected_for_beta_in_1_2(seed: int, n: int, beta: float) -> None:
    boxes = random_boxes(torch.Generator().manual_seed(seed), n)
    e = word_graph(boxes, beta=beta)
    assert _components(e, n) == 1


def test_knn_can_be_disconnected_where_the_skeleton_is_not() -> None:
    # two tight clusters of 5 words far apart: each word's 4 nearest are in its own cluster
    a = torch.tensor([[i * 12.0, 0, i * 12 + 10, 10] for i in range(5)])
    boxes = torch.cat([a, a + torch.tensor([500.0, 400, 500, 400])])
    assert _components(word_graph(boxes, "knn", k=4), 10) == 2
    assert _components(word_graph(boxes), 10) == 1


@given(seed=seeds, n=st.integers(2, 40), method=st.sampled_from(["beta_skeleton", "knn"]))
def test_relabelling_the_words_relabels_the_graph(seed: int, n: int, method: str) -> None:
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(g, n)
    perm = torch.randperm(n, generator=g)  # new word u is old word perm[u]
    e = word_graph(boxes, method, k=3)  # type: ignore[arg-type]
    e_perm = word_graph(boxes[perm], method, k=3)  # type: ignore[arg-type]
    assert _edges(perm[e_perm]) == _edges(e)


@given(seed=seeds, n=st.integers(2, 50))
def test_a_larger_beta_keeps_a_subset_of_the_edges(seed: int, n: int) -> None:
    boxes = random_boxes(torch.Generator().manual_seed(seed), n)
    graphs = [_edges(word_graph(boxes, beta=b)) for b in (1.0, 1.5, 2.0, 3.0)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(graphs))


def test_format_undirected_sorted_int64_no_self_loops(generator) -> None:
    e = word_graph(random_boxes(generator, 30))
    assert e.dtype == torch.int64 and e.shape[0] == 2
    assert (e[0] != e[1]).all()
    assert _edges(e) == _edges(e.flip(0))
    key = e[0] * 30 + e[1]
    assert torch.equal(key, torch.sort(key).values) and key.unique().numel() == key.numel()


def test_knn_degree(generator) -> None:
    e = word_graph(random_boxes(generator, 30), "knn", k=5)
    deg = torch.bincount(e[0], minlength=30)
    assert (deg >= 5).all()
    # k >= N - 1: every pair
    assert word_graph(random_boxes(generator, 4), "knn", k=8).shape[1] == 4 * 3


def test_one_word_collinear_and_touching_words() -> None:
    assert word_graph(torch.tensor([[0.0, 0, 5, 5]])).shape == (2, 0)
    line = torch.tensor([[float(i * i), 0, float(i * i), 0] for i in range(6)])
    assert _edges(word_graph(line)) == {(i, i + 1) for i in range(5)} | {
        (i + 1, i) for i in range(5)
    }
    flat = torch.tensor([[0.0, 5, 10, 5], [20, 5, 30, 5], [40, 5, 50, 5]])  # zero height
    assert _edges(word_graph(flat)) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    same = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]])
    assert (0, 1) in _edges(word_graph(same)) and _components(word_graph(same), 3) == 1


def test_a_word_between_two_others_blocks_the_long_edge() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [30, 0, 40, 10], [60, 0, 70, 10]])
    assert _edges(word_graph(boxes)) == {(0, 1), (1, 0), (1, 2), (2, 1)}


@pytest.mark.parametrize(
    ("boxes", "error", "match"),
    [
        (torch.zeros(0, 4), ValueError, "empty"),
        (torch.zeros(3, 3), ValueError, r"shape \(N, 4\)"),
        (torch.zeros(4), ValueError, r"shape \(N, 4\)"),
        (torch.tensor([[5.0, 0, 1, 1]]), ValueError, "x0 <= x1"),
        (torch.tensor([[0.0, 5, 1, 1]]), ValueError, "y0 <= y1"),
        (torch.tensor([[0.0, float("nan"), 1, 1]]), ValueError, "finite"),
        (torch.tensor([[0.0, 0, float("inf"), 1]]), ValueError, "finite"),
        ([[0.0, 0, 1, 1]], TypeError, "torch.Tensor"),
        (torch.ones(2, 4, dtype=torch.bool), TypeError, "real"),
    ],
)
def test_bad_boxes_raise_naming_the_problem(boxes, error, match) -> None:
    with pytest.raises(error, match=match):
        word_graph(boxes)


def test_bad_options_raise() -> None:
    boxes = torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3]])
    with pytest.raises(ValueError, match="method must be one of"):
        word_graph(boxes, "delaunay")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be finite and >= 1"):
        word_graph(boxes, beta=0.5)
    with pytest.raises(TypeError, match="beta"):
        word_graph(boxes, beta="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be a positive int"):
        word_graph(boxes, "knn", k=0)


def test_a_thousand_word_page_in_well_under_a_second(generator) -> None:
    boxes = random_boxes(generator, 1000)
    word_graph(boxes[:50])  # warm up imports
    start = time.perf_counter()
    e = word_graph(boxes)
    elapsed = time.perf_counter() - start
    assert _components(e, 1000) == 1
    assert elapsed < 0.8, f"{elapsed:.2f} s"
