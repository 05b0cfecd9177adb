"""The per-graph path of ``AddLaplacianPE`` (a dataset's ``pre_transform``): unweighted graphs
of up to 96 nodes go straight from ``edge_index`` to the attributes and must give the bits of
the general path (``apply_many``, the batched solver) on every kind of graph it takes; the
graphs it leaves alone must reach the general path unchanged."""

from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import numpy as np
import torch
from torch_geometric.data import Data

import multipos.graph.transforms as transforms
from multipos.graph import AddLaplacianPE, AddMagneticLaplacianPE
from multipos.graph.small import unweighted_laplacian_pe, unweighted_magnetic_pe


def _er(n: int, p: float, seed: int, directed: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=g) < p  # isolated nodes and self-loops included
    if not directed:
        adj = torch.triu(adj) | torch.triu(adj).T
    return adj.nonzero().t().contiguous()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The per-graph path runs where torch has one thread (a dataset's pre_transform in a
    worker); with more, the general path holds the thread settings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = [
    *[(n, 4.0 / n, seed, seed % 2 == 1) for seed, n in enumerate((5, 12, 20, 31, 40, 64, 96))],
    (30, 0.01, 7, False),  # mostly isolated nodes
    (1, 1.0, 8, False),  # one node with a self-loop
    (9, 0.0, 9, False),  # no edge at all
]


def _check_equal(a: Data, b: Data, prefix: str = "laplacian") -> None:
    for suffix in ("pe", "eigenvalues", "mask"):
        x, y = a[f"{prefix}_{suffix}"], b[f"{prefix}_{suffix}"]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), suffix


@pytest.mark.parametrize("k", [1, 4, 8, 100])
@pytest.mark.parametrize(("n", "p", "seed", "directed"), CASES)
def test_same_bits_as_the_general_path(n, p, seed, directed, k) -> None:
    ei = _er(n, p, seed, directed)
    assert unweighted_laplacian_pe(ei.numpy(), n, k) is not None  # the fast path takes it
    t = AddLaplacianPE(k=k)
    single = t(Data(edge_index=ei, num_nodes=n))
    (batched,) = t.apply_many([Data(edge_index=ei, num_nodes=n)])
    _check_equal(single, batched)


def test_graphs_it_leaves_alone_reach_the_general_path(monkeypatch) -> None:
    calls = []
    real = transforms.unweighted_laplacian_pe

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(transforms, "unweighted_laplacian_pe", spy)
    t = AddLaplacianPE(k=4)
    ring = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    doubled = torch.cat([ring, ring[:, :1]], dim=1)  # a repeated edge: weight 2
    for ei, n in ((doubled, 4), (ring.int(), 4), (_er(120, 0.05, 1, False), 120)):
        single = t(Data(edge_index=ei, num_nodes=n))
        (batched,) = t.apply_many([Data(edge_index=ei, num_nodes=n)])
        _check_equal(single, batched)
    assert calls == [False, False, False]  # each declined: to the general path
    with pytest.raises(ValueError, match="edge_index"):
        t(Data(edge_index=torch.tensor([[0, 5], [1, 0]]), num_nodes=4))
    with pytest.raises(ValueError, match="edge_index"):
        t(Data(edge_index=torch.tensor([[0, -1], [1, 0]]), num_nodes=4))
    assert calls == [False] * 5  # bad ids: declined, then named by the general checks
    weights = torch.tensor([1.0, 2.0, 1.0, 1.0])
    weighted = t(Data(edge_index=ring, edge_weight=weights, num_nodes=4)).laplacian_pe
    assert len(calls) == 5  # weights never reach it
    assert not torch.equal(weighted, t(Data(edge_index=ring, num_nodes=4)).laplacian_pe)


def test_ids_out_of_range_are_left_to_the_checks() -> None:
    for bad in ([[0, 4], [1, 0]], [[0, -1], [1, 0]], [[0, 1], [-5, 0]]):
        assert unweighted_laplacian_pe(np.array(bad, dtype=np.int64), 4, 2) is None


@pytest.mark.parametrize("q_mode", ["relative", "absolute"])
@pytest.mark.parametrize("k", [1, 8, 100])
@pytest.mark.parametrize(("n", "p", "seed", "directed"), CASES)
def test_magnetic_same_bits_as_the_general_path(n, p, seed, directed, k, q_mode) -> None:
    ei = _er(n, p, seed, True)  # directed: one-way pairs carry the phase
    if seed % 3 == 0 and ei.shape[1]:
        ei = torch.cat([ei, ei[:, :3]], dim=1)  # repeated edges: weight 2
    assert unweighted_magnetic_pe(ei.numpy(), n, k, 0.25, q_mode == "relative") is not None
    t = AddMagneticLaplacianPE(k=k, q_mode=q_mode)
    single = t(Data(edge_index=ei, num_nodes=n))
    (batched,) = t.apply_many([Data(edge_index=ei, num_nodes=n)])
    for suffix in ("pe_real", "pe_imag", "eigenvalues", "mask"):
        x, y = single[f"magnetic_{suffix}"], batched[f"magnetic_{suffix}"]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), suffix
