"""Shared helpers of the benchmark scripts: alternating timing and the JSON line format.

Every benchmark prints one JSON object per line with the keys ``bench``, ``case``, ``metric``,
``ours``, ``baseline`` and ``ratio`` (= ours / baseline), measured in one process with the two
contenders run alternately, medians over the repetitions.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch


def machine() -> str:
    """A short description of where the figures were measured."""
    return f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"


def alternate(
    fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Seconds of every call of each function, run in turn ``repeats`` times.

    The order reverses every repetition, so no contender always runs on a warmer cache.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(repeats):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def time_alternating(
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    repeats: int = 21,
    warmup: int = 3,
    inner: int = 1,
) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``baseline``, run alternately.

    Each repetition times ``inner`` back-to-back calls of one contender, then of the other
    (the order flips every repetition so neither always runs on a warmer cache).
    """
    if repeats < 5:
        raise ValueError(f"need at least 5 repetitions for a median, got {repeats}")

    def batch(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(inner):
                fn()

        return run

    times = alternate({"ours": batch(ours), "baseline": batch(baseline)}, repeats, warmup)
    return statistics.median(times["ours"]) / inner, statistics.median(times["baseline"]) / inner


def emit_row(row: Mapping[str, Any]) -> None:
    """Print one result line as given, plus where it was measured."""
    print(json.dumps({**row, "machine": machine()}), flush=True)


def emit(bench: str, case: str, metric: str, ours: float, baseline: float, **extra: Any) -> None:
    """Print one result line; ``ratio`` = ours / baseline."""
    emit_row(
        {
            "bench": bench,
            "case": case,
            "metric": metric,
            "ours": ours,
            "baseline": baseline,
            "ratio": ours / baseline if baseline else float("nan"),
            **extra,
        }
    )


def rerun_command(script: str, argv: list[str]) -> list[str]:
    """The command that runs ``script`` with ``argv`` less its ``--processes`` option."""
    command, skip = [sys.executable, script], False
    for arg in argv:
        if not skip and arg != "--processes" and not arg.startswith("--processes="):
            command.append(arg)
        skip = arg == "--processes"
    return command


def median_of_processes(command: list[str], processes: int) -> None:
    """Run ``command`` (a benchmark printing JSON rows) in ``processes`` fresh processes, one
    after another, and print one row per ``(bench, case, metric)``: ``ours``, ``baseline`` and
    ``ratio`` are the medians over the processes, ``ratio_runs`` every process's ratio in run
    order; other fields are kept where every process printed the same value. Ratios move more
    between processes than within one (memory placement, other work on the machine), so this
    is the figure to hold against a budget.
    """
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for _ in range(processes):
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.setdefault((row["bench"], row["case"], row["metric"]), []).append(row)
    for runs in rows.values():
        # Fields every process printed alike (the configuration); the rest described one run.
        first = {k: v for k, v in runs[0].items() if all(r.get(k) == v for r in runs)}
        first.pop("machine", None)
        first.update(
            ours=statistics.median(r["ours"] for r in runs),
            baseline=statistics.median(r["baseline"] for r in runs),
            ratio=statistics.median(r["ratio"] for r in runs),
            ratio_runs=[round(r["ratio"], 4) for r in runs],
            processes=len(runs),
        )
        emit_row(first)
