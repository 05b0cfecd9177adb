"""Synthetic long-context test of V2PE (CPU, no downloads): interleaved image-text retrieval
past the trained position range.

"V2PE: Improving Multimodal Long-Context Capability of Vision-Language Models with Variable
Visual Position Encoding" (Ge et al., 2024, arXiv:2412.09616) claims that a model whose visual
tokens advance the position by a fraction delta < 1 keeps working far past the position range
it was trained on, while delta = 1 collapses once positions leave that range; training draws
delta per image from a set (the official ``v2pe_rnd`` mode). This script tests the claim on a
toy that a CPU trains in minutes.

Task. A sequence holds ``I`` "images" and short text runs: each image is ``tiles x 8`` visual
tokens, continuous 16-d features = the image's colour (one of 64 random palette vectors, all
colours of a sequence distinct) + Gaussian noise (std 0.5); after each image a text run of 2
tokens, its label (one of 16) and a filler token. Then one question token per image, in random
order, each naming a colour (its clean palette vector); the answer to each is the label of the
image with that colour (chance 1/16). Solving it needs positions: a label token must know which
image precedes it. An auxiliary loss (weight 1, both modes) asks each label token for the colour
of the image just before it, which makes the binding learnable in a few hundred steps.

Model. A causal transformer (3 layers, width 64, 4 heads of 16 channels, pre-norm, GELU MLP)
whose attention is :func:`multipos.attention` with :class:`multipos.RotaryEmbedding` (base
10000) of the float positions of :func:`multipos.llm.v2pe_positions`.

Training (short): 8 images of 1 tile (88 tokens; with delta = 1 the largest position is 87,
the trained window). Two modes, the same model, initialisation, data stream, steps (600, AdamW,
one-cycle lr 3e-3, batch 32) and seed; only the positions differ:
``delta=1`` (ordinary positions) and ``v2pe`` (delta drawn per image from
:data:`multipos.llm.V2PE_TRAINING_DELTAS` = {1/256, ..., 1/2, 1}, the paper's set).

Test: lengths 1x (the trained one), 2x / 4x / 8x tiles per image (8 images of 16 / 32 / 64
visual tokens, up to 536 tokens) and 2x / 4x images (16 / 32 images of 8 tokens), each with
delta in {1, 1/4, 1/16}; accuracy over the question tokens, the same test sequences for both
modes. 3 seeds.

Prints one JSON line per (seed, train mode, test delta, length) with the accuracy (``ours``),
the same model's accuracy at the trained length with delta = 1 (``baseline``) and their ratio;
one summary line per (train mode, test delta, length) with the mean and std over seeds; one
line per (length, test delta) with the largest position (``ours``) against the trained window
(``baseline``); then a table. ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

import multipos
from multipos.llm import V2PE_TRAINING_DELTAS, v2pe_positions

BENCH = "v2pe_long_context"
FEATURES, PALETTE, LABELS, FILLERS = 16, 64, 16, 8
TOKENS_PER_TILE, TEXT_RUN, TRAIN_IMAGES = 8, 2, 8
VISUAL_ID, QUESTION_ID = LABELS + FILLERS, LABELS + FILLERS + 1
NOISE = 0.5
TRAIN_MODES: dict[str, float | tuple[float, ...]] = {
    "delta=1": 1.0,
    "v2pe": V2PE_TRAINING_DELTAS,
}
TEST_DELTAS: dict[str, float] = {"1": 1.0, "1/4": 0.25, "1/16": 1 / 16}
# name -> (images, tiles per image)
LENGTHS: dict[str, tuple[int, int]] = {
    "1x": (TRAIN_IMAGES, 1),
    "2x tiles": (TRAIN_IMAGES, 2),
    "4x tiles": (TRAIN_IMAGES, 4),
    "8x tiles": (TRAIN_IMAGES, 8),
    "2x images": (2 * TRAIN_IMAGES, 1),
    "4x images": (4 * TRAIN_IMAGES, 1),
}


@dataclass
class Batch:
    """One batch of sequences: inputs, positions and the answers to the question tokens."""

    features: Tensor  # (B, L, FEATURES): visual features, question colours, zeros for text
    ids: Tensor  # (B, L): token ids (VISUAL_ID on visual tokens)
    positions: Tensor  # (B, L) float32 V2PE positions
    answers: Tensor  # (B, Q): labels of the queried images, Q = images
    colours: Tensor  # (B, I): palette index of every image


def segments(images: int, tiles: int) -> list[tuple[str, int]]:
    """The sequence layout: ``images x (image, text run)``, then one question per image."""
    return [("image", tiles), ("text", TEXT_RUN)] * images + [("text", images)]


def make_batch(
    size: int,
    images: int,
    tiles: int,
    delta: float | Sequence[float],
    palette: Tensor,
    data: torch.Generator,
    deltas: torch.Generator,
) -> Batch:
    """``size`` random sequences (see the module docstring); ``deltas`` draws V2PE's per-image
    increments when ``delta`` is a set, so the data stream does not depend on ``delta``."""
    visual = tiles * TOKENS_PER_TILE
    colours = torch.rand(size, PALETTE, generator=data).argsort(-1)[:, :images]  # (B, I)
    labels = torch.randint(LABELS, (size, images), generator=data)  # (B, I)
    noise = NOISE * torch.randn(size, images, visual, FEATURES, generator=data)
    pixels = palette[colours][:, :, None, :] + noise  # (B, I, V, F)
    fillers = LABELS + torch.randint(FILLERS, (size, images, TEXT_RUN - 1), generator=data)
    text = torch.cat([labels[..., None], fillers], dim=-1)  # (B, I, TEXT_RUN)
    order = torch.rand(size, images, generator=data).argsort(-1)  # question order, (B, I)
    features = torch.cat([pixels, torch.zeros(size, images, TEXT_RUN, FEATURES)], dim=2)
    ids = torch.cat([torch.full((size, images, visual), VISUAL_ID), text], dim=2)
    features = torch.cat(  # (B, I, V + T, F) -> (B, L, F)
        [features.reshape(size, -1, FEATURES), palette[torch.gather(colours, 1, order)]], dim=1
    )
    ids = torch.cat([ids.reshape(size, -1), torch.full((size, images), QUESTION_ID)], dim=1)
    layout = segments(images, tiles)
    positions = torch.stack(
        [
            v2pe_positions(layout, delta=delta, tokens_per_tile=TOKENS_PER_TILE, generator=deltas)
            for _ in range(size)
        ]
    )
    return Batch(features, ids, positions, torch.gather(labels, 1, order), colours)


class Block(nn.Module):
    """Pre-norm causal attention with rotary positions, then an MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor, rotary: multipos.RotaryTables) -> Tensor:
        b, length, width = x.shape
        # (B, L, 3W) -> (3, B, H, L, W/H)
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = multipos.attention(q, k, v, rotary=rotary, is_causal=True)
        x = x + self.out(att.transpose(1, 2).reshape(b, length, width))  # (B, H, L, D) -> (B, L, W)
        return x + self.mlp(self.norm2(x))


