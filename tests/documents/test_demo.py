from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

from multipos.documents import reading_order, rope_codes, synthetic_form, word_graph
from multipos.documents.demo import run_demo
from multipos.plot import available


def test_demo_on_a_synthetic_page_when_funsd_is_absent(tmp_path, capsys) -> None:
    run_demo(tmp_path, data=tmp_path / "no-data")
    out = json.loads((tmp_path / "documents" / "documents_demo.json").read_text())
    assert out["page"].startswith("synthetic form")
    assert out["codes_invariant_to_shift"] and out["codes_invariant_to_relabelling"]
    assert 0 < out["beta_skeleton_edges"] < out["knn_edges"]
    assert "ROPE code" in capsys.readouterr().out
    picture = tmp_path / "documents" / "reading_order.png"
    assert picture.exists() == available()


def test_reading_order_figure() -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    from multipos.documents.plot import reading_order_figure
    from tests._figures import assert_readable, data_axes

    form = synthetic_form(rows=3)
    edges = word_graph(form.boxes)
    rank = reading_order(form.boxes)
    codes = rope_codes(edges, rank)
    fig = reading_order_figure(form.boxes, edges, codes, rank, title="t")
    assert_readable(fig)
    graph_ax, order_ax = data_axes(fig)
    (lines,) = graph_ax.collections
    assert torch.equal(torch.as_tensor(lines.get_array()).long(), codes)  # one half-edge each
    path = order_ax.lines[0].get_xydata()
    centres = ((form.boxes[:, :2] + form.boxes[:, 2:]) / 2)[torch.argsort(rank)]
    torch.testing.assert_close(torch.as_tensor(path, dtype=torch.float32), centres)
    assert graph_ax.yaxis_inverted()
