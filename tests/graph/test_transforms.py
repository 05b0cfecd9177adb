from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from multipos.graph import (
    AddDirectionalRandomWalkPE,
    AddLaplacianPE,
    AddMagneticLaplacianPE,
    directional_random_walk_pe,
    laplacian_pe,
    pairwise_to_dense,
)
from tests.graph._graphs import random_graph


def _dataset() -> list[Data]:
    out = [
        Data(edge_index=random_graph(n, 0.3, n, directed=True), num_nodes=n) for n in (2, 6, 9, 14)
    ]
    out.append(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=3))
    return out


def test_compose_and_dataloader() -> None:
    transform = T.Compose(
        [
            AddLaplacianPE(k=4),
            AddMagneticLaplacianPE(k=4, q=[0.1, 0.25]),
            AddDirectionalRandomWalkPE(3, ppr_alpha=0.1),
            AddDirectionalRandomWalkPE(2, form="pairwise", attr_prefix="rw"),
        ]
    )
    data = [transform(d) for d in _dataset()]
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    n = sum(d.num_nodes for d in data)
    assert batch.laplacian_pe.shape == (n, 4) and batch.laplacian_mask.dtype == torch.bool
    assert batch.laplacian_eigenvalues.shape == (n, 4)
    assert batch.magnetic_pe_real.shape == (n, 2, 4) and batch.magnetic_eigenvalues.shape == (
        n,
        2,
        4,
    )
    assert batch.directional_walk_pe.shape == (n, 8)
    dense = pairwise_to_dense(batch.rw_pair_index, batch.rw_pair_attr, batch.batch)
    assert dense.shape == (len(data), 14, 14, 4)
    # the pairwise features survive batching: graph 3 (14 nodes) unchanged
    torch.testing.assert_close(
        dense[3],
        pairwise_to_dense(data[3].rw_pair_index, data[3].rw_pair_attr, max_num_nodes=14)[0],
    )
    # and they are the pairwise random-walk features of the graph, (u, v) not transposed
    torch.testing.assert_close(
        dense[3], directional_random_walk_pe(data[3].edge_index, 14, 2, form="pairwise")
    )
    first = data[1]
    ref = laplacian_pe(first.edge_index, first.num_nodes, k=4)
    assert torch.equal(first.laplacian_pe, ref.vectors)
    assert (first.laplacian_eigenvalues == ref.values).all()


def test_transform_is_deterministic_and_does_not_mutate() -> None:
    d = _dataset()[3]
    t = AddLaplacianPE(k=3)
    a, b = t(d), t(d)
    assert torch.equal(a.laplacian_pe, b.laplacian_pe)
    assert "laplacian_pe" not in d


def test_apply_many_matches_per_graph() -> None:
    data = _dataset()
    for t in (AddLaplacianPE(k=5), AddMagneticLaplacianPE(k=5)):
        many = t.apply_many(data)
        for d, m in zip(data, many, strict=True):
            one = t(d)
            for key in one.keys():  # noqa: SIM118 (iterating a Data yields pairs)
                torch.testing.assert_close(m[key], one[key], atol=1e-6, rtol=0)


def test_edge_weights_are_used() -> None:
    d = _dataset()[3]
    w = torch.rand(d.edge_index.shape[1], generator=torch.Generator().manual_seed(0)) + 0.1
    weighted = AddLaplacianPE(k=3)(Data(edge_index=d.edge_index, num_nodes=14, edge_weight=w))
    ignored = AddLaplacianPE(k=3, weight_attr=None)(
        Data(edge_index=d.edge_index, num_nodes=14, edge_weight=w)
    )
    assert not torch.allclose(weighted.laplacian_pe, ignored.laplacian_pe)
    torch.testing.assert_close(ignored.laplacian_pe, AddLaplacianPE(k=3)(d).laplacian_pe)


