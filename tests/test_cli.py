"""The `multipos` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import multipos
from multipos.cli import main
from tests._figures import block_matplotlib


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"multipos {multipos.__version__}"


def test_list_shows_schemes_with_papers(capsys) -> None:
    assert main(["list", "rope*"]) == 0
    out = capsys.readouterr().out
    assert "rope_yarn" in out and "arXiv:2309.00071" in out
    assert "lff" not in out.split()


def test_list_unknown_pattern(capsys) -> None:
    assert main(["list", "zzz*"]) == 1


def _synthetic_results(folder: Path) -> None:
    """A few JSON lines shaped like the benchmarks' output, with their trailing table."""
    folder.mkdir()
    rows = [
        {"bench": "resolution_generalization", "case": "ape", "metric": f"top1_{r}_avg",
         "ours": acc, "std": 0.01, "seeds": 2, "resolution": side, "train_resolution": 32,
         "pooling": "avg"}
        for r, side, acc in (("1x", 32, 0.9), ("2x", 64, 0.7))
    ]  # fmt: skip
    text = "\n".join(json.dumps(r) for r in rows) + "\n\ncase  1x avg  2x avg\nape   90.0  70.0\n"
    (folder / "resolution_generalization.jsonl").write_text(text)
    # A benchmark still running: its setup row is there, no accuracy yet.
    setup = {"bench": "graph_direction", "case": "setup", "metric": "majority_accuracy",
             "ours": 0.5}  # fmt: skip
    (folder / "graph_direction.jsonl").write_text(json.dumps(setup) + "\n")


def test_console_script_entry_point() -> None:
    """The installed ``multipos`` command runs (the script next to the interpreter)."""
    script = Path(sys.executable).with_name("multipos")
    if not script.exists():
        script = Path(shutil.which("multipos") or "multipos-not-installed")
    assert script.exists(), "the `multipos` console script is not installed"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"multipos {multipos.__version__}"


def test_demo_writes_pictures_and_checks_property(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib", reason="pictures need the [plot] extra")
    _synthetic_results(tmp_path / "results")
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--results", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if "1-D RoPE" in x)
    assert float(line.rsplit("=", 1)[1]) < 1e-9
    pictures = ["rope_2d_kernel.png", "irpe_buckets.png", "results/resolution_generalization.png"]
    if "[graph] skipped" not in printed:
        pictures.append("graph/graph_pe.png")
    for name in pictures:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert int.from_bytes(data[16:20], "big") >= 600, name  # width in pixels
    assert "graph_direction: 1 rows, nothing to plot yet" in printed
    assert not (out / "results" / "graph_direction.png").exists()
    core = json.loads((out / "core_demo.json").read_text())
    assert core["rope_1d_shift_change"] < 1e-9 and core["rope_2d_kernel_centre"] == 1.0


def test_demo_without_matplotlib_prints_checks_and_json(tmp_path, capsys, monkeypatch) -> None:
    block_matplotlib(monkeypatch)
    _synthetic_results(tmp_path / "results")
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--results", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert 'pip install "multipos[plot]"' in printed
    line = next(x for x in printed.splitlines() if "1-D RoPE" in x)
    assert float(line.rsplit("=", 1)[1]) < 1e-9
    assert "resolution_generalization: 2 rows (no picture without matplotlib)" in printed
    assert not list(out.rglob("*.png"))
    assert json.loads((out / "core_demo.json").read_text())["rope_2d_shift_change"] < 1e-9
    for domain, name in (("vision", "vision_demo.json"), ("graph", "graph_pe_demo.json")):
        if f"[{domain}] skipped" not in printed:
            assert json.loads((out / domain / name).read_text())
