from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

import multipos
from multipos.documents import (
    AddReadingOrderPE,
    ReadingOrderCodeEmbedding,
    code_sinusoids,
    reading_order,
    rope_codes,
    synthetic_form,
    word_graph,
)


def test_sinusoid_formula_snapshot() -> None:
    pe = code_sinusoids(torch.tensor([0, 1, -3]), 4, base=100.0)
    assert pe.dtype == torch.float32 and pe.shape == (3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    expected = [math.sin(1), math.cos(1), math.sin(0.1), math.cos(0.1)]
    torch.testing.assert_close(pe[1], torch.tensor(expected))
    torch.testing.assert_close(pe[2, 0], torch.tensor(-math.sin(3)))


def test_sinusoid_similarity_depends_only_on_the_code_difference() -> None:
    codes = torch.arange(-20, 21)
    pe = code_sinusoids(codes, 16).double()
    sim = pe @ pe.t()  # (41, 41)
    for d in (-5, 0, 3, 11):
        diag = torch.diagonal(sim, offset=d)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag))


def test_module_shapes_dtypes_and_registry() -> None:
    codes = torch.tensor([-2, -1, 1, 2])
    bare = ReadingOrderCodeEmbedding(8)
    assert bare(codes).shape == (4, 8) and not list(bare.parameters())
    proj = ReadingOrderCodeEmbedding(8, out_dim=5).to(torch.bfloat16)
    assert proj(codes).dtype == torch.bfloat16 and proj(codes).shape == (4, 5)
    assert multipos.get_scheme("reading_order_code_embedding").domain == "documents"
    made = multipos.create_scheme("reading_order_code_embedding", dim=6)
    assert isinstance(made, ReadingOrderCodeEmbedding) and made.dim == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 7}, ValueError, "dim must be even"),
        ({"dim": 0}, ValueError, "dim must be a positive int"),
        ({"dim": 8, "out_dim": 0}, ValueError, "out_dim must be a positive int"),
        ({"dim": 8, "base": 1.0}, ValueError, "base must be finite and > 1"),
        ({"dim": 8.0}, TypeError, "dim must be a positive int"),
    ],
)
def test_module_bad_options(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        ReadingOrderCodeEmbedding(**kwargs)


def test_module_bad_codes() -> None:
    with pytest.raises(ValueError, match=r"shape \(E,\)"):
        ReadingOrderCodeEmbedding(8)(torch.zeros(2, 2, dtype=torch.int64))


def _page(seed: int, **kw) -> Data:
    form = synthetic_form(torch.Generator().manual_seed(seed), **kw)
    return Data(box=form.boxes, y=form.labels, num_nodes=form.boxes.shape[0])


@pytest.mark.parametrize("strategy", ["given", "raster", "xycut"])
@pytest.mark.parametrize("graph", ["beta_skeleton", "knn"])
def test_transform_writes_graph_rank_and_codes(strategy: str, graph: str) -> None:
    data = AddReadingOrderPE(strategy, graph, k=4, convention="rank")(_page(0))
    assert torch.equal(data.edge_index, word_graph(data.box, graph, k=4))  # type: ignore[arg-type]
    assert torch.equal(data.reading_rank, reading_order(data.box, strategy))  # type: ignore[arg-type]
    assert torch.equal(data.rope_code, rope_codes(data.edge_index, data.reading_rank, "rank"))


def test_transform_composes_and_batches() -> None:
    transform = T.Compose([T.Constant(1.0), AddReadingOrderPE("xycut")])
    pages = [transform(_page(s, rows=r)) for s, r in [(0, 2), (1, 4), (2, 3)]]
    batch = next(iter(DataLoader(pages, batch_size=3)))
    assert torch.equal(batch.rope_code, torch.cat([p.rope_code for p in pages]))
    # PyG offsets the word graph: the batch's codes are those of the batched graph and ranks
    offsets = torch.cat([torch.full((p.num_nodes,), 1000 * i) for i, p in enumerate(pages)])
    assert torch.equal(rope_codes(batch.edge_index, batch.reading_rank + offsets), batch.rope_code)
    assert batch.x.shape == (batch.num_nodes, 1)


def test_edge_rewriting_transforms_after_it_would_mix_the_codes() -> None:
    # why the docstring says to rewrite edges before: ToUndirected adds c_ij and c_ji
    page = AddReadingOrderPE()(_page(0))
    after = T.ToUndirected()(page.clone())
    assert not torch.equal(after.rope_code, page.rope_code)


def test_transform_stored_rank_and_errors() -> None:
    page = _page(0)
    page.reading_rank = torch.arange(page.num_nodes).flip(0)
    out = AddReadingOrderPE("stored")(page.clone())
    assert torch.equal(out.rope_code, rope_codes(out.edge_index, page.reading_rank))
    with pytest.raises(ValueError, match=r"needs data\.reading_rank"):
        AddReadingOrderPE("stored")(_page(0))
    with pytest.raises(ValueError, match="no 'bbox' attribute"):
        AddReadingOrderPE(box_attr="bbox")(_page(0))
    with pytest.raises(ValueError, match="strategy must be one of"):
        AddReadingOrderPE("columns")
    with pytest.raises(ValueError, match="graph must be one of"):
        AddReadingOrderPE(graph="delaunay")
    with pytest.raises(TypeError, match="Data"):
        AddReadingOrderPE()({"box": torch.zeros(1, 4)})
    bad = _page(0)
    bad.box[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        AddReadingOrderPE()(bad)
    assert repr(AddReadingOrderPE()).startswith("AddReadingOrderPE(strategy='raster'")