class RetrievalModel(nn.Module):
    """Tiny causal transformer over visual features and text ids, rotary float positions."""

    def __init__(self, width: int = 64, heads: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.visual = nn.Linear(FEATURES, width)
        self.tokens = nn.Embedding(QUESTION_ID + 1, width)
        self.rope = multipos.RotaryEmbedding(width // heads)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, LABELS)
        self.colour_head = nn.Linear(width, PALETTE)  # auxiliary, used in training only

    def hidden(self, batch: Batch) -> Tensor:
        """Final normalised states, ``(B, L, W)``."""
        x = self.visual(batch.features) + self.tokens(batch.ids)
        cos, sin = self.rope(batch.positions.unsqueeze(0))  # (1, B, L) -> (B, L, D)
        rotary = multipos.RotaryTables(cos[:, None], sin[:, None], self.rope.layout)  # (B,1,L,D)
        for block in self.blocks:
            x = block(x, rotary)
        return self.norm(x)

    def forward(self, batch: Batch) -> Tensor:
        """Label logits at the question tokens, ``(B, Q, LABELS)``."""
        return self.head(self.hidden(batch)[:, -batch.answers.shape[1] :])


def label_slots(images: int, tiles: int) -> Tensor:
    """Token index of every image's label (the first token after the image), ``(I,)``."""
    visual = tiles * TOKENS_PER_TILE
    return torch.arange(images) * (visual + TEXT_RUN) + visual


def train(mode: str, seed: int, args: argparse.Namespace, palette: Tensor) -> RetrievalModel:
    """Train one model at the short length; the same init and data for every mode."""
    torch.manual_seed(seed)
    model = RetrievalModel()
    data = torch.Generator().manual_seed(seed)
    deltas = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    slots = label_slots(TRAIN_IMAGES, 1)
    start = time.perf_counter()
    for step in range(args.steps):
        batch = make_batch(args.batch, TRAIN_IMAGES, 1, TRAIN_MODES[mode], palette, data, deltas)
        states = model.hidden(batch)
        logits = model.head(states[:, -TRAIN_IMAGES:])  # (B, Q, LABELS)
        loss = F.cross_entropy(logits.reshape(-1, LABELS), batch.answers.reshape(-1))
        if args.aux_weight:
            # Auxiliary: each label token names the colour of the image just before it.
            colour = model.colour_head(states[:, slots])  # (B, I, PALETTE)
            aux = F.cross_entropy(colour.reshape(-1, PALETTE), batch.colours.reshape(-1))
            loss = loss + args.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            acc = (logits.argmax(-1) == batch.answers).float().mean().item()
            print(
                f"  seed {seed} {mode}: step {step + 1}/{args.steps} loss {loss.item():.3f} "
                f"train acc {acc:.2f} ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return model.eval()


@torch.no_grad()
def accuracy(model: RetrievalModel, batches: Sequence[Batch]) -> float:
    hits = sum(int((model(b).argmax(-1) == b.answers).sum()) for b in batches)
    return 100.0 * hits / sum(b.answers.numel() for b in batches)


def test_sets(
    seed: int, args: argparse.Namespace, palette: Tensor
) -> dict[tuple[str, str], list[Batch]]:
    """The test batches of every (length, test delta); the same for both training modes."""
    out = {}
    for length, (images, tiles) in LENGTHS.items():
        for name, delta in TEST_DELTAS.items():
            data = torch.Generator().manual_seed(10_000 + seed)  # same sequences for each delta
            out[(length, name)] = [
                make_batch(args.eval_batch, images, tiles, delta, palette, data, data)
                for _ in range(args.eval_batches)
            ]
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--aux-weight", type=float, default=1.0, help="weight of the label-colour auxiliary loss"
    )
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--eval-batches", type=int, default=4)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.batch, args.eval_batch, args.eval_batches = 2, 3, 4, 2, 1
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    window = int(v2pe_positions(segments(TRAIN_IMAGES, 1), 1.0, TOKENS_PER_TILE).max())
    largest: dict[tuple[str, str], int] = {}
    for length, (images, tiles) in LENGTHS.items():
        for name, delta in TEST_DELTAS.items():
            top = int(v2pe_positions(segments(images, tiles), delta, TOKENS_PER_TILE).max())
            largest[(length, name)] = top
            emit(
                BENCH,
                f"positions/length={length}/test_delta={name}",
                "max_position",
                top,
                window,
                length=length,
                test_delta=name,
                images=images,
                tiles=tiles,
                tokens=len(v2pe_positions(segments(images, tiles), 1.0, TOKENS_PER_TILE)),
            )
    results: dict[tuple[str, str, str], list[float]] = {}
    for seed in range(args.seeds):
        palette = torch.randn(PALETTE, FEATURES, generator=torch.Generator().manual_seed(seed))
        tests = test_sets(seed, args, palette)
        for mode in TRAIN_MODES:
            t0 = time.perf_counter()
            model = train(mode, seed, args, palette)
            scores = {key: accuracy(model, batches) for key, batches in tests.items()}
            base = scores[("1x", "1")]
            for (length, name), acc in scores.items():
                results.setdefault((mode, name, length), []).append(acc)
                emit(
                    BENCH,
                    f"train={mode}/test_delta={name}/length={length}",
                    "accuracy",
                    acc,
                    base,
                    seed=seed,
                    train_mode=mode,
                    test_delta=name,
                    length=length,
                    max_position=largest[(length, name)],
                    trained_window=window,
                    steps=args.steps,
                    seconds=round(time.perf_counter() - t0, 1),
                )
    for (mode, name, length), values in results.items():
        base_mean = statistics.fmean(results[(mode, "1", "1x")])
        mean, std = mean_std(values)
        emit(
            BENCH,
            f"train={mode}/test_delta={name}/length={length}",
            "accuracy_mean",
            mean,
            base_mean,
            std=std,
            seeds=len(values),
            train_mode=mode,
            test_delta=name,
            length=length,
            max_position=largest[(length, name)],
            trained_window=window,
        )
    print_table(args, results, largest, window)
    print(f"machine: {machine()}; wall time {time.perf_counter() - start:.0f} s")


def print_table(
    args: argparse.Namespace,
    results: dict[tuple[str, str, str], list[float]],
    largest: dict[tuple[str, str], int],
    window: int,
) -> None:
    print()
    print(
        f"Question accuracy (%), mean +- std over {args.seeds} seeds, {args.steps} training "
        f"steps at length 1x (trained window: positions 0..{window}); chance 6.25. "
        "[max position] per test delta."
    )
    header = f"{'train':<9}{'length':<11}" + "".join(
        f"{'delta=' + name:>24}" for name in TEST_DELTAS
    )
    print(header)
    print("-" * len(header))
    for mode in TRAIN_MODES:
        for length in LENGTHS:
            cells = []
            for name in TEST_DELTAS:
                mean, std = mean_std(results[(mode, name, length)])
                cell = f"{mean:5.1f} +- {std:4.1f} [{largest[(length, name)]:>4}]"
                cells.append(cell.rjust(24))
            print(f"{mode:<9}{length:<11}" + "".join(cells))


if __name__ == "__main__":
    main()
