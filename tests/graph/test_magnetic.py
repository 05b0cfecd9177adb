from __future__ import annotations

import math

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from multipos.graph import (
    batched_magnetic_laplacian_pe,
    laplacian,
    laplacian_pe,
    magnetic_laplacian,
    magnetic_laplacian_pe,
)
from tests.graph._graphs import graph_params, permute, random_graph, reverse, simple_and_untied


def _complex(r) -> torch.Tensor:
    return torch.complex(r.real.double(), r.imag.double())


@given(
    graph_params,
    st.floats(0.0, 0.5),
    st.sampled_from(["union", "mean"]),
    st.sampled_from(["absolute", "relative"]),
    st.booleans(),
)
def test_hermitian_spectrum_in_0_2(params, q, symmetrize, q_mode, weighted) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed, directed=True)
    w = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(seed)) if weighted else None
    lap = magnetic_laplacian(ei, n, q=q, q_mode=q_mode, symmetrize=symmetrize, edge_weight=w)
    torch.testing.assert_close(lap, lap.mH)
    ev = torch.linalg.eigvalsh(lap)
    assert ev.min() > -1e-10 and ev.max() < 2 + 1e-10


def test_q_zero_operator_is_laplacian() -> None:
    ei = random_graph(15, 0.2, 3, directed=True)
    for sym in ("union", "mean"):
        mag = magnetic_laplacian(ei, 15, q=0.0, symmetrize=sym)
        torch.testing.assert_close(mag.real, laplacian(ei, 15, symmetrize=sym))
        assert (mag.imag == 0).all()


@pytest.mark.parametrize("trivial", ["drop", "keep"])
@pytest.mark.parametrize("normalization", ["sym", "none"])
def test_q_zero_equals_laplacian_pe(trivial, normalization) -> None:
    ei = random_graph(20, 0.15, 11, directed=True)
    lap = laplacian_pe(ei, 20, k=5, trivial=trivial, normalization=normalization)
    mag = magnetic_laplacian_pe(ei, 20, k=5, q=0.0, trivial=trivial, normalization=normalization)
    assert torch.equal(mag.real, lap.vectors) and (mag.imag == 0).all()
    assert torch.equal(mag.values, lap.values)
    # the complex path is continuous at q -> 0 (same sign/phase convention)
    tiny = magnetic_laplacian_pe(
        ei, 20, k=5, q=1e-9, q_mode="absolute", trivial=trivial, normalization=normalization
    )
    first = 1 if trivial == "keep" else 0  # the kept null vector is constant: all ties, one sign
    assert simple_and_untied(lap.values[first:], lap.vectors[:, first:], lap.mask[first:])
    torch.testing.assert_close(tiny.real, lap.vectors, atol=1e-5, rtol=0)
    assert tiny.imag.abs().max() < 1e-5


@given(graph_params, st.sampled_from(["union", "mean"]))
def test_reversal_conjugates(params, symmetrize) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed, directed=True)
    a = magnetic_laplacian_pe(ei, n, k=4, symmetrize=symmetrize)
    b = magnetic_laplacian_pe(reverse(ei), n, k=4, symmetrize=symmetrize)
    assume(simple_and_untied(a.values, _complex(a), a.mask))
    torch.testing.assert_close(b.real, a.real, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.imag, -a.imag, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.values, a.values)


@given(graph_params, st.integers(0, 1000))
def test_permutation_equivariance(params, pseed) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed, directed=True)
    a = magnetic_laplacian_pe(ei, n, k=4)
    full = torch.linalg.eigvalsh(magnetic_laplacian(ei, n))
    assume(bool((full[1:] - full[:-1]).min() > 1e-6))
    assume(simple_and_untied(a.values, _complex(a), a.mask))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(pseed))
    b = magnetic_laplacian_pe(permute(ei, perm), n, k=4)
    torch.testing.assert_close(b.real[perm], a.real, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.imag[perm], a.imag, atol=1e-5, rtol=0)


@given(graph_params)
@example((17, 0.375, 255))  # two entries tie to within float32 rounding
def test_unitary_and_eigen_equation(params) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed, directed=True)
    r = magnetic_laplacian_pe(ei, n, k=5, q=[0.1, 0.25])
    for i, q in enumerate([0.1, 0.25]):
        u = torch.complex(r.real[:, i], r.imag[:, i]).to(torch.complex128)[:, r.mask[i]]
        eye = torch.eye(u.shape[1], dtype=torch.complex128)
        torch.testing.assert_close(u.mH @ u, eye, atol=1e-5, rtol=0)
        lap = magnetic_laplacian(ei, n, q=q)
        resid = lap @ u - u * r.values[i, r.mask[i]].double()
        assert resid.abs().max() < 1e-5
        # phase convention: the largest-magnitude entry is real and positive. The library
        # picks it in float64 (ties within 1e-8); after the float32 output, entries within
        # 1e-6 of the maximum are indistinguishable, so one of those must be the anchor.
        mag = u.abs()
        near_max = mag >= mag.amax(dim=0) - 1e-6
        anchored = (u.imag.abs() < 1e-6) & (u.real > 0) & near_max
        assert anchored.any(dim=0).all()


