"""``benchmarks/_common.py``'s median over processes: every process's ratio is kept, the
printed figures are the medians."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

SCRIPT = """
import json, pathlib
counter = pathlib.Path(r"{counter}")
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
ours, base = [3.0, 1.0, 2.0][run], 1.0
print("warm-up chatter")
print(json.dumps(dict(bench="b", case="c", metric="m", ours=ours, baseline=base,
                      ratio=ours / base, budget=1.5, spread=[run, run], machine="x")))
"""


def test_median_of_processes(tmp_path, capsys) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import median_of_processes
    finally:
        sys.path.remove(str(BENCHMARKS))
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT.format(counter=tmp_path / "counter"))
    median_of_processes([sys.executable, str(script)], 3)
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["ratio_runs"] == [3.0, 1.0, 2.0]
    assert (row["ours"], row["baseline"], row["ratio"]) == (2.0, 1.0, 2.0)
    assert row["processes"] == 3 and row["budget"] == 1.5 and row["machine"] != "x"
    assert "spread" not in row  # one process's detail


def test_rerun_command_drops_the_processes_option() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import rerun_command
    finally:
        sys.path.remove(str(BENCHMARKS))
    argv = ["--repeats", "7", "--processes", "5", "--processes=3", "--only", "gta"]
    expected = [sys.executable, "s.py", "--repeats", "7", "--only", "gta"]
    assert rerun_command("s.py", argv) == expected
