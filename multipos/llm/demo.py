"""`multipos demo` hook for the language-model part: V2PE positions of an interleaved sequence."""

from __future__ import annotations

import json
import pathlib

import torch

from multipos.llm.plot import v2pe_positions_figure
from multipos.llm.v2pe import V2PE_TRAINING_DELTAS, v2pe_positions
from multipos.plot import available, save

#: The demo sequence: text runs and images of 1-3 tiles (64 visual tokens a tile, so that the
#: picture stays readable; InternVL uses 256).
DEMO_SEGMENTS: tuple[tuple[str, int], ...] = (
    ("text", 24),
    ("image", 2),
    ("text", 16),
    ("image", 1),
    ("text", 20),
    ("image", 3),
    ("text", 12),
)
DEMO_TOKENS_PER_TILE = 64
DEMO_DELTAS: tuple[float, ...] = (1.0, 0.25, 1 / 16)


def run_demo(out: pathlib.Path) -> None:
    """Print how V2PE compresses the positions of an interleaved sequence.

    For the increments 1, 1/4 and 1/16: the largest position of :data:`DEMO_SEGMENTS`, and
    that ``delta = 1`` gives ``arange(L)``; one per-image draw of V2PE's training mode.
    Writes ``out / "llm" / "llm_demo.json"`` and, with matplotlib,
    ``out / "llm" / "v2pe_positions.png"`` (:func:`multipos.llm.plot.v2pe_positions_figure`).
    """
    segments = list(DEMO_SEGMENTS)
    per_delta = {d: v2pe_positions(segments, d, DEMO_TOKENS_PER_TILE) for d in DEMO_DELTAS}
    length = per_delta[1.0].numel()
    identity = bool(torch.equal(per_delta[1.0], torch.arange(length, dtype=torch.float32)))
    largest = {f"{d:g}": float(p.max()) for d, p in per_delta.items()}
    drawn = v2pe_positions(
        segments,
        V2PE_TRAINING_DELTAS,
        DEMO_TOKENS_PER_TILE,
        generator=torch.Generator().manual_seed(0),
    )
    images = sum(count for kind, count in segments if kind == "image")
    print(
        f"  V2PE on {length} tokens (3 images, {images} tiles of {DEMO_TOKENS_PER_TILE} visual "
        "tokens): largest position " + ", ".join(f"{v:g} at delta {k}" for k, v in largest.items())
    )
    print(f"  delta = 1 gives arange(L): {identity}")
    print(
        f"  training mode (delta drawn per image from {len(V2PE_TRAINING_DELTAS)} values, "
        f"seed 0): largest position {float(drawn.max()):g}"
    )
    target = out / "llm"
    target.mkdir(parents=True, exist_ok=True)
    (target / "llm_demo.json").write_text(
        json.dumps(
            {
                "segments": segments,
                "tokens_per_tile": DEMO_TOKENS_PER_TILE,
                "tokens": length,
                "largest_position": largest,
                "delta_1_is_arange": identity,
                "training_mode_largest_position": float(drawn.max()),
            },
            indent=2,
        )
    )
    if available():
        fig = v2pe_positions_figure(segments, DEMO_DELTAS, tokens_per_tile=DEMO_TOKENS_PER_TILE)
        picture = save(fig, target / "v2pe_positions.png")
        print(f"  position against token index for delta 1, 1/4, 1/16: {picture}")
