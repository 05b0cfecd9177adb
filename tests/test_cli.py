"""The `multipos` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import multipos
from multipos.cli import main


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


def test_demo_writes_png_and_checks_property(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "rope_2d_kernel.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 65 * 6  # width
    line = next(x for x in out.splitlines() if "1-D RoPE" in x)
    assert float(line.rsplit("=", 1)[1]) < 1e-9


def test_console_script_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "multipos.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "multipos" in done.stdout
