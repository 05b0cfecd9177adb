from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from multipos.graph import batched_laplacian_pe, laplacian, laplacian_pe
from tests.graph._graphs import graph_params, permute, random_graph, simple_and_untied


@given(graph_params, st.integers(0, 1000), st.sampled_from(["sym", "none"]))
def test_permutation_equivariance(params, pseed, normalization) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed)
    a = laplacian_pe(ei, n, k=4, normalization=normalization)
    # eigenvalues of the whole spectrum must be simple near the kept ones too
    full = torch.linalg.eigvalsh(laplacian(ei, n, normalization=normalization))
    assume(bool((full[1:] - full[:-1]).min() > 1e-6))
    assume(simple_and_untied(a.values, a.vectors, a.mask))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(pseed))
    b = laplacian_pe(permute(ei, perm), n, k=4, normalization=normalization)
    torch.testing.assert_close(b.vectors[perm], a.vectors, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.values, a.values)


@given(graph_params)
def test_orthonormal_and_eigen_equation(params) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed)
    r = laplacian_pe(ei, n, k=6)
    u = r.vectors[:, r.mask].double()
    torch.testing.assert_close(
        u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-5, rtol=0
    )
    lap = laplacian(ei, n)
    resid = lap @ u - u * r.values[r.mask].double()
    assert resid.abs().max() < 1e-5
    assert (r.values[r.mask] > 1e-9).all() and (r.values <= 2 + 1e-6).all()
    assert (r.values[r.mask][1:] >= r.values[r.mask][:-1]).all()


def test_snapshot_path() -> None:
    # Normalised Laplacian of the path P4: eigenvalues 1 - cos(pi j / 3) = 0, 0.5, 1.5, 2.
    ei = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    r = laplacian_pe(ei, 4, k=3)
    torch.testing.assert_close(r.values, torch.tensor([0.5, 1.5, 2.0]))
    torch.testing.assert_close(
        r.vectors[:, 0],
        torch.tensor([0.5773503, 0.4082483, -0.4082483, -0.5773503]),
        atol=1e-6,
        rtol=0,
    )
    keep = laplacian_pe(ei, 4, k=2, trivial="keep")
    d = torch.tensor([1.0, 2, 2, 1]).sqrt()
    torch.testing.assert_close(keep.vectors[:, 0], d / d.norm())
    assert keep.values[0] == 0


def test_deterministic_across_calls() -> None:
    ei = random_graph(30, 0.2, 1)
    a = laplacian_pe(ei, 30, k=8)
    b = laplacian_pe(ei, 30, k=8)
    assert torch.equal(a.vectors, b.vectors) and torch.equal(a.values, b.values)


_SCRIPT = """
import hashlib
import torch
from multipos.graph import laplacian_pe, magnetic_laplacian_pe
from tests.graph._graphs import random_graph
ei = random_graph(300, 0.02, 3)
out = []
for solver in ("dense", "arpack", "lobpcg"):
    r = laplacian_pe(ei, 300, k=6, solver=solver)
    out.append(hashlib.sha256(r.vectors.numpy().tobytes()).hexdigest()[:16])
m = magnetic_laplacian_pe(random_graph(200, 0.03, 4, directed=True), 200, k=4, solver="arpack")
out.append(hashlib.sha256(m.real.numpy().tobytes() + m.imag.numpy().tobytes()).hexdigest()[:16])
print(" ".join(out))
"""


def test_deterministic_across_processes(capsys) -> None:
    other = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    ).stdout.strip()
    exec(_SCRIPT, {})
    here = capsys.readouterr().out.strip()
    assert other == here and len(here.split()) == 4


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_sparse_solvers_match_dense(solver) -> None:
    ei = random_graph(250, 0.03, 7)
    dense = laplacian_pe(ei, 250, k=5, solver="dense")
    sparse = laplacian_pe(ei, 250, k=5, solver=solver, tol=1e-10)
    assert simple_and_untied(dense.values, dense.vectors, dense.mask)
    torch.testing.assert_close(sparse.values, dense.values, atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse.vectors, dense.vectors, atol=1e-4, rtol=0)


def _two_cycles_and_isolated() -> tuple[torch.Tensor, int]:
    c = torch.arange(5)
    ring = torch.stack([c, (c + 1) % 5])
    ring = torch.cat([ring, ring.flip(0)], dim=1)
    return torch.cat([ring, ring + 5], dim=1), 11  # node 10 is isolated


@pytest.mark.parametrize("solver", ["dense", "arpack", "lobpcg"])
def test_disconnected_drops_every_component_vector(solver) -> None:
    ei, n = _two_cycles_and_isolated()
    r = laplacian_pe(ei, n, k=3, solver=solver)
    assert r.mask.all()
    assert (r.values > 0.1).all()  # no null-space vector kept
    assert (r.vectors[10] == 0).all()  # isolated node: zero row
    indicators = torch.zeros(n, 2)
    indicators[:5, 0] = 1
    indicators[5:10, 1] = 1
    assert (indicators.T @ r.vectors).abs().max() < 1e-5  # no component indicator leaks


def test_keep_gives_canonical_component_vectors() -> None:
    ei, n = _two_cycles_and_isolated()
    r = laplacian_pe(ei, n, k=3, trivial="keep")
    expected = torch.zeros(n, 2)
    expected[:5, 0] = 5**-0.5
    expected[5:10, 1] = 5**-0.5
    torch.testing.assert_close(r.vectors[:, :2], expected)
    assert (r.values[:2] == 0).all()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5])
