"""Figures of multipos.plot: labelled, captioned, drawn from the right numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")

from multipos import plot
from multipos.bias import irpe_buckets
from multipos.cli import _rope_kernel
from multipos.positions import build_grid_positions
from tests._figures import assert_readable, block_matplotlib, caption, data_axes


def resolution_rows(cases=("ape", "rope_axial_2d"), seeds=3) -> list[dict]:
    rows = []
    for c, case in enumerate(cases):
        for pooling in ("avg", "object"):
            for res, side in (("1x", 32), ("1.5x", 48), ("2x", 64)):
                acc = 0.9 - 0.1 * c * (side - 32) / 32
                rows.append(
                    {
                        "bench": "resolution_generalization",
                        "case": case,
                        "metric": f"top1_{res}_{pooling}",
                        "ours": acc,
                        "baseline": 0.9,
                        "ratio": float("nan"),
                        "std": 0.01,
                        "seeds": seeds,
                        "resolution": side,
                        "train_resolution": 32,
                        "pooling": pooling,
                    }
                )
    return rows


def direction_rows() -> list[dict]:
    rows = [{"bench": "graph_direction", "case": "setup", "metric": "majority_accuracy",
             "ours": 0.6, "baseline": 0.6, "ratio": 1.0}]  # fmt: skip
    for pe, accs in (("none", (0.70, 0.72)), ("magnetic", (0.90, 0.94))):
        rows += [
            {"bench": "graph_direction", "case": f"{pe}/seed{i}", "metric": "test_accuracy",
             "ours": a, "baseline": None, "ratio": None}
            for i, a in enumerate(accs)
        ]  # fmt: skip
    return rows


def test_rope_kernel_figure(tmp_path) -> None:
    kernel = _rope_kernel(size=9)
    fig = plot.rope_kernel_figure(kernel, head_dim=64, base=100.0)
    assert_readable(fig)
    (ax,) = data_axes(fig)
    assert "offset" in ax.get_xlabel() and "(patches)" in ax.get_xlabel()
    assert "offset" in ax.get_ylabel() and "(patches)" in ax.get_ylabel()
    (image,) = ax.images
    # Zero offset sits at the centre of the axes, and the peak (score 1) is there.
    assert image.get_extent() == [-4.5, 4.5, -4.5, 4.5]
    assert np.unravel_index(np.argmax(image.get_array()), (9, 9)) == (4, 4)
    assert image.colorbar is not None and "score" in image.colorbar.ax.get_ylabel()
    path = plot.save(fig, tmp_path / "sub" / "kernel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rope_kernel_figure_rejects_even_sides() -> None:
    with pytest.raises(ValueError, match="odd sides"):
        plot.rope_kernel_figure(torch.zeros(8, 9), head_dim=64, base=100.0)


def test_irpe_buckets_figure() -> None:
    fig = plot.irpe_buckets_figure(10)
    assert_readable(fig)
    panels = data_axes(fig)
    titles = [ax.get_title() for ax in panels]
    assert [t.split(":")[0] for t in titles] == ["product", "product", "cross", "cross"]
    assert ["row" in t for t in titles] == [True, False, True, False]
    maps = [ax.images[0].get_array() for ax in panels]
    grid = build_grid_positions((10, 10)).patches
    product = irpe_buckets(grid, method="product")[0, 55].view(10, 10)
    side = 7
    np.testing.assert_array_equal(maps[0], (product // side).numpy())
    np.testing.assert_array_equal(maps[1], (product % side).numpy())
    # Paper property: product's 2-D bucket is the pair of the per-axis buckets cross uses,
    # and the row bucket depends on the row offset only (constant along each row).
    np.testing.assert_array_equal(maps[0], maps[2])
    np.testing.assert_array_equal(maps[1] % side, maps[3] % side)
    assert (maps[0] == maps[0][:, :1]).all() and (maps[1] == maps[1][:1]).all()
    for ax in panels:
        (marker,) = ax.lines  # the query
        assert list(marker.get_xdata()) == [5] and list(marker.get_ydata()) == [5]
    assert "±1 patch" in caption(fig)


def test_read_results_skips_text_and_other_benchmarks(tmp_path) -> None:
    lines = [json.dumps(r) for r in resolution_rows()[:3]]
    lines += ["", "top-1 % table", json.dumps({"bench": "other", "ours": 1.0}), "[1, 2]"]
    (tmp_path / "a.jsonl").write_text("\n".join(lines))
    (tmp_path / "b.jsonl").write_text(json.dumps(direction_rows()[0]))
    (tmp_path / "c.txt").write_text(json.dumps(resolution_rows()[0]))
    rows = plot.read_results(tmp_path, "resolution_generalization")
    assert [r["metric"] for r in rows] == ["top1_1x_avg", "top1_1.5x_avg", "top1_2x_avg"]
    assert len(plot.read_results(tmp_path, "graph_direction")) == 1
    assert plot.read_results(tmp_path / "missing", "graph_direction") == []


def test_resolution_figure() -> None:
    fig = plot.resolution_figure(resolution_rows())
    assert_readable(fig)
    panels = data_axes(fig)
    assert [ax.get_title() for ax in panels] == ["read-out: avg", "read-out: object"]
    assert "accuracy (%)" in panels[0].get_ylabel() and "pixels" in panels[0].get_xlabel()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["training size", "ape", "rope_axial_2d"]
    # One line per scheme, in percent, x near the tested resolutions (shifted a little).
    bars = {c.get_label(): c.lines[0] for c in panels[1].containers}
    assert list(bars) == ["ape", "rope_axial_2d"]
    np.testing.assert_allclose(
        np.asarray(bars["rope_axial_2d"].get_ydata(), float), [90.0, 85.0, 80.0]
    )
    np.testing.assert_allclose(
        np.asarray(bars["rope_axial_2d"].get_xdata(), float), [32, 48, 64], atol=1.0
    )
    np.testing.assert_allclose(np.asarray(bars["ape"].get_ydata(), float), [90.0, 90.0, 90.0])
    assert "3 seed(s)" in caption(fig)


def test_graph_direction_figure() -> None:
    fig = plot.graph_direction_figure(direction_rows())
    assert_readable(fig)
    (ax,) = data_axes(fig)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [71.0, 92.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "magnetic"]
    assert any(line.get_label() == "majority class" for line in ax.lines)
    # Without per-seed rows the summaries are plotted.
    summary = [{"bench": "graph_direction", "case": "none",
                "metric": "test_accuracy_mean_over_3_seeds", "ours": 0.5, "std": 0.1}]  # fmt: skip
    (ax,) = data_axes(plot.graph_direction_figure(summary))
    assert [bar.get_height() for bar in ax.patches] == [50.0]


@pytest.mark.parametrize("figure", [plot.resolution_figure, plot.graph_direction_figure])
def test_results_figures_need_rows(figure) -> None:
    with pytest.raises(ValueError, match="no"):
        figure([{"bench": "x", "metric": "speed", "ours": 1.0}])


def test_without_matplotlib_a_figure_says_how_to_install(monkeypatch) -> None:
    block_matplotlib(monkeypatch)
    assert not plot.available()
    with pytest.raises(ImportError, match=r'pip install "multipos\[plot\]"'):
        plot.irpe_buckets_figure(6)
