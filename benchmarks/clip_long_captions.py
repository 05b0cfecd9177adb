"""Demonstration (CPU, no downloads): which CLIP text-length upgrade reads an order-sensitive
detail at tokens 150-240, and which keeps the original tower's short-caption behaviour.

1. Pre-train a tiny CLIP from scratch at 77 tokens on rendered pairs of shapes: two shapes of
   one kind side by side in two different colours. Captions (at most 77 tokens) name the
   colours first, in left-to-right order, then the kind and filler: "the red circle is left
   of the blue circle . two circle shapes . <filler> ."; every batch holds mirror pairs.
2. Long captions keep the kind in the first sentence, then filler, then the same colour
   phrase with both colour words at tokens 150-240, then more filler. An image and its
   mirror image have captions with the same words in another order, so only a tower that
   reads the order of two words beyond token 150 can tell them apart. Test sets: 32 images
   (16 mirror pairs, 8 of each kind); chance R@1 3.1 %, kind-only ceiling 12.5 % (the
   original tower, which sees 77 tokens), word-bag ceiling 50 % (a reader that sees the
   colours but not their order).
3. Every method x recipe the command accepts (``linear``, ``kps``, ``rope`` with the default
   stages; ``--recipe long-clip`` with ``kps`` and ``linear``; ``--recipe tulip`` with
   ``rope``), options settled exactly as ``multipos-clip-upgrade`` does; learning rates,
   warm-ups and step counts are the toy's own and the same for every variant. Stage 1
   distils on short captions (at most 77 tokens, the pre-training style), stage 2 trains on
   (image, long caption) pairs.
4. Measured per variant and seed: long-caption recall@1, order accuracy on mirror pairs
   (the true caption scores above its mirror, both directions; chance 50 %), and
   short-caption preservation: mean cosine to the original tower's embeddings on captions of
   at most 77 tokens, and short-caption text->image recall@1 against the original's.

Prints one JSON line per (method, recipe, seed), one summary line per variant (mean and
sample std over seeds), and a table. ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

from multipos.clip import (
    DistInfo,
    StageConfig,
    distill_text_tower,
    finetune_long_captions,
    retrieval_recall,
    short_caption_preservation,
    upgrade_text_context,
)
from multipos.clip.evaluation import encode_images, encode_texts
from multipos.clip.upgrade_cli import build_parser
from multipos.clip.upgrade_options import prepare_finetune, settle_options

BENCH = "clip_long_captions"
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (240, 230, 40),
    "purple": (150, 50, 200),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross")
FILLER = [
    "the",
    "picture",
    "was",
    "taken",
    "on",
    "a",
    "quiet",
    "afternoon",
    "and",
    "shows",
    "a",
    "simple",
    "scene",
    "with",
    "a",
    "plain",
    "dark",
    "background",
    "nothing",
    "else",
    "is",
    "visible",
    "around",
    "it",
    "and",
    "the",
    "lighting",
    "is",
    "even",
    "across",
    "the",
    "frame",
    "there",
    "is",
    "no",
    "text",
    "no",
    "border",
    "and",
    "no",
    "other",
    "object",
    "in",
    "view",
    "the",
    "camera",
    "was",
    "held",
    "still",
]
#: (method, recipe) pairs, every combination ``multipos-clip-upgrade`` accepts.
VARIANTS = (
    ("linear", "default"),
    ("linear", "long-clip"),
    ("kps", "default"),
    ("kps", "long-clip"),
    ("rope", "default"),
    ("rope", "tulip"),
)
CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
LENGTH = 248
#: Token positions of the colour words in long captions.
DETAIL = (150, 240)
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)
Kind = tuple[str, str, str]  # (shape, left colour, right colour)
KINDS: list[Kind] = [(s, a, b) for s in SHAPES for a in COLOURS for b in COLOURS if a != b]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int], fill: Any) -> None:
    x0, y0, size = box
    if shape == "circle":
        draw.ellipse((x0, y0, x0 + size, y0 + size), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x0 + size, y0 + size), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y0 + size), (x0 + size, y0 + size), (x0 + size // 2, y0)], fill=fill)
    else:
        third = size // 3
        draw.rectangle((x0 + third, y0, x0 + 2 * third, y0 + size), fill=fill)
        draw.rectangle((x0, y0 + third, x0 + size, y0 + 2 * third), fill=fill)


def render(kind: Kind, g: torch.Generator) -> torch.Tensor:
    """A 32x32 image: the left colour's shape in the left half, the right one's in the right
    half, random sizes and positions; normalised ``(3, 32, 32)``."""
    shape, left, right = kind
    image = Image.new("RGB", (32, 32), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for colour, x_min in ((left, 0), (right, 16)):
        size = int(torch.randint(8, 13, (1,), generator=g))
        x0 = x_min + int(torch.randint(0, 16 - size, (1,), generator=g))
        y0 = int(torch.randint(0, 32 - size, (1,), generator=g))
        draw_shape(draw, shape, (x0, y0, size), COLOURS[colour])
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    # (H * W * 3,) -> (3, H, W)
    pixels = pixels.view(32, 32, 3).permute(2, 0, 1).float() / 255
    return (pixels - MEAN) / STD


def filler(words: int, g: torch.Generator) -> str:
    picks = torch.randint(len(FILLER), (words,), generator=g)
    return " ".join(FILLER[int(i)] for i in picks)


def detail(kind: Kind) -> str:
    shape, left, right = kind
    return f"the {left} {shape} is left of the {right} {shape} ."


def short_caption(kind: Kind, g: torch.Generator) -> str:
    """At most ~60 tokens, the ordered colours first (as short captions put the salient
    detail early), then the kind and filler."""
    words = int(torch.randint(0, 45, (1,), generator=g))
    return f"{detail(kind)} two {kind[0]} shapes . {filler(words, g)} ."


def long_caption(kind: Kind, g: torch.Generator) -> str:
    """The kind first; both colour words at tokens 150-240; filler after them."""
    # 1 start + 4 ("two <shape> shapes .") + filler + "." puts "the" of the detail at
    # 6 + words, its colours at +1 and +7 (every word here is one BPE token).
    words = int(torch.randint(DETAIL[0] - 7, DETAIL[1] - 13, (1,), generator=g))
    after = int(torch.randint(0, LENGTH - 18 - words, (1,), generator=g))
    return f"two {kind[0]} shapes . {filler(words, g)} . {detail(kind)} {filler(after, g)} ."


def random_pairs(
    count: int, g: torch.Generator, captioner: Callable[[Kind, torch.Generator], str]
) -> tuple[torch.Tensor, list[str]]:
    """``count`` (image, caption) pairs of random kinds; items ``2i`` and ``2i + 1`` are mirror
    images of each other."""
    kinds: list[Kind] = []
    for i in torch.randint(len(KINDS), (count // 2,), generator=g).tolist():
        shape, left, right = KINDS[i]
        kinds += [(shape, left, right), (shape, right, left)]
    return torch.stack([render(k, g) for k in kinds]), [captioner(k, g) for k in kinds]


def test_set(g: torch.Generator) -> tuple[torch.Tensor, list[str], list[str], list[int]]:
    """32 images: 4 mirror pairs of each shape; long and short captions; mirror indices."""
    kinds: list[Kind] = []
    for shape in SHAPES:
        colour_pairs = [(a, b) for a in COLOURS for b in COLOURS if a < b]
        for j in torch.randperm(len(colour_pairs), generator=g)[:4].tolist():
            a, b = colour_pairs[j]
            kinds += [(shape, a, b), (shape, b, a)]
    mirror = [i ^ 1 for i in range(len(kinds))]
    images = torch.stack([render(k, g) for k in kinds])
    return images, [long_caption(k, g) for k in kinds], [short_caption(k, g) for k in kinds], mirror


def pretrain(model: Any, images: torch.Tensor, tokens: torch.Tensor, args: Any, seed: int) -> float:
    """Plain CLIP training from scratch (both towers), symmetric InfoNCE; last-20 mean loss."""
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    steps = args.pretrain_steps
    for step in range(steps):
        # Whole mirror pairs in every batch: the hard negatives that teach word order.
        pairs = torch.randperm(images.shape[0] // 2, generator=g)[: args.batch_size // 2]
        idx = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        for group in opt.param_groups:
            warm = min(1.0, (step + 1) / max(1, steps // 20))
            group["lr"] = args.pretrain_lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        img_f, txt_f, scale = model(images[idx], tokens[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return sum(losses[-20:]) / len(losses[-20:])


def scores(model: Any, tests: Sequence[Any], tokenizer: Any, caption: int) -> dict[str, float]:
    """Recall@1 (both directions) and mirror-pair order accuracy, averaged over test sets."""
    out: dict[str, float] = {"t2i_r1": 0.0, "i2t_r1": 0.0, "order_acc": 0.0}
    for test in tests:
        image_f = encode_images(model, test[0])
        text_f = encode_texts(model, tokenizer(test[caption]))
        recall = retrieval_recall(image_f, text_f, ks=(1,))
        sim = text_f @ image_f.T  # (captions, images)
        idx = torch.arange(sim.shape[0])
        mirror = torch.tensor(test[3])
        right = sim[idx, idx]
        order = 0.5 * ((right > sim[idx, mirror]).float() + (right > sim[mirror, idx]).float())
        out["t2i_r1"] += recall["t2i_r1"] / len(tests)
        out["i2t_r1"] += recall["i2t_r1"] / len(tests)
        out["order_acc"] += 100.0 * float(order.mean()) / len(tests)
    return out


def settled(method: str, recipe: str) -> argparse.Namespace:
    """The options ``multipos-clip-upgrade --method M [--recipe R]`` would run with."""
    argv = ["--model", "unused", "--out", "unused", "--method", method]
    if recipe != "default":
        argv += ["--recipe", recipe]
    if recipe != "long-clip":  # the default stages and TULIP distil first
        argv += ["--distill-data", "short captions"]
    return settle_options(build_parser().parse_args(argv))


def run_variant(
    original: Any, method: str, recipe: str, data: dict[str, Any], args: Any, seed: int
) -> dict[str, Any]:
    """Upgrade a copy of ``original``, train it with the settled options, measure it."""
    opts = settled(method, recipe)
    model = upgrade_text_context(
        copy.deepcopy(original),
        method,
        LENGTH,
        keep=opts.keep if opts.keep is not None else 20,
        base=opts.rope_base or 10000.0,
        layout=opts.rope_layout or "interleaved",
    )
    info, result = DistInfo(), {}
    quiet = {"progress": False, "info": info}

    def stage(steps: int, lr: float, weight_decay: float) -> StageConfig:
        # The toy's own schedule, the same for every variant: 10 % warm-up, no checkpoints.
        return StageConfig(
            steps=steps,
            batch_size=args.batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup=steps // 10,
            checkpoint_every=0,
            seed=seed,
        )

    if opts.distill_data is not None:
        distill_text_tower(
            original,
            model,
            data["distill"],
            data["tok77"],
            stage(args.distill_steps, args.distill_lr, opts.distill_weight_decay),
            loss=opts.distill_loss,
            **quiet,
        )
        result["stage1"] = scores(model, data["tests"], data["tok248"], 1)
    prepare_finetune(opts, model, original)
    finetune_long_captions(
        model,
        data["pairs"],
        None,
        None,
        stage(args.finetune_steps, args.finetune_lr, opts.finetune_weight_decay),
        lock_image=opts.lock_image,
        train_token_embedding=opts.train_token_embedding,
        long_weight=opts.long_weight,
        short_weight=opts.short_weight,
        short_image=opts.short_image,
        pca_dim=opts.pca_dim,
        label_smoothing=opts.label_smoothing,
        frozen_rows=opts.frozen_rows or 0,
        **quiet,
    )
    result["long"] = scores(model, data["tests"], data["tok248"], 1)
    result["short"] = scores(model, data["tests"], data["tok248"], 2)
    result["short_cos"] = short_caption_preservation(original, model, data["short_ids"])[
        "mean_cosine"
    ]
    return result


def prepare(args: Any, seed: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Data of one seed, the pre-trained original tower and its own scores."""
    g = torch.Generator().manual_seed(seed)
    tok77 = open_clip.get_tokenizer("ViT-B-32", context_length=77)
    tok248 = open_clip.get_tokenizer("ViT-B-32", context_length=LENGTH)
    pre_images, pre_texts = random_pairs(args.pretrain_items, g, short_caption)
    long_images, long_texts = random_pairs(args.finetune_items, g, long_caption)
    tests = [test_set(g) for _ in range(args.test_sets)]
    data = {
        "tok77": tok77,
        "tok248": tok248,
        "distill": [short_caption(KINDS[i % len(KINDS)], g) for i in range(args.distill_items)],
        "pairs": torch.utils.data.TensorDataset(long_images, tok248(long_texts)),
        "tests": tests,
        "short_ids": tok77([c for t in tests for c in t[2]]),
    }
    torch.manual_seed(seed)
    original = open_clip.CLIP(**copy.deepcopy(CFG))
    loss = pretrain(original, pre_images, tok77(pre_texts), args, seed)
    base = {
        "long": scores(original, tests, tok77, 1),
        "short": scores(original, tests, tok77, 2),
        "pretrain_loss": loss,
    }
    return original, data, base


