from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

from multipos.graph.demo import PICTURE_DAG, run_demo
from multipos.plot import available


def test_demo_runs_and_shows_the_properties(tmp_path, capsys) -> None:
    run_demo(tmp_path)
    out = json.loads((tmp_path / "graph" / "graph_pe_demo.json").read_text())
    assert out["permutation_equivariance_error"] < 1e-5
    assert out["reversal_conjugation_error"] < 1e-6
    assert out["padding_mask"] == [True, False, False, False]
    assert "permutation equivariance" in capsys.readouterr().out
    picture = tmp_path / "graph" / "graph_pe.png"
    assert picture.exists() == available()
    if available():
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _node_colours(ax) -> np.ndarray:
    (points,) = ax.collections
    return np.asarray(points.get_array(), dtype=float)


def test_graph_pe_figure_draws_both_pes() -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    from multipos.graph.plot import graph_pe_figure
    from tests._figures import assert_readable, data_axes

    fig = graph_pe_figure(PICTURE_DAG, 12)
    assert_readable(fig)
    panels = data_axes(fig)
    assert len(panels) == 8
    titles = [ax.get_title() for ax in panels]
    assert titles[0].startswith("Laplacian PE") and titles[4].startswith("magnetic PE")
    colours = [_node_colours(ax) for ax in panels]
    # The Laplacian PE cannot see direction; reversing every edge negates the magnetic phase.
    np.testing.assert_allclose(colours[3], colours[0])
    np.testing.assert_allclose(colours[7], -colours[6], atol=1e-6)
    assert np.abs(colours[6]).max() > 0.1
    # A DAG is laid out by generation: every edge points to the right.
    (xs_ys,) = [panels[0].collections[0].get_offsets()]
    x = np.asarray(xs_ys)[:, 0]
    src, dst = PICTURE_DAG.numpy()
    assert (x[dst] > x[src]).all()
    assert panels[0].get_xlabel() == "topological generation"
    # One arrow per edge, on every panel.
    assert all(len(ax.texts) == 12 + PICTURE_DAG.shape[1] for ax in panels)


def test_graph_pe_figure_cycle_and_tiny_graph() -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    from multipos.graph.plot import graph_pe_figure
    from tests._figures import data_axes

    cycle = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    (ax, *_) = data_axes(graph_pe_figure(cycle, 5))
    assert ax.get_xlabel().startswith("spring layout")
    with pytest.raises(ValueError, match="at least 4 nodes"):
        graph_pe_figure(torch.tensor([[0], [1]]), 3)
