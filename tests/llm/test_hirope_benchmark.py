"""Smoke test of ``benchmarks/hirope_extrapolation.py --quick`` (slow: trains 2 tiny LMs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="needs the hf extra")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hirope_extrapolation.py"
METHODS = {
    "rope",
    "rope_ntk",
    "rope_yarn",
    "hirope",
    "hirope_w128",
    "hirope_w256",
    "hirope_trained",
}


@pytest.mark.slow
def test_quick_mode_emits_every_method_and_length() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    per_seed = [r for r in rows if r["metric"] == "perplexity"]
    means = [r for r in rows if r["metric"] == "perplexity_mean"]
    assert {r["case"] for r in per_seed} == METHODS
    assert {(r["case"], r["length"]) for r in means} == {
        (m, n) for m in METHODS for n in (256, 512)
    }
    for r in rows:
        assert r["bench"] == "hirope_extrapolation" and "machine" in r
        assert 1.0 < r["ours"] < 1000.0 and r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
    rope = {r["length"]: r["ours"] for r in per_seed if r["case"] == "rope"}
    assert all(r["baseline"] == rope[r["length"]] for r in per_seed)
    # at the training length the scalings have factor 1 and a 256-token window keeps every
    # pair flat: all identical to plain RoPE
    at_train = {r["case"]: r["ours"] for r in per_seed if r["length"] == 256}
    assert at_train["rope_ntk"] == at_train["rope"] == at_train["rope_yarn"]
    assert at_train["hirope_w256"] == pytest.approx(at_train["rope"], rel=1e-5)
    assert "| method | L=256 | L=512 |" in proc.stdout
