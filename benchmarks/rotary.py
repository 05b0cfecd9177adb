"""2-D rotary tables: build and apply to q and k, against timm's RotaryEmbeddingCat.

Both sides build the cos/sin tables of a ViT-S head (64 channels, 6 heads) for the whole grid
and rotate q and k, from scratch on every call (no cached table), on 14x14 and 64x64 grids,
in both channel layouts. The two implementations give the same tables (checked below).

    python benchmarks/rotary.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, time_alternating

from multipos import RotaryEmbedding, apply_rotary, build_grid_positions
from multipos.rotary import Layout

HEADS, HEAD_DIM = 6, 64  # ViT-S/16
Pair = tuple[torch.Tensor, torch.Tensor]


def _ours(rope: RotaryEmbedding, grid: tuple[int, int], q: Tensor, k: Tensor) -> Pair:
    tables = rope(build_grid_positions(grid).patches)  # carries the layout it was built for
    cos, sin, layout = tables.cos, tables.sin, tables.layout
    return apply_rotary(q, cos, sin, layout), apply_rotary(k, cos, sin, layout)


def _timm(rope: Any, grid: tuple[int, int], half: bool, q: Tensor, k: Tensor) -> Pair:
    from timm.layers import apply_rot_embed_cat

    emb = rope.get_embed(list(grid))
    return apply_rot_embed_cat(q, emb, half=half), apply_rot_embed_cat(k, emb, half=half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    from timm.layers import RotaryEmbeddingCat

    torch.manual_seed(0)
    for grid, batch in (((14, 14), 8), ((64, 64), 2)):
        tokens = grid[0] * grid[1]
        q = torch.randn(batch, HEADS, tokens, HEAD_DIM)
        k = torch.randn(batch, HEADS, tokens, HEAD_DIM)
        layouts: tuple[Layout, ...] = ("interleaved", "half")
        for layout in layouts:
            ours_rope = RotaryEmbedding(HEAD_DIM, num_axes=2, base=100.0, layout=layout)
            timm_rope = RotaryEmbeddingCat(
                HEAD_DIM, in_pixels=False, temperature=100.0, rotate_half=layout == "half"
            )
            half = layout == "half"

            ours = partial(_ours, ours_rope, grid, q, k)
            baseline = partial(_timm, timm_rope, grid, half, q, k)
            for a, b in zip(ours(), baseline(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            with torch.inference_mode():
                t_ours, t_base = time_alternating(ours, baseline, repeats=args.repeats)
            emit(
                "rotary",
                f"grid{grid[0]}x{grid[1]}_{layout}",
                "seconds_per_call",
                t_ours,
                t_base,
                batch=batch,
                heads=HEADS,
                head_dim=HEAD_DIM,
                baseline_impl="timm RotaryEmbeddingCat.get_embed + apply_rot_embed_cat",
            )


if __name__ == "__main__":
    main()
