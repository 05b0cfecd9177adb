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


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("resolution_generalization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_irpe_suite_covers_the_papers_variants_and_orderings_are_computed() -> None:
    bench = _script()
    names = {c.name for c in bench.IRPE_SUITE}
    assert "ape" in names and len(names) == 1 + 8 + 4
    assert all(c.pos_scheme == ("ape", "irpe") for c in bench.IRPE_SUITE if c.name != "ape")
    # Synthetic results where contextual beats bias by 2 points and directed loses by 1.
    results = {}
    for case in bench.IRPE_SUITE:
        if case.name == "ape":
            continue
        cfg = case.pos_cfg["irpe"]
        acc = 0.5 + (0.02 if cfg["mode"] == "contextual" else 0.0)
        acc -= 0.01 if cfg["method"] in bench.IRPE_DIRECTED else 0.0
        results[case.name] = {(res, "object"): [acc, acc] for res in bench.RESOLUTIONS}
    rows = bench.irpe_orderings(results)
    assert len(rows) == len(bench.RESOLUTIONS) * 4
    for row in rows:
        if row["ordering"].startswith("contextual"):
            assert row["holds"] and abs(row["difference"] - 0.02) < 1e-9
        else:
            assert not row["holds"] and abs(row["difference"] + 0.01) < 1e-9


@pytest.mark.slow
def test_quick_irpe_suite_emits_every_variant_and_the_orderings() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--suite", "irpe"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    orderings = [r for r in rows if r["case"] == "irpe_ordering"]
    scores = [r for r in rows if r["case"] != "irpe_ordering"]
    assert len({r["case"] for r in scores}) == 13
    assert len(scores) == 13 * 3 * 2
    assert len(orderings) == 3 * 4
    assert all(isinstance(r["holds"], bool) for r in orderings)
