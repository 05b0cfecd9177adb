"""``benchmarks/funsd_word_labeling.py``: its message layer is the concatenated form it states,
its model runs on a synthetic form, and it skips cleanly without the data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("torch_geometric")
pytest.importorskip("scipy")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "funsd_word_labeling.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("funsd_word_labeling", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_message_equals_the_linear_map_of_the_concatenation(bench: ModuleType) -> None:
    """ReLU(W_s h_j + W_t h_i + W_e e + b) is ReLU(W [h_j, h_i, e] + b) with W = [W_s W_t W_e]."""
    g = torch.Generator().manual_seed(0)
    hidden, edge_dim, n = 6, 3, 5
    conv = bench.EdgeConv(hidden, edge_dim).double()
    h = torch.randn(n, hidden, generator=g, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    e = torch.randn(edge_index.shape[1], edge_dim, generator=g, dtype=torch.float64)
    degree = torch.bincount(edge_index[1], minlength=n).clamp(min=1).unsqueeze(1)
    out = conv(h, edge_index, e, degree)

    w = torch.cat([conv.src.weight, conv.dst.weight, conv.edge.weight], dim=1)
    src, dst = edge_index
    msg = torch.relu(torch.cat([h[src], h[dst], e], dim=1) @ w.T + conv.edge.bias)
    agg = torch.zeros_like(h)
    for k in range(edge_index.shape[1]):
        agg[dst[k]] += msg[k] / degree[dst[k], 0]
    ref = conv.norm(h + torch.relu(conv.upd(torch.cat([h, agg], dim=1))))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("rope", [False, True])
def test_model_trains_one_step_on_a_synthetic_form(bench: ModuleType, rope: bool) -> None:
    from torch_geometric.data import Batch, Data

    from multipos.documents import rope_codes, word_graph

    g = torch.Generator().manual_seed(1)
    n = 12
    x0 = torch.rand(n, generator=g) * 500
    y0 = torch.arange(n, dtype=torch.float32) * 20
    box = torch.stack([x0, y0, x0 + 40, y0 + 10], dim=1)
    edge_index = word_graph(box)
    page = Data(x=torch.randn(n, 8, generator=g), y=torch.randint(0, 4, (n,), generator=g),
                box=box, entity=torch.arange(n) // 3, num_nodes=n)  # fmt: skip
    page.graph_beta_skeleton = edge_index
    page.reference_rank = torch.arange(n)
    batch = bench._prepare([page], "beta_skeleton", "reference" if rope else "none")
    if rope:
        assert torch.equal(batch.rope_code, rope_codes(edge_index, torch.arange(n)))
    assert isinstance(batch, Batch) and batch.edge_geom.shape == (edge_index.shape[1], 5)
    model = bench.WordGCN(8, rope)
    logits, group = model(batch)
    assert logits.shape == (n, bench.NUM_LABELS) and group.shape == (edge_index.shape[1],)
    loss = torch.nn.functional.cross_entropy(logits, batch.y)
    loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(group, batch.same)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_absent_data_prints_one_skipped_line(bench: ModuleType, tmp_path: Path, capsys,
                                             monkeypatch) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--data", str(tmp_path / "missing")])
    bench.main()
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and "not found" in rows[0]["skipped"]
