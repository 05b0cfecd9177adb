"""The same graph gives the same bits wherever it is computed.

Cycles with an odd number of nodes have repeated eigenvalues, so any difference in rounding
(a matrix solved at another address, another thread count) picks another basis of the
eigenspace: these graphs expose a batch- or thread-dependent code path.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch_geometric.data import Data

from multipos.graph import (
    AddLaplacianPE,
    AddMagneticLaplacianPE,
    batched_laplacian_pe,
    batched_magnetic_laplacian_pe,
    directional_random_walk_pe,
    laplacian_pe,
    magnetic_laplacian_pe,
)
from tests.graph._graphs import random_graph

ODD_CYCLES = (9, 13, 15, 17, 21)


def _cycle(n: int, directed: bool = False) -> torch.Tensor:
    c = torch.arange(n)
    ring = torch.stack([c, (c + 1) % n])
    return ring if directed else torch.cat([ring, ring.flip(0)], dim=1)


def _batch(target: Data, copies: int = 8) -> list[Data]:
    """``copies`` of ``target`` at every position among other graphs, some of its size."""
    n = target.num_nodes
    others = [Data(edge_index=random_graph(n, 0.3, s, directed=True), num_nodes=n) for s in (1, 2)]
    others += [
        Data(edge_index=random_graph(m, 0.2, m, directed=True), num_nodes=m) for m in (7, 30)
    ]
    out: list[Data] = []
    for i in range(copies):
        out.append(target)
        out.append(others[i % len(others)])
    return out


def _graphs() -> list[Data]:
    graphs = [Data(edge_index=_cycle(n), num_nodes=n) for n in ODD_CYCLES]
    graphs += [Data(edge_index=_cycle(n, directed=True), num_nodes=n) for n in ODD_CYCLES]
    two = torch.cat([_cycle(9), _cycle(9) + 9], dim=1)
    graphs.append(Data(edge_index=two, num_nodes=19))  # two cycles and an isolated node
    graphs.append(Data(edge_index=_cycle(121), num_nodes=121))  # LAPACK's subset solver
    # Magnetic PE by shift-invert Lanczos (a simple spectrum), the real one by ?syevr.
    graphs.append(Data(edge_index=random_graph(130, 0.025, 9, directed=True), num_nodes=130))
    return graphs


TRANSFORMS = [
    AddLaplacianPE(k=6),
    AddLaplacianPE(k=6, trivial="keep", normalization="none"),
    AddLaplacianPE(k=6, symmetrize="mean"),
    AddMagneticLaplacianPE(k=6, q=[0.0, 0.1, 0.25]),
    AddMagneticLaplacianPE(k=6, q=0.2, q_mode="absolute", symmetrize="mean", trivial="drop"),
]


def _keys(data: Data) -> list[str]:
    return sorted(key for key in data.keys() if key not in ("edge_index", "num_nodes"))  # noqa: SIM118


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
def test_per_graph_apply_many_and_every_position_agree(transform) -> None:
    for graph in _graphs():
        one = transform(graph)
        batch = _batch(graph)
        many = transform.apply_many(batch)
        for position in range(0, len(batch), 2):
            for key in _keys(one):
                assert torch.equal(many[position][key], one[key]), (graph.num_nodes, key)


def test_batched_functions_equal_the_single_graph_functions() -> None:
    for graph in _graphs():
        n, ei = graph.num_nodes, graph.edge_index
        batch = [(g.edge_index, g.num_nodes) for g in _batch(graph)]
        lap = laplacian_pe(ei, n, k=5)
        mag = magnetic_laplacian_pe(ei, n, k=5, q=[0.0, 0.25])
        for position, (r, m) in enumerate(
            zip(
                batched_laplacian_pe(batch, 5),
                batched_magnetic_laplacian_pe(batch, 5, q=[0.0, 0.25]),
                strict=True,
            )
        ):
            if position % 2:
                continue
            assert torch.equal(r.vectors, lap.vectors) and torch.equal(r.values, lap.values)
            assert torch.equal(m.real, mag.real) and torch.equal(m.imag, mag.imag)
            assert torch.equal(m.values, mag.values) and torch.equal(m.mask, mag.mask)


def _everything() -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    graphs = _graphs()
    for t in TRANSFORMS:
        for data in t.apply_many(graphs) + [t(g) for g in graphs]:
            out += [data[key] for key in _keys(data)]
    big = random_graph(300, 0.02, 3)
    out.append(laplacian_pe(big, 300, k=6, solver="arpack").vectors)
    directed = random_graph(200, 0.03, 4, directed=True)
    m = magnetic_laplacian_pe(directed, 200, k=4, solver="arpack")
    out += [m.real, m.imag]
    out.append(directional_random_walk_pe(directed, 200, 3, ppr_alpha=0.1, form="pairwise"))
    return out


def test_same_bits_with_one_or_two_torch_and_blas_threads() -> None:
    before = torch.get_num_threads()
    results = {}
    try:
        for torch_threads in (1, 2):
            for blas_threads in (1, 2):
                torch.set_num_threads(torch_threads)
                with threadpool_limits(blas_threads, user_api="blas"):
                    results[(torch_threads, blas_threads)] = _everything()
                assert torch.get_num_threads() == torch_threads, "thread settings are restored"
    finally:
        torch.set_num_threads(before)
    reference = results.pop((1, 1))
    for setting, tensors in results.items():
        assert len(tensors) == len(reference)
        for a, b in zip(reference, tensors, strict=True):
            assert torch.equal(a, b), setting


@pytest.mark.parametrize("seed", range(6))
def test_component_count_from_the_spectrum_is_exact(seed) -> None:
    # Up to 96 nodes the per-graph path reads the number of components of a 0/1 graph from
    # its zero eigenvalues; the batched path counts them by reachability. Sparse random
    # graphs with several components, isolated nodes and long paths (small lambda_2).
    g = torch.Generator().manual_seed(seed)
    n = 40 + 10 * seed
    parts, start = [], 0
    for size in (n // 2, n // 3, 2, 1):
        line = torch.arange(start, start + size - 1)
        parts.append(torch.stack([line, line + 1]))
        start += size
    extra = torch.randint(0, n // 2, (2, 3), generator=g)  # chords inside the long path
    ei = torch.cat([*parts, extra], dim=1)
    graphs = [Data(edge_index=torch.cat([ei, ei.flip(0)], dim=1), num_nodes=n)]
    for transform in (AddLaplacianPE(k=8), AddLaplacianPE(k=8, normalization="none")):
        one = transform(graphs[0].clone())
        many = transform.apply_many(graphs + _batch(graphs[0], copies=1))
        for key in _keys(one):
            assert torch.equal(many[0][key], one[key]), key
        assert int(one.laplacian_mask[0].sum()) == min(8, n - 3 - 1)  # 3 components, 1 isolated


@pytest.mark.parametrize("n", [9, 21, 40, 96])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_small_graph_solver_gives_the_same_bits_at_any_memory_offset(n, dtype) -> None:
    # Graphs of up to 96 nodes are solved by numpy.linalg.eigh (LAPACK ?syevd; ?heevd for a
    # complex one without the compiled module, which has its own solver, tested in
    # test_hermitian_solver.py) on the per-graph path without holding BLAS threads: the
    # result must not depend on where the matrix lies in memory (MKL's batched solver once
    # did) nor on the thread count.
    ring = np.arange(n)
    lap = np.eye(n, dtype=dtype)
    phase = np.exp(0.3j) if dtype == np.complex128 else 1.0
    lap[ring, (ring + 1) % n] = -0.5 * phase  # an odd or even cycle: repeated eigenvalues
    lap[(ring + 1) % n, ring] = -0.5 * np.conj(phase)
    with threadpool_limits(1, user_api="blas"):
        ref_vals, ref_vecs = np.linalg.eigh(lap)
    for offset in range(8):
        buf = np.zeros(n * n + 8, dtype=dtype)
        moved = buf[offset : offset + n * n].reshape(n, n)
        moved[:] = lap
        for threads in (1, 2):
            with threadpool_limits(threads, user_api="blas"):
                vals, vecs = np.linalg.eigh(moved)
            assert np.array_equal(vals, ref_vals) and np.array_equal(vecs, ref_vecs)
