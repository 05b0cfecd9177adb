"""Shared helpers of the benchmark scripts: alternating timing and the JSON line format.

Every benchmark prints one JSON object per line with the keys ``bench``, ``case``, ``metric``,
``ours``, ``baseline`` and ``ratio`` (= ours / baseline), measured in one process with the two
contenders run alternately, medians over the repetitions.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def machine() -> str:
    """A short description of where the figures were measured."""
    return f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"


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
    for _ in range(warmup):
        ours()
        baseline()
    t_ours: list[float] = []
    t_base: list[float] = []
    for r in range(repeats):
        order = [(ours, t_ours), (baseline, t_base)]
        if r % 2:
            order.reverse()
        for fn, sink in order:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sink.append((time.perf_counter() - start) / inner)
    return statistics.median(t_ours), statistics.median(t_base)


def emit(bench: str, case: str, metric: str, ours: float, baseline: float, **extra: Any) -> None:
    """Print one result line."""
    row = {
        "bench": bench,
        "case": case,
        "metric": metric,
        "ours": ours,
        "baseline": baseline,
        "ratio": ours / baseline if baseline else float("nan"),
        **extra,
        "machine": machine(),
    }
    print(json.dumps(row), flush=True)