def test_repr_lists_every_option() -> None:
    r = repr(AddMagneticLaplacianPE(k=6, q=[0.1, 0.2], symmetrize="mean"))
    for part in (
        "k=6",
        "q=(0.1, 0.2)",
        "q_mode='relative'",
        "symmetrize='mean'",
        "trivial='keep'",
        "solver='auto'",
        "tol=",
        "normalization='sym'",
        "weight_attr=",
        "attr_prefix=",
    ):
        assert part in r
    assert "solver='auto'" in repr(AddLaplacianPE())
    assert "form='node'" in repr(AddDirectionalRandomWalkPE())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="'drop', 'keep'"):
        AddLaplacianPE(trivial="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attr_prefix"):
        AddLaplacianPE(attr_prefix="bad name")
    with pytest.raises(ValueError, match="'node', 'pairwise'"):
        AddDirectionalRandomWalkPE(form="edges")
    with pytest.raises(TypeError, match="Data"):
        AddLaplacianPE()(torch.zeros(3))  # type: ignore[arg-type]


def test_apply_many_of_nothing_is_nothing() -> None:
    assert AddLaplacianPE().apply_many([]) == []
    assert AddMagneticLaplacianPE().apply_many([]) == []


@pytest.mark.parametrize("symmetrize", ["union", "mean", "none"])
def test_overflowing_weight_sums_raise(symmetrize) -> None:
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    w = torch.full((4,), 1e308, dtype=torch.float64)  # finite, but degrees overflow
    data = Data(edge_index=ei, num_nodes=3, edge_weight=w)
    with pytest.raises(ValueError, match="overflow"):
        AddLaplacianPE(k=2, symmetrize=symmetrize)(data)
    with pytest.raises(ValueError, match="overflow"):
        laplacian_pe(ei, 3, k=2, edge_weight=w, symmetrize=symmetrize, solver="arpack")
    with pytest.raises(ValueError, match="overflow"):
        AddLaplacianPE(k=2, symmetrize=symmetrize).apply_many([data, data])
    with pytest.raises(ValueError, match="overflow"):
        AddDirectionalRandomWalkPE(2)(data)


def test_a_missing_weight_attribute_raises() -> None:
    d = _dataset()[3]
    with pytest.raises(ValueError, match="weight_attr='w'"):
        AddLaplacianPE(k=3, weight_attr="w")(d)
    with pytest.raises(ValueError, match="weight_attr='w'"):
        AddMagneticLaplacianPE(k=3, weight_attr="w").apply_many([d])
    with pytest.raises(ValueError, match="weight_attr='w'"):
        AddDirectionalRandomWalkPE(2, weight_attr="w")(d)
    # the default name is read when present, like PyG's transforms, and is optional
    assert AddLaplacianPE(k=3)(d).laplacian_pe.shape == (14, 3)
    w = torch.rand(d.edge_index.shape[1], generator=torch.Generator().manual_seed(1)) + 0.1
    named = AddLaplacianPE(k=3, weight_attr="w")(Data(edge_index=d.edge_index, num_nodes=14, w=w))
    default = AddLaplacianPE(k=3)(Data(edge_index=d.edge_index, num_nodes=14, edge_weight=w))
    assert torch.equal(named.laplacian_pe, default.laplacian_pe)


@pytest.mark.parametrize("prefix", ["node_index", "pe_batch", "indexed"])
def test_prefixes_pyg_collates_specially_are_refused(prefix) -> None:
    for t in (AddLaplacianPE, AddMagneticLaplacianPE, AddDirectionalRandomWalkPE):
        with pytest.raises(ValueError, match="DataLoader offsets"):
            t(attr_prefix=prefix)


def test_default_names_do_not_collide_with_pyg_transforms() -> None:
    import inspect

    pyg_names = {
        inspect.signature(cls).parameters["attr_name"].default
        for cls in (T.AddLaplacianEigenvectorPE, T.AddRandomWalkPE)
    }
    assert pyg_names == {"laplacian_eigenvector_pe", "random_walk_pe"}
    d = _dataset()[2]
    ours = T.Compose(
        [
            AddLaplacianPE(k=3),
            AddMagneticLaplacianPE(k=3),
            AddDirectionalRandomWalkPE(2),
            AddDirectionalRandomWalkPE(2, form="pairwise"),
        ]
    )(d)
    written = set(ours.keys()) - set(d.keys())
    assert len(written) == 10 and not written & pyg_names
    both = T.Compose([T.AddRandomWalkPE(2), AddDirectionalRandomWalkPE(2)])(d)
    assert both.random_walk_pe.shape == (9, 2) and both.directional_walk_pe.shape == (9, 4)