def test_small_graphs_are_padded(n) -> None:
    ei = torch.stack([torch.arange(max(n - 1, 0)), torch.arange(1, max(n, 1))])[:, : max(n - 1, 0)]
    r = laplacian_pe(ei, n, k=8)
    assert r.vectors.shape == (n, 8) and r.values.shape == (8,) and r.mask.shape == (8,)
    assert int(r.mask.sum()) == max(n - 1, 0)
    assert (r.vectors[:, ~r.mask] == 0).all() and (r.values[~r.mask] == 0).all()


def test_no_edges_and_empty() -> None:
    r = laplacian_pe(torch.zeros(2, 0, dtype=torch.long), 4, k=3)
    assert not r.mask.any() and (r.vectors == 0).all()
    r = laplacian_pe(torch.zeros(2, 0, dtype=torch.long), k=3)
    assert r.vectors.shape == (0, 3)


def test_self_loops_and_multi_edges() -> None:
    ei = random_graph(12, 0.3, 5)
    base = laplacian_pe(ei, 12, k=4)
    loops = torch.stack([torch.arange(12), torch.arange(12)])
    with_loops = laplacian_pe(torch.cat([ei, loops], dim=1), 12, k=4)
    torch.testing.assert_close(with_loops.vectors, base.vectors)
    doubled = laplacian_pe(torch.cat([ei, ei], dim=1), 12, k=4, normalization="none")
    weighted = laplacian_pe(
        ei, 12, k=4, normalization="none", edge_weight=torch.full((ei.shape[1],), 2.0)
    )
    torch.testing.assert_close(doubled.vectors, weighted.vectors)
    torch.testing.assert_close(doubled.values, weighted.values)


def test_directed_input() -> None:
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="symmetrize='union' or 'mean'"):
        laplacian_pe(ei, 4, symmetrize="none")
    union = laplacian_pe(ei, 4, k=3)
    undirected = laplacian_pe(torch.cat([ei, ei.flip(0)], dim=1), 4, k=3, symmetrize="none")
    torch.testing.assert_close(union.vectors, undirected.vectors)
    # the reversed path gives the same PE (orientation-independent)
    torch.testing.assert_close(laplacian_pe(ei.flip(0), 4, k=3).vectors, union.vectors)
    # the same on a graph above 96 nodes (each graph built alone from its edges)
    path = torch.stack([torch.arange(149), torch.arange(1, 150)])
    with pytest.raises(ValueError, match="symmetrize='union' or 'mean'"):
        laplacian_pe(path, 150, symmetrize="none")
    both = laplacian_pe(torch.cat([path, path.flip(0)], dim=1), 150, k=3, symmetrize="none")
    torch.testing.assert_close(laplacian_pe(path, 150, k=3).vectors, both.vectors)
    with pytest.raises(ValueError, match="overflow"):
        laplacian_pe(path, 150, edge_weight=torch.full((149,), 1e308, dtype=torch.float64))


def test_batched_matches_single() -> None:
    graphs = [(random_graph(n, 0.2, n), n) for n in (3, 20, 20, 31, 40, 120)]
    graphs.append((torch.zeros(2, 0, dtype=torch.long), 0))
    many = batched_laplacian_pe(graphs, 5)
    for (ei, n), r in zip(graphs, many, strict=True):
        one = laplacian_pe(ei, n, k=5)
        torch.testing.assert_close(r.vectors, one.vectors, atol=1e-6, rtol=0)
        assert torch.equal(r.mask, one.mask)


def test_batched_result_does_not_depend_on_thread_count() -> None:
    graphs = [(random_graph(n, 0.2, n), n) for n in range(10, 40, 3)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = batched_laplacian_pe(graphs, 4)
        torch.set_num_threads(2)
        spread = batched_laplacian_pe(graphs, 4)
        assert torch.get_num_threads() == 2, "the thread setting is restored"
    finally:
        torch.set_num_threads(before)
    for a, b in zip(serial, spread, strict=True):
        assert torch.equal(a.vectors, b.vectors) and torch.equal(a.values, b.values)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must"),
        ({"k": 2.0}, TypeError, "k must"),
        ({"normalization": "rw"}, ValueError, "'sym', 'none'"),
        ({"symmetrize": "max"}, ValueError, "'union', 'mean', 'none'"),
        ({"trivial": "skip"}, ValueError, "'drop', 'keep'"),
        ({"solver": "eigs"}, ValueError, "'auto', 'dense', 'arpack', 'lobpcg'"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"edge_weight": torch.ones(3)}, ValueError, r"\(E,\)"),
        ({"edge_weight": -torch.ones(2)}, ValueError, "non-negative"),
        ({"num_nodes": 2}, ValueError, "num_nodes=2"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(error, match=match):
        laplacian_pe(ei, **kwargs)


def test_bad_edge_index() -> None:
    with pytest.raises(TypeError, match="integer"):
        laplacian_pe(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        laplacian_pe(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        laplacian_pe([[0, 1], [1, 0]])  # type: ignore[arg-type]


def test_lobpcg_that_stops_at_maxiter_raises(monkeypatch) -> None:
    from multipos.graph import eigensolvers

    monkeypatch.setattr(eigensolvers, "LOBPCG_MAXITER", 2)
    ei = random_graph(250, 0.03, 7)
    with pytest.raises(RuntimeError, match="did not reach tol"):
        laplacian_pe(ei, 250, k=5, solver="lobpcg", tol=1e-12)
    monkeypatch.undo()
    assert laplacian_pe(ei, 250, k=5, solver="lobpcg", tol=1e-10).mask.all()