def detail_positions(tests: Sequence[Any], tokenizer: Any) -> tuple[int, int]:
    """First and last token position of a colour word in the long test captions."""
    colour_ids = {int(tokenizer([c])[0, 1]) for c in COLOURS}
    found = [
        j
        for t in tests
        for ids in tokenizer(t[1])
        for j, v in enumerate(ids.tolist())
        if v in colour_ids
    ]
    return min(found), max(found)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run (seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--pretrain-items", type=int, default=4000)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--distill-steps", type=int, default=50)
    parser.add_argument("--distill-items", type=int, default=2000)
    parser.add_argument("--distill-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--finetune-items", type=int, default=3000)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-sets", type=int, default=4)
    parser.add_argument(
        "--variants",
        default=",".join(f"{m}/{r}" for m, r in VARIANTS),
        help="comma-separated method/recipe pairs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.test_sets, args.batch_size = 2, 1, 8
        args.pretrain_steps, args.distill_steps, args.finetune_steps = 4, 2, 2
        args.pretrain_items, args.distill_items, args.finetune_items = 64, 16, 16
    variants = [tuple(v.split("/")) for v in args.variants.split(",")]
    for variant in variants:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {'/'.join(variant)}; choose from {VARIANTS}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in variants}
    bases: list[dict[str, Any]] = []
    untrained: dict[str, list[dict[str, float]]] = {}
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        original, data, base = prepare(args, seed)
        bases.append(base)
        if seed == 0:
            low, high = detail_positions(data["tests"], data["tok248"])
            print(f"long captions: colour words at tokens {low}-{high} (original context 77)")
        print(
            f"seed {seed}: pre-training loss {base['pretrain_loss']:.3f}; original @77 long "
            f"t2i R@1 {base['long']['t2i_r1']:.1f}, order {base['long']['order_acc']:.1f}; "
            f"short t2i R@1 {base['short']['t2i_r1']:.1f}, order "
            f"{base['short']['order_acc']:.1f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        for method in sorted({m for m, _ in variants}):
            plain = upgrade_text_context(copy.deepcopy(original), method, LENGTH)
            untrained.setdefault(method, []).append(scores(plain, data["tests"], data["tok248"], 1))
        for method, recipe in variants:
            t0 = time.perf_counter()
            r = run_variant(original, method, recipe, data, args, seed)
            r["seconds"] = time.perf_counter() - t0
            results[(method, recipe)].append(r)
            emit(
                BENCH,
                f"{method}/{recipe}",
                "long_t2i_recall@1",
                r["long"]["t2i_r1"],
                base["long"]["t2i_r1"],
                seed=seed,
                method=method,
                recipe=recipe,
                long_i2t_r1=r["long"]["i2t_r1"],
                long_order_acc=r["long"]["order_acc"],
                stage1_long_t2i_r1=r["stage1"]["t2i_r1"] if "stage1" in r else None,
                stage1_long_order_acc=r["stage1"]["order_acc"] if "stage1" in r else None,
                short_cos=r["short_cos"],
                short_t2i_r1=r["short"]["t2i_r1"],
                short_t2i_r1_original=base["short"]["t2i_r1"],
                short_order_acc=r["short"]["order_acc"],
                seconds=round(r["seconds"], 1),
            )
    summary_rows = []
    keys = (
        ("long", "t2i_r1"),
        ("long", "order_acc"),
        ("short_cos", None),
        ("short", "t2i_r1"),
        ("short", "order_acc"),
    )
    for method, recipe in variants:
        runs = results[(method, recipe)]
        stats = {
            f"{a}_{b}" if b else a: mean_std([r[a][b] if b else r[a] for r in runs])
            for a, b in keys
        }
        base_mean = statistics.fmean(b["long"]["t2i_r1"] for b in bases)
        mean, std = stats["long_t2i_r1"]
        emit(
            BENCH,
            f"{method}/{recipe}",
            "long_t2i_recall@1_mean",
            mean,
            base_mean,
            std=std,
            seeds=len(runs),
            method=method,
            recipe=recipe,
            **{f"{k}_mean": v[0] for k, v in stats.items() if k != "long_t2i_r1"},
            **{f"{k}_std": v[1] for k, v in stats.items() if k != "long_t2i_r1"},
            short_t2i_r1_original_mean=statistics.fmean(b["short"]["t2i_r1"] for b in bases),
        )
        summary_rows.append((f"{method}/{recipe}", stats))
    print_table(args, bases, untrained, summary_rows)
    print(f"machine: {machine()}; wall time {time.perf_counter() - start:.0f} s")


def print_table(
    args: Any,
    bases: Sequence[dict[str, Any]],
    untrained: dict[str, list[dict[str, float]]],
    rows: Sequence[tuple[str, dict[str, tuple[float, float]]]],
) -> None:
    print()
    print(
        f"Mean +- std over {args.seeds} seeds; {args.test_sets} test sets of 32 images; "
        "long R@1 chance 3.1, kind-only 12.5, word-bag 50; order chance 50."
    )
    header = (
        f"{'tower':<22}{'long t2i R@1':>15}{'long order':>15}{'short cos':>15}"
        f"{'short t2i R@1':>15}{'short order':>15}"
    )
    print(header)
    print("-" * len(header))

    def cell(values: Sequence[float], digits: int = 1) -> str:
        mean, std = mean_std(values)
        return f"{mean:.{digits}f} +- {std:.{digits}f}".rjust(15)

    print(
        f"{'original @77':<22}{cell([b['long']['t2i_r1'] for b in bases])}"
        f"{cell([b['long']['order_acc'] for b in bases])}{'(ref)':>15}"
        f"{cell([b['short']['t2i_r1'] for b in bases])}"
        f"{cell([b['short']['order_acc'] for b in bases])}"
    )
    for method, runs in sorted(untrained.items()):
        print(
            f"{method + ' untrained':<22}{cell([r['t2i_r1'] for r in runs])}"
            f"{cell([r['order_acc'] for r in runs])}"
        )

    def fmt(stats: dict[str, tuple[float, float]], key: str, digits: int = 1) -> str:
        mean, std = stats[key]
        return f"{mean:.{digits}f} +- {std:.{digits}f}".rjust(15)

    for name, stats in rows:
        print(
            f"{name:<22}{fmt(stats, 'long_t2i_r1')}{fmt(stats, 'long_order_acc')}"
            f"{fmt(stats, 'short_cos', 3)}{fmt(stats, 'short_t2i_r1')}"
            f"{fmt(stats, 'short_order_acc')}"
        )


if __name__ == "__main__":
    main()
