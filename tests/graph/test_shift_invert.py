"""Shift-invert Lanczos for the magnetic Laplacian of 97-2,000-node graphs
(:mod:`multipos.graph.shift_invert`): the dense solver's pairs when it answers, and no answer
(hence the dense solver) when a repeated eigenvalue could hide from a Krylov space."""

from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch

from multipos.graph import magnetic_laplacian, magnetic_laplacian_pe
from multipos.graph.shift_invert import _checked, _count_below, hermitian_csc, lowest_eigenpairs
from tests.graph._graphs import random_graph


def _solve(lap: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    return lowest_eigenpairs(sp.csc_matrix(lap), count, float(lap.diagonal().real.max()))


def _copies(edge_index: torch.Tensor, n: int, copies: int) -> torch.Tensor:
    return torch.cat([edge_index + i * n for i in range(copies)], dim=1)


@pytest.mark.parametrize(
    ("n", "seed", "normalization"),
    [(120, 0, "sym"), (200, 1, "sym"), (300, 2, "sym"), (150, 3, "none")],
)
def test_lowest_pairs_equal_the_dense_solver(n, seed, normalization) -> None:
    lap = magnetic_laplacian(
        random_graph(n, 3.0 / n, seed, directed=True), n, normalization=normalization
    ).numpy()
    count = 9
    found = _solve(lap, count)
    assert found is not None
    values, vectors = found
    dense_values, dense_vectors = scipy.linalg.eigh(lap, subset_by_index=[0, count - 1])
    scale = lap.diagonal().real.max()
    np.testing.assert_allclose(values, dense_values, rtol=0, atol=1e-10 * scale)
    # Simple spectrum: each vector is the dense one times a unit phase.
    overlap = np.abs(np.einsum("ij,ij->j", dense_vectors.conj(), vectors))
    np.testing.assert_allclose(overlap, 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(vectors.conj().T @ vectors, np.eye(count), atol=1e-12)


def _symmetric_graphs() -> dict[str, tuple[torch.Tensor, int]]:
    dag = random_graph(40, 0.1, 5, directed=True)
    tree = torch.stack([(torch.arange(1, 255) - 1) // 2, torch.arange(1, 255)])
    ring = torch.stack([torch.arange(101), (torch.arange(101) + 1) % 101])
    return {
        "three copies of a DAG": (_copies(dag, 40, 3), 120),
        "five copies of a DAG": (_copies(dag, 40, 5), 200),
        "binary tree": (tree, 255),
        "star": (torch.stack([torch.zeros(119, dtype=torch.long), torch.arange(1, 120)]), 120),
        "undirected cycle": (torch.cat([ring, ring.flip(0)], dim=1), 101),
    }


@pytest.mark.parametrize("name", list(_symmetric_graphs()))
def test_repeated_eigenvalues_are_refused_or_found_completely(name) -> None:
    edge_index, n = _symmetric_graphs()[name]
    lap = magnetic_laplacian(edge_index, n).numpy()
    dense_values, dense_vectors = scipy.linalg.eigh(lap, subset_by_index=[0, 7])
    found = _solve(lap, 8)
    if found is not None:  # accepted: every copy of every eigenvalue below the cut is there
        values, vectors = found
        np.testing.assert_allclose(values, dense_values, rtol=0, atol=1e-10)
        outside = vectors - dense_vectors @ (dense_vectors.conj().T @ vectors)
        assert np.abs(outside).max() < 1e-9
    # The public route (refused: the dense solver; accepted: the same eigenspaces).
    auto = magnetic_laplacian_pe(edge_index, n, k=8)
    dense = magnetic_laplacian_pe(edge_index, n, k=8, solver="dense")
    torch.testing.assert_close(auto.values, dense.values, rtol=0, atol=1e-6)
    u = torch.complex(auto.real.double(), auto.imag.double())
    w = torch.linalg.qr(torch.complex(dense.real.double(), dense.imag.double())).Q  # float32
    assert (u - w @ (w.conj().T @ u)).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["three copies of a DAG", "star", "undirected cycle"])
def test_a_cut_inside_a_repeated_eigenvalue_is_refused(name) -> None:
    edge_index, n = _symmetric_graphs()[name]
    assert _solve(magnetic_laplacian(edge_index, n).numpy(), 8) is None
    auto = magnetic_laplacian_pe(edge_index, n, k=8)
    dense = magnetic_laplacian_pe(edge_index, n, k=8, solver="dense")
    for a, b in zip(auto, dense, strict=True):
        assert torch.equal(a, b)


def test_inertia_counts_the_eigenvalues_below_a_shift() -> None:
    for seed in range(5):
        n = 130
        lap = magnetic_laplacian(random_graph(n, 3.0 / n, seed, directed=True), n).numpy()
        spectrum = np.linalg.eigvalsh(lap)
        for cut in (3, 8, 20):
            tau = 0.5 * (spectrum[cut - 1] + spectrum[cut])
            assert _count_below(sp.csc_matrix(lap), tau) == cut


def test_a_missing_eigenpair_is_caught_by_the_inertia() -> None:
    n = 150
    lap = magnetic_laplacian(random_graph(n, 3.0 / n, 11, directed=True), n).numpy()
    values, vectors = scipy.linalg.eigh(lap, subset_by_index=[0, 9])
    csc = sp.csc_matrix(lap)
    assert _checked(csc, (values[:9], vectors[:, :9]), 8, 1.0) is not None
    skip = np.r_[0:3, 4:10]  # the fourth pair lost, as a Krylov space can lose a copy
    assert _checked(csc, (values[skip], vectors[:, skip]), 8, 1.0) is None


def test_auto_pe_matches_dense_pe() -> None:
    n = 180
    edge_index = random_graph(n, 3.0 / n, 7, directed=True)
    lap = magnetic_laplacian(edge_index, n).numpy()
    assert _solve(lap, 8) is not None  # this graph takes the Krylov route
    auto = magnetic_laplacian_pe(edge_index, n, k=8, q=[0.1, 0.25])
    dense = magnetic_laplacian_pe(edge_index, n, k=8, q=[0.1, 0.25], solver="dense")
    torch.testing.assert_close(auto.values, dense.values, rtol=0, atol=1e-6)
    torch.testing.assert_close(auto.real, dense.real, rtol=0, atol=1e-5)
    torch.testing.assert_close(auto.imag, dense.imag, rtol=0, atol=1e-5)
    assert torch.equal(auto.mask, dense.mask)


def test_hermitian_csc_builds_the_matrix() -> None:
    rng = np.random.default_rng(0)
    n = 12
    upper = np.triu(rng.random((n, n)) < 0.3, 1)
    dense = np.where(upper, rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)), 0)
    dense = dense + dense.conj().T
    diag = rng.random(n) + 3.0
    row, col = np.nonzero(dense)
    built = hermitian_csc(row, col, dense[row, col], diag).toarray()
    np.testing.assert_array_equal(built, dense + np.diag(diag))


def test_too_few_nodes_for_the_wanted_count() -> None:
    lap = magnetic_laplacian(random_graph(20, 0.2, 0, directed=True), 20).numpy()
    assert _solve(lap, 9) is None
    assert _solve(lap, 0) is None


@pytest.mark.parametrize("symmetrize", ["union", "mean"])
@pytest.mark.parametrize("seed", range(4))
def test_edge_list_adjacency_equals_the_dense_one_bit_for_bit(symmetrize, seed) -> None:
    from multipos.graph.medium import _adjacency
    from multipos.graph.union import symmetrized_dense

    rng = np.random.default_rng(seed)
    n = 110
    edges = random_graph(n, 0.03, seed, directed=True).numpy()
    extra = rng.integers(0, n, (2, 30))  # self-loops and duplicates among them
    row, col = np.concatenate([edges, extra, edges[:, :15]], axis=1)
    weight = rng.random(row.size) if seed % 2 else np.ones(row.size)
    a = np.bincount(row * n + col, weights=weight, minlength=n * n).reshape(n, n)
    a.flat[:: n + 1] = 0.0
    a_sym = symmetrized_dense(a, symmetrize)
    r, c = np.nonzero(a_sym)
    got = _adjacency(row, col, weight, n, symmetrize)
    for mine, ref in zip(got, (r, c, a_sym[r, c], a[r, c], a[c, r]), strict=True):
        np.testing.assert_array_equal(mine, ref)
