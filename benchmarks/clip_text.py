"""CLIP text tower: cost of an upgraded tower at 248 tokens against the original at 77.

Prints one JSON line per (method, metric): ``ours`` = the upgraded tower's ``encode_text`` on
``(B, 248)`` ids (captions that fill the whole context), ``baseline`` = the original tower on
``(B, 77)`` ids, ``ratio`` = ours / baseline. Seconds are medians of alternating runs in one
process; peak memory is the highest running total of tensor memory the CPU profiler sees
during one forward (inference mode). Random weights, nothing downloaded. Design budget:
ratio <= 3.5 for the time.

    python benchmarks/clip_text.py [--model ViT-B-32] [--batch-size 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import open_clip
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, time_alternating

from multipos.clip import upgrade_text_context


def peak_memory(fn) -> float:  # type: ignore[no-untyped-def]
    """Peak of the running sum of allocations (MiB) seen by the profiler during ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    total = peak = 0
    for event in events:
        total += event.cpu_memory_usage
        peak = max(peak, total)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=248)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    original = open_clip.create_model(args.model, pretrained=None).eval()
    n = args.context_length
    g = torch.Generator().manual_seed(0)
    short = torch.randint(1, 49000, (args.batch_size, 77), generator=g)
    short[:, 0], short[:, -1] = 49406, 49407
    long = torch.randint(1, 49000, (args.batch_size, n), generator=g)
    long[:, 0], long[:, -1] = 49406, 49407

    def baseline() -> torch.Tensor:
        with torch.inference_mode():
            return original.encode_text(short)

    base_mem = peak_memory(baseline)
    case_common = {"model": args.model, "batch": args.batch_size, "threads": args.threads}
    for method in ("linear", "kps", "rope"):
        model = upgrade_text_context(copy.deepcopy(original), method, n).eval()

        def ours(model: torch.nn.Module = model) -> torch.Tensor:
            with torch.inference_mode():
                return model.encode_text(long)

        t_ours, t_base = time_alternating(ours, baseline, repeats=args.repeats, warmup=2)
        case = f"{method}@{n} vs original@77"
        emit("clip_text", case, "seconds", t_ours, t_base, method=method, **case_common)
        emit(
            "clip_text",
            case,
            "tokens_per_second",
            args.batch_size * n / t_ours,
            args.batch_size * 77 / t_base,
            method=method,
            **case_common,
        )
        emit(
            "clip_text",
            case,
            "peak_memory_mib",
            peak_memory(ours),
            base_mem,
            method=method,
            **case_common,
        )


if __name__ == "__main__":
    main()
