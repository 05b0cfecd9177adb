from __future__ import annotations

import json

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

from multipos.graph.demo import run_demo


def test_demo_runs_and_shows_the_properties(tmp_path, capsys) -> None:
    run_demo(tmp_path)
    out = json.loads((tmp_path / "graph" / "graph_pe_demo.json").read_text())
    assert out["permutation_equivariance_error"] < 1e-5
    assert out["reversal_conjugation_error"] < 1e-6
    assert out["padding_mask"] == [True, False, False, False]
    assert "permutation equivariance" in capsys.readouterr().out
