from __future__ import annotations

import json

import pytest
import torch

from multipos.llm import v2pe_positions
from multipos.llm.demo import DEMO_SEGMENTS, DEMO_TOKENS_PER_TILE, run_demo
from multipos.plot import available
from tests._figures import block_matplotlib

SEGMENTS = [("text", 3), ("image", 2), ("text", 2), ("image", 1), ("text", 1)]


def test_demo_writes_the_largest_positions_and_the_picture(tmp_path, capsys) -> None:
    run_demo(tmp_path)
    out = json.loads((tmp_path / "llm" / "llm_demo.json").read_text())
    tokens = sum(n * DEMO_TOKENS_PER_TILE if k == "image" else n for k, n in DEMO_SEGMENTS)
    assert out["tokens"] == tokens and out["delta_1_is_arange"]
    largest = out["largest_position"]
    assert largest["1"] == tokens - 1
    # text 72 tokens, images of 2, 1, 3 tiles: ceil(128 d) + ceil(64 d) + ceil(192 d) slots
    assert largest["0.25"] == 72 + 32 + 16 + 48 - 1
    assert largest["0.0625"] == 72 + 8 + 4 + 12 - 1
    assert largest["0.0625"] < out["training_mode_largest_position"] < largest["1"]
    printed = capsys.readouterr().out
    assert "largest position 455 at delta 1" in printed
    assert (tmp_path / "llm" / "v2pe_positions.png").exists() == available()


def test_demo_without_matplotlib_still_writes_its_numbers(tmp_path, monkeypatch) -> None:
    block_matplotlib(monkeypatch)
    run_demo(tmp_path)
    assert json.loads((tmp_path / "llm" / "llm_demo.json").read_text())["delta_1_is_arange"]
    assert not (tmp_path / "llm" / "v2pe_positions.png").exists()


def test_positions_figure_draws_one_line_per_delta_over_shaded_images() -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    from multipos.llm.plot import v2pe_positions_figure
    from tests._figures import assert_readable, data_axes

    fig = v2pe_positions_figure(SEGMENTS, (1.0, 0.25, 1 / 16), tokens_per_tile=4)
    assert_readable(fig)
    (ax,) = data_axes(fig)
    assert len(ax.lines) == 3
    for line, delta in zip(ax.lines, (1.0, 0.25, 1 / 16), strict=True):
        y = torch.as_tensor(line.get_ydata(), dtype=torch.float32)
        assert torch.equal(y, v2pe_positions(SEGMENTS, delta, 4))
        assert torch.equal(torch.as_tensor(line.get_xdata()), torch.arange(18))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "visual tokens"
    assert labels[1:] == [
        "delta = 1 (largest position 17)",
        "delta = 1/4 (largest position 8)",
        "delta = 1/16 (largest position 7)",
    ]
    spans = [p for p in ax.patches]  # the two images: tokens 3-10 and 13-16
    assert [(round(p.get_x() + 0.5), round(p.get_width())) for p in spans] == [(3, 8), (13, 4)]


def test_positions_figure_rejects_no_delta_and_bad_segments() -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    from multipos.llm.plot import v2pe_positions_figure

    with pytest.raises(ValueError, match="at least one"):
        v2pe_positions_figure(SEGMENTS, ())
    with pytest.raises(ValueError, match="kind"):
        v2pe_positions_figure([("audio", 3)], (1.0,))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        v2pe_positions_figure(SEGMENTS, (2.0,))
