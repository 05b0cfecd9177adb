"""The synthetic task of ``benchmarks/v2pe_long_context.py`` and its ``--quick`` run (slow:
trains 4 tiny models)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from multipos.llm import v2pe_positions

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "v2pe_long_context.py"


def _script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("v2pe_long_context", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    return module


def test_batch_answers_are_the_labels_after_the_queried_colours() -> None:
    bench = _script()
    palette = torch.randn(bench.PALETTE, bench.FEATURES, generator=torch.Generator().manual_seed(0))
    images, tiles = 5, 2
    data, deltas = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    batch = bench.make_batch(3, images, tiles, 0.25, palette, data, deltas)
    visual = tiles * bench.TOKENS_PER_TILE
    length = images * (visual + bench.TEXT_RUN) + images
    assert batch.ids.shape == (3, length) and batch.features.shape == (3, length, bench.FEATURES)
    layout = bench.segments(images, tiles)
    expected = v2pe_positions(layout, 0.25, bench.TOKENS_PER_TILE)
    assert torch.equal(batch.positions, expected.expand(3, -1))
    slots = bench.label_slots(images, tiles)
    assert bool((batch.ids[:, slots] < bench.LABELS).all())
    assert bool((batch.ids[:, slots - 1] == bench.VISUAL_ID).all())
    for b in range(3):
        for q in range(images):
            asked = batch.features[b, length - images + q]  # the clean colour of one image
            image = int((palette[batch.colours[b]] - asked).abs().sum(-1).argmin())
            assert torch.equal(asked, palette[batch.colours[b, image]])
            assert int(batch.answers[b, q]) == int(batch.ids[b, slots[image]])
            # The image's visual tokens are that colour plus noise.
            pixels = batch.features[b, slots[image] - visual : slots[image]]
            assert float((pixels.mean(0) - asked).abs().max()) < 4 * bench.NOISE
    # Sampled increments change the positions, never the data stream.
    again = bench.make_batch(
        3,
        images,
        tiles,
        bench.TRAIN_MODES["v2pe"],
        palette,
        torch.Generator().manual_seed(1),
        torch.Generator().manual_seed(2),
    )
    assert torch.equal(again.features, batch.features) and torch.equal(again.ids, batch.ids)
    assert not torch.equal(again.positions, batch.positions)


def test_longest_test_positions_grow_with_delta_and_stay_in_the_window_at_one_sixteenth() -> None:
    bench = _script()
    window = int(
        v2pe_positions(bench.segments(bench.TRAIN_IMAGES, 1), 1.0, bench.TOKENS_PER_TILE).max()
    )
    images, tiles = bench.LENGTHS["8x tiles"]
    top = {
        name: int(v2pe_positions(bench.segments(images, tiles), d, bench.TOKENS_PER_TILE).max())
        for name, d in bench.TEST_DELTAS.items()
    }
    assert top["1"] > 4 * window and top["1/16"] <= window
    assert top["1"] > top["1/4"] > top["1/16"]


@pytest.mark.slow
def test_quick_run_prints_every_cell_summary_and_table(capsys) -> None:
    bench = _script()
    bench.main(["--quick"])
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all(r["bench"] == "v2pe_long_context" and "machine" in r for r in rows)
    cells = [
        (mode, name, length)
        for mode in bench.TRAIN_MODES
        for name in bench.TEST_DELTAS
        for length in bench.LENGTHS
    ]
    per_seed = [r for r in rows if r["metric"] == "accuracy"]
    summary = [r for r in rows if r["metric"] == "accuracy_mean"]
    positions = [r for r in rows if r["metric"] == "max_position"]
    assert sorted((r["train_mode"], r["test_delta"], r["length"], r["seed"]) for r in per_seed) == (
        sorted((*cell, seed) for cell in cells for seed in range(2))
    )
    assert sorted((r["train_mode"], r["test_delta"], r["length"]) for r in summary) == sorted(cells)
    assert len(positions) == len(bench.TEST_DELTAS) * len(bench.LENGTHS)
    for r in per_seed:
        assert 0.0 <= r["ours"] <= 100.0
        if r["baseline"]:
            assert math.isclose(r["ratio"], r["ours"] / r["baseline"])
    for s in summary:
        values = [
            r["ours"]
            for r in per_seed
            if (r["train_mode"], r["test_delta"], r["length"])
            == (s["train_mode"], s["test_delta"], s["length"])
        ]
        assert math.isclose(s["ours"], sum(values) / 2)
    table = out[out.index("Question accuracy") :]
    for mode in bench.TRAIN_MODES:
        assert mode in table
    for length in bench.LENGTHS:
        assert length in table