def test_snapshot_directed_edge() -> None:
    # 0 -> 1, q = 1/4 absolute: L = [[1, -i], [i, 1]], eigenvalues 0 and 2.
    ei = torch.tensor([[0], [1]])
    r = magnetic_laplacian_pe(ei, 2, k=2, q=0.25, q_mode="absolute")
    torch.testing.assert_close(r.values, torch.tensor([0.0, 2.0]), atol=1e-7, rtol=0)
    s = 2**-0.5
    torch.testing.assert_close(r.real[:, 0], torch.tensor([s, 0.0]), atol=1e-7, rtol=0)
    torch.testing.assert_close(r.imag[:, 0], torch.tensor([0.0, -s]), atol=1e-7, rtol=0)
    lap = magnetic_laplacian(ei, 2, q=0.25, q_mode="absolute")
    torch.testing.assert_close(lap, torch.tensor([[1, -1j], [1j, 1]], dtype=torch.complex128))


def test_relative_q_and_symmetrize_conventions() -> None:
    # path 0 -> 1 -> 2 plus the reciprocal pair 2 <-> 3: two one-way pairs, N = 4
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 2]])
    rel = magnetic_laplacian(ei, 4, q=0.5, q_mode="relative", normalization="none")
    assert math.isclose(torch.angle(-rel[0, 1]).item(), 2 * math.pi * 0.25, abs_tol=1e-12)
    union = magnetic_laplacian(ei, 4, q=0.1, q_mode="absolute", normalization="none")
    mean = magnetic_laplacian(
        ei, 4, q=0.1, q_mode="absolute", normalization="none", symmetrize="mean"
    )
    assert math.isclose(abs(union[0, 1]).item(), 1.0) and math.isclose(abs(mean[0, 1]).item(), 0.5)
    assert union[2, 3] == -1 and mean[2, 3] == -1  # reciprocal pairs: weight 1, no phase
    torch.testing.assert_close(
        union.diagonal().real, torch.tensor([1.0, 2, 2, 1], dtype=torch.float64)
    )


def test_awkward_graphs() -> None:
    empty = magnetic_laplacian_pe(torch.zeros(2, 0, dtype=torch.long), 0, k=3)
    assert empty.real.shape == (0, 3) and not empty.mask.any()
    small = magnetic_laplacian_pe(torch.tensor([[0, 1], [1, 2]]), 4, k=6)  # node 3 isolated
    assert int(small.mask.sum()) == 3 and (small.real[3] == 0).all() and (small.imag[3] == 0).all()
    ei = random_graph(10, 0.3, 2, directed=True)
    loops = torch.stack([torch.arange(10), torch.arange(10)])
    a = magnetic_laplacian_pe(ei, 10, k=3)
    b = magnetic_laplacian_pe(torch.cat([ei, loops], dim=1), 10, k=3)
    torch.testing.assert_close(a.real, b.real)
    two = torch.cat([ei, ei + 10], dim=1)
    d = magnetic_laplacian_pe(two, 20, k=3, trivial="drop")
    assert d.mask.all() and torch.isfinite(d.real).all()


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_sparse_solvers_match_dense(solver) -> None:
    ei = random_graph(200, 0.03, 13, directed=True)
    dense = magnetic_laplacian_pe(ei, 200, k=4, solver="dense")
    assert simple_and_untied(dense.values, _complex(dense), dense.mask)
    sparse = magnetic_laplacian_pe(ei, 200, k=4, solver=solver, tol=1e-10)
    torch.testing.assert_close(sparse.values, dense.values, atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse.real, dense.real, atol=1e-4, rtol=0)
    torch.testing.assert_close(sparse.imag, dense.imag, atol=1e-4, rtol=0)


def test_batched_matches_single() -> None:
    graphs = [(random_graph(n, 0.2, n, directed=True), n) for n in (4, 25, 25, 30, 110)]
    many = batched_magnetic_laplacian_pe(graphs, 4, q=[0.0, 0.2])
    for (ei, n), r in zip(graphs, many, strict=True):
        one = magnetic_laplacian_pe(ei, n, k=4, q=[0.0, 0.2])
        torch.testing.assert_close(r.real, one.real, atol=1e-6, rtol=0)
        torch.testing.assert_close(r.imag, one.imag, atol=1e-6, rtol=0)
        torch.testing.assert_close(r.values, one.values, atol=1e-6, rtol=0)
        assert torch.equal(r.mask, one.mask)
        assert r.real.shape == (n, 2, 4) and r.values.shape == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"q": -0.1}, ValueError, "q must"),
        ({"q": "0.1"}, TypeError, "q must"),
        ({"q": []}, ValueError, "non-empty"),
        ({"q_mode": "rel"}, ValueError, "'absolute', 'relative'"),
        ({"symmetrize": "none"}, ValueError, "'union', 'mean'"),
        ({"k": -1}, ValueError, "k must"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        magnetic_laplacian_pe(torch.tensor([[0, 1], [1, 2]]), **kwargs)
