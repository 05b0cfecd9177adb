"""The two-view correspondence task of ``benchmarks/gta_multiview.py``: data and a smoke run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("timm")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gta_multiview.py"


def _script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports benchmarks/_common.py
    try:
        spec = importlib.util.spec_from_file_location("gta_multiview", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


@pytest.mark.parametrize("depth", [False, True])
def test_target_patch_shows_the_marked_point_and_world_shift_keeps_the_images(
    depth: bool,
) -> None:
    bench = _script()
    task = bench.Task(image=16, depth=depth)
    batch = bench.make_batch(200, torch.Generator().manual_seed(0), task)
    assert batch.images.shape == (200, 2, 3 if depth else 2, 16, 16)
    p = bench.PATCH
    # (n, S, S) -> (n, S/p, S/p, p, p) -> brightest pixel per patch, row-major
    patches = batch.images[:, 1, 0].unfold(1, p, p).unfold(2, p, p).amax((-1, -2)).flatten(1)
    assert (patches[torch.arange(200), batch.target] > 0.3).all()
    assert (batch.images[:, 1, 1] == 0).all()  # the marker is in view 1 only
    marker = batch.images[:, 0, 1].unfold(1, p, p).unfold(2, p, p).amax((-1, -2)).flatten(1)
    assert (marker.amax(dim=1) > 0.3).all()
    # Every camera sees the scene from the front: the patch centre rays reach the points.
    shifted = bench.world_shift(batch, torch.Generator().manual_seed(1))
    assert torch.equal(shifted.images, batch.images)
    assert torch.equal(shifted.target, batch.target)
    relative = batch.extrinsics[:, 1] @ torch.linalg.inv(batch.extrinsics[:, 0])
    moved = shifted.extrinsics[:, 1] @ torch.linalg.inv(shifted.extrinsics[:, 0])
    torch.testing.assert_close(moved, relative, atol=1e-4, rtol=0)
    assert (shifted.extrinsics - batch.extrinsics).abs().amax() > 0.5


@pytest.mark.slow
def test_quick_mode_emits_every_case_and_metric() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {(r["case"], r["metric"]) for r in rows} == {
        (c, m) for c in ("gta", "absolute", "none") for m in ("top1", "top1_world_shift")
    }
    for r in rows:
        assert r["bench"] == BENCH and r["seeds"] == 1 and "machine" in r
        assert 0.0 <= r["ours"] <= 1.0 and 0.0 <= r["train_acc"] <= 1.0
    gta = {r["metric"]: r["ours"] for r in rows if r["case"] == "gta"}
    assert abs(gta["top1"] - gta["top1_world_shift"]) <= 0.02  # invariant up to float ties
    assert "wall time" in proc.stdout


BENCH = "gta_multiview"
