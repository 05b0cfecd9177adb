"""Smoke test of ``benchmarks/resolution_generalization.py --quick`` (slow: trains 7 models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "resolution_generalization.py"


@pytest.mark.slow
def test_quick_mode_emits_every_case_resolution_and_pooling() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    cases = {r["case"] for r in rows}
    assert {"ape", "none", "ape+irpe", "peg", "lff", "rope_axial_2d", "rope_mixed"} <= cases
    assert len(rows) == len(cases) * 3 * 2
    for r in rows:
        assert r["bench"] == "resolution_generalization"
        scale = {32: "1x", 48: "1.5x", 64: "2x"}[r["resolution"]]
        assert r["metric"] == f"top1_{scale}_{r['pooling']}"
        assert 0.0 <= r["ours"] <= 1.0 and 0.0 <= r["train_acc"] <= 1.0
        assert r["seeds"] == 1
    ape = {r["metric"]: r["ours"] for r in rows if r["case"] == "ape"}
    assert all(r["baseline"] == ape[r["metric"]] for r in rows)
    assert "wall time" in proc.stdout
