"""GTA attention against plain fused SDPA, with plain RoPE through the same entry point beside it.

One thread, batch 2, 256 tokens, 6 heads of 64 channels. Every case goes through
:func:`multipos.attention` and is timed against ``torch.nn.functional.scaled_dot_product_attention``
on the same q, k, v, alternating runs, medians; forward (no grad) and forward+backward:

- ``gta_so2``: 2-D GTA on a 16 x 16 grid (SO(2) blocks over the whole head, value and output
  transforms on), the representation built once beforehand as a ViT does per forward;
- ``gta_so2_with_rep``: the same, building the representation inside every call;
- ``gta_se3_so2``: multi-view GTA, 4 views x 64 tokens, 32 SE(3) + 32 SO(2) channels;
- ``rope``: 2-D RoPE (``rope_axial_2d`` tables built once), the reference a transform-only
  scheme can reach;
- ``control_sdpa``: plain SDPA timed against itself (the resolution of the other ratios);
- ``transform_q_se3_so2`` (only with the compiled kernel): the multi-view representation's
  query transform of one ``(B, H, L, D)`` tensor alone, the kernel against the torch
  operations it replaces.

The GTA transforms outside autograd run in the compiled kernel when it is built (field
``transforms``: ``"compiled kernel"``, else ``"torch operations"``); ``MULTIPOS_NATIVE=0``
measures the torch operations on a machine that has the kernel.

DESIGN.md's budget: GTA at most 1.3x plain SDPA (forward). ``--processes N`` runs the whole
measurement in N fresh processes one after another and prints the median of each row, with
every process's ratio in ``ratio_runs`` (ratios move more between processes than within one).

    python benchmarks/gta.py [--repeats 41] [--processes 5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, median_of_processes, rerun_command, time_alternating

import multipos
from multipos import GTARepresentation, group_native, se3_blocks, so2_angles, so2_blocks

BATCH, HEADS, TOKENS, HEAD_DIM = 2, 6, 256, 64
GRID = (16, 16)
VIEWS = 4
BUDGET = 1.3
TRANSFORMS = "compiled kernel" if group_native.available() else "torch operations"


def _grid_coords() -> Tensor:
    """``(1, L, 2)`` patch coordinates ``(x, y)`` = (column, row)."""
    patches = multipos.build_grid_positions(GRID).patches  # (2, L): (row, col)
    return patches.flip(0).T.unsqueeze(0)


def _rigid(n: int, generator: torch.Generator) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator))
    q = q * torch.linalg.det(q).sign()[..., None, None]
    out = torch.eye(4).repeat(n, 1, 1)
    out[:, :3, :3] = q
    out[:, :3, 3] = torch.randn(n, 3, generator=generator)
    return out


def _multiview_rep(generator: torch.Generator) -> GTARepresentation:
    extrinsics = _rigid(BATCH * VIEWS, generator).view(BATCH, VIEWS, 4, 4)
    per_view = TOKENS // VIEWS
    se3 = se3_blocks(extrinsics, translation_scale=0.1).repeat_interleave(per_view, 1)
    coords = torch.rand(1, TOKENS, 2, generator=generator) * 8
    # (B, L, 4, 4) -> (B, L, 8, 4, 4): 32 SE(3) channels; then 16 SO(2) blocks: 32 channels.
    blocks = [se3[:, :, None].expand(-1, -1, 8, 4, 4), so2_blocks(coords, 8)]
    return GTARepresentation.from_blocks(blocks, HEAD_DIM, kinds=["rigid", "rotation"])


def _cases(generator: torch.Generator) -> dict[str, Callable[..., Tensor]]:
    coords = _grid_coords()
    grid_rep = GTARepresentation.from_angles(so2_angles(coords, HEAD_DIM // 4), HEAD_DIM)
    multi_rep = _multiview_rep(generator)
    rope = multipos.create_scheme("rope_axial_2d", head_dim=HEAD_DIM)
    tables = rope(coords[0].T)

    def with_rep(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        rep = GTARepresentation.from_angles(so2_angles(coords, HEAD_DIM // 4), HEAD_DIM)
        return multipos.attention(q, k, v, gta=rep)

    return {
        # SDPA against itself: how far two identical calls differ in this run, the resolution
        # of the other ratios.
        "control_sdpa": F.scaled_dot_product_attention,
        "gta_so2": lambda q, k, v: multipos.attention(q, k, v, gta=grid_rep),
        "gta_so2_with_rep": with_rep,
        "gta_se3_so2": lambda q, k, v: multipos.attention(q, k, v, gta=multi_rep),
        "rope": lambda q, k, v: multipos.attention(q, k, v, rotary=tables),
    }


def _backward(fn: Callable[..., Tensor], *args: Tensor) -> None:
    fn(*args).sum().backward()


def _transform(rep: GTARepresentation, x: Tensor, kernel: bool) -> Callable[[], Tensor]:
    """``rho^{-T} x`` (attention's query transform) with the kernel on or off."""

    def run() -> Tensor:
        group_native._ENABLED = kernel
        try:
            return rep.apply_inverse_transpose(x)
        finally:
            group_native._ENABLED = True

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.processes > 1:
        median_of_processes(rerun_command(__file__, sys.argv[1:]), args.processes)
        return
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(BATCH, HEADS, TOKENS, HEAD_DIM, generator=g) for _ in range(3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    sdpa: Callable[..., Tensor] = F.scaled_dot_product_attention
    cases = _cases(g)
    # Warm every path once (allocator, kernels, the complex tables) before any timing, so the
    # first case is not charged for the process's start-up.
    with torch.no_grad():
        for _ in range(5):
            sdpa(q, k, v)
            for fn in cases.values():
                fn(q, k, v)
    for case, fn in cases.items():
        runs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            ("forward_s", lambda f=fn: f(q, k, v), lambda: sdpa(q, k, v)),
            (
                "forward_backward_s",
                lambda f=fn: _backward(f, *leaves),
                lambda: _backward(sdpa, *leaves),
            ),
        ]
        for metric, ours, baseline in runs:
            ctx = torch.no_grad() if metric == "forward_s" else torch.enable_grad()
            with ctx:
                t_ours, t_base = time_alternating(ours, baseline, repeats=args.repeats, inner=3)
            emit(
                "gta",
                case,
                metric,
                t_ours,
                t_base,
                budget=BUDGET if case.startswith("gta") and metric == "forward_s" else None,
                shape=[BATCH, HEADS, TOKENS, HEAD_DIM],
                threads=1,
                transforms=TRANSFORMS,
                baseline_impl="torch.nn.functional.scaled_dot_product_attention (no positions)",
            )
    if group_native.available():
        # The transform alone: the compiled kernel against the torch operations it replaces.
        rep = _multiview_rep(torch.Generator().manual_seed(1))
        with torch.no_grad():
            kernel, ops = _transform(rep, q, True), _transform(rep, q, False)
            t_ours, t_base = time_alternating(kernel, ops, repeats=args.repeats, inner=3)
        emit(
            "gta",
            "transform_q_se3_so2",
            "forward_s",
            t_ours,
            t_base,
            budget=None,
            shape=[BATCH, HEADS, TOKENS, HEAD_DIM],
            threads=1,
            transforms="compiled kernel",
            baseline_impl="the torch operations (MULTIPOS_NATIVE=0)",
        )


if __name__ == "__main__":
    main()
