"""Resolution generalisation of ViT position schemes: train at one resolution, test at larger.

Tests the claim of CPVT (Chu et al. 2021, arXiv:2102.10882) and RoPE-ViT (Heo et al. 2024,
arXiv:2403.13298): a learned absolute table interpolated to a new grid (timm's bicubic
resampling with ``dynamic_img_size=True``) degrades at resolutions not seen in training, while
the conditional encoding (PEG) and 2-D RoPE hold.

Task: scikit-learn's ``load_digits`` (8x8, 10 classes), each digit upscaled to 16x16 (pixel
duplication) and pasted at a random location on a black canvas, inputs standardised with the
training canvas's pixel mean and std. Training: 32x32 canvas, patch 4 (8x8 grid), a fresh
random placement of every training digit each epoch. Test: held-out digits
(``train_test_split``, ``random_state=0``, stratified 75/25) on 32x32 (1x), 48x48 (1.5x) and
64x64 (2x) canvases, the digit at the SAME pixel scale (16x16), 2 random placements per digit;
placements come from seeded ``torch.Generator`` s, identical for every scheme. No fine-tuning
at the new resolutions.

Placements are patch-aligned (offsets are multiples of 4 pixels): a digit always covers the
same 4x4 patch contents and only their grid positions change, which is what the position
schemes encode. With arbitrary pixel offsets (16 tokenisations of every digit) no model got
past ~78% train accuracy within this CPU budget, and an underfit model says nothing about
extrapolation.

Model: timm ``vit_tiny_patch16_multipos_224`` shrunk to embed 64, depth 4, 4 heads, MLP ratio
2, patch 4, 1 input channel, ``dynamic_img_size=True``, no class token, ``global_pool="avg"``
(mean of the patch tokens, then timm's ``fc_norm`` and ``head``). Two read-outs share
``fc_norm`` and ``head``:

* ``avg``: timm's own head, the mean over all patch tokens (background tokens of a larger
  canvas included);
* ``object``: the mean over the patch tokens inside the digit's 16x16 placement box only, so
  a larger background cannot dilute the effect.

The training loss is the mean of both read-outs' cross-entropies: a head trained on the
all-token mean alone reads the object tokens' mean at chance level even at the training
resolution (measured in a 30-epoch probe: 15% against 73% for ``avg``), because after global
attention the class evidence sits in the background tokens too. No class token, so both
read-outs use one head.

Schemes trained: ``ape`` (baseline: interpolated learned table), ``none``, ``ape+irpe``
(product/contextual on k), ``peg`` (after block 0), ``lff`` (``coords="unit"``),
``rope_axial_2d`` (base 100), ``rope_mixed``, each with the library defaults. Two more are
evaluated from already-trained weights (they equal their parent at the training grid, so
their 1x figures are the parent's): ``lff_reference`` (the ``lff`` weights with
``coords="reference"``, so a larger input extends the coordinates instead of interpolating
them) and ``rope_axial_2d_yarn`` (the ``rope_axial_2d`` weights with YaRN scaling, ``factor`` = the
resolution ratio, ``original_length`` = 8 patches).

Recipe, identical for every scheme: AdamW (lr 2e-3, weight decay 0.05, betas 0.9/0.99),
batch 32, linear warm-up over 5% of the steps then cosine decay per step, 40 epochs, 3 seeds
(seed = model initialisation and training placements; the test placements are fixed).
Measured: 27 minutes on 2 CPU cores shared with other jobs (~70 s per training run).

Output: one JSON line per (case, resolution, pooling) with ``ours`` the mean top-1 over
seeds, ``baseline`` the same metric of ``ape``, ``ratio`` = ours / baseline, ``retention`` =
ours / the case's own 1x figure, ``train_acc`` at the training resolution with that read-out;
then a table.

With ``--suite irpe`` the same recipe trains the iRPE paper's variants instead (``ape`` plus
``ape+irpe`` with bias or contextual mode, euclidean/quant/cross/product buckets, on k, and
contextual on q, k, v) and ends with one JSON line per ordering and resolution:
``contextual > bias`` and ``directed >= undirected``, as top-1 differences.

    python benchmarks/resolution_generalization.py [--seeds 3] [--epochs 40] [--quick]
        [--suite schemes|irpe]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, emit_row

BENCH = "resolution_generalization"
PATCH = 4
DIGIT = 16  # pixel size of a digit on the canvas (8x8 upscaled 2x)
TRAIN_CANVAS = 32
RESOLUTIONS: dict[str, int] = {"1x": 32, "1.5x": 48, "2x": 64}
POOLINGS = ("avg", "object")
BATCH = 32
LR = 2e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
TEST_PLACEMENTS = 2  # random placements per held-out digit and resolution
DATA_SEED = 0


@dataclass(frozen=True)
class Case:
    """A reported row: a trained scheme, or an evaluation-time variant of one."""

    name: str
    pos_scheme: str | tuple[str, ...]
    pos_cfg: dict[str, Any] = field(default_factory=dict)
    trained_as: str | None = None  # evaluate the weights of this case with ``pos_cfg``


TRAINED = [
    Case("ape", "ape"),
    Case("none", "none"),
    Case("ape+irpe", ("ape", "irpe")),
    Case("peg", "peg"),
    Case("lff", "lff"),  # coords="unit": a larger grid interpolates the coordinates
    Case("rope_axial_2d", "rope_axial_2d"),
    Case("rope_mixed", "rope_mixed"),
]
VARIANTS = [
    Case("lff_reference", "lff", {"lff": {"coords": "reference"}}, trained_as="lff"),
    Case(
        "rope_axial_2d_yarn",
        "rope_axial_2d",
        {"rope_axial_2d": {}},
        trained_as="rope_axial_2d",
    ),
]


# The iRPE paper's comparisons (Wu et al. 2021, arXiv:2107.14222, Tables 1-2): bias against
# contextual mode, undirected (euclidean, quant) against directed (cross, product) buckets, on
# k and on q, k, v (bias mode is undefined on v, so q, k, v is contextual only). All keep the
# absolute table, as the paper's DeiT models do; ``ape`` is the reference row.
IRPE_UNDIRECTED = ("euclidean", "quant")
IRPE_DIRECTED = ("cross", "product")
IRPE_SUITE = [Case("ape", "ape")] + [
    Case(
        f"irpe_{mode}_{method}_{on}",
        ("ape", "irpe"),
        {"irpe": {"method": method, "mode": mode, "on": on}},
    )
    for on, modes in (("k", ("bias", "contextual")), ("qkv", ("contextual",)))
    for mode in modes
    for method in IRPE_UNDIRECTED + IRPE_DIRECTED
]
SUITES = {"schemes": (TRAINED, VARIANTS), "irpe": (IRPE_SUITE, [])}


def irpe_orderings(
    results: dict[str, dict[tuple[str, str], list[float]]], pooling: str = "object"
) -> list[dict[str, Any]]:
    """The paper's two orderings from the iRPE suite's results, per resolution.

    ``contextual > bias``: mean over the four methods on k of contextual minus bias.
    ``directed >= undirected``: mean of cross/product minus mean of euclidean/quant, for
    each (mode, on) group. Differences are in top-1 points, seeds averaged first.
    """
    rows = []

    def mean(case: str, res: str) -> float:
        return statistics.fmean(results[case][(res, pooling)])

    methods = IRPE_UNDIRECTED + IRPE_DIRECTED
    for res in RESOLUTIONS:
        if not all(f"irpe_{m}_{x}_k" in results for m in ("bias", "contextual") for x in methods):
            continue
        ctx = statistics.fmean(mean(f"irpe_contextual_{m}_k", res) for m in methods)
        bias = statistics.fmean(mean(f"irpe_bias_{m}_k", res) for m in methods)
        rows.append(
            {
                "ordering": "contextual > bias (on k)",
                "resolution": res,
                "difference": ctx - bias,
                "holds": ctx > bias,
            }
        )
        for mode, on in (("bias", "k"), ("contextual", "k"), ("contextual", "qkv")):
            directed = statistics.fmean(mean(f"irpe_{mode}_{m}_{on}", res) for m in IRPE_DIRECTED)
            undirected = statistics.fmean(
                mean(f"irpe_{mode}_{m}_{on}", res) for m in IRPE_UNDIRECTED
            )
            rows.append(
                {
                    "ordering": f"directed >= undirected ({mode} on {on})",
                    "resolution": res,
                    "difference": directed - undirected,
                    "holds": directed >= undirected,
                }
            )
    return rows


def build_model(case: Case, *, img_size: int, pos_cfg: dict[str, Any] | None = None) -> Any:
    import timm

    import multipos.vision  # noqa: F401  (registers the models)

    scheme = case.pos_scheme if isinstance(case.pos_scheme, str) else list(case.pos_scheme)
    return timm.create_model(
        "vit_tiny_patch16_multipos_224",
        img_size=img_size,
        patch_size=PATCH,
        in_chans=1,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        num_classes=10,
        dynamic_img_size=True,
        class_token=False,
        global_pool="avg",
        pos_scheme=scheme,
        pos_cfg=pos_cfg if pos_cfg is not None else case.pos_cfg,
    )


def eval_model(case: Case, trained: Any, ratio: float) -> Any:
    """The model a case is evaluated with at resolution ``ratio`` (x the training canvas)."""
    if case.trained_as is None or ratio == 1.0:
        return trained  # variants equal their parent at the training grid
    cfg: dict[str, Any] = {k: dict(v) for k, v in case.pos_cfg.items()}
    if case.name == "rope_axial_2d_yarn":
        grid = TRAIN_CANVAS // PATCH
        cfg["rope_axial_2d"]["scaling"] = {"kind": "yarn", "factor": ratio, "original_length": grid}
    model = build_model(case, img_size=TRAIN_CANVAS, pos_cfg=cfg)
    model.load_state_dict(trained.state_dict())  # strict: same parameters, other options
    return model.eval()


# ---- data ----------------------------------------------------------------------------------


def load_digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits upscaled to 16x16 in [0, 1], split 75/25 with a fixed ``random_state``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    images = F.interpolate(images[:, None], scale_factor=DIGIT // 8, mode="nearest")
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=0.25,
        random_state=DATA_SEED,
        stratify=labels.numpy(),
    )
    tr, te = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return images[tr], labels[tr], images[te], labels[te]


def canvas_stats(digits: Tensor) -> tuple[float, float]:
    """Pixel mean and std of the training digits on the training canvas (input normalisation).

    Standardised inputs (black background below zero) train much faster than raw [0, 1]
    pixels here: with raw pixels every model sat at chance for many epochs.
    """
    frac = DIGIT**2 / TRAIN_CANVAS**2
    mean = float(digits.mean()) * frac
    second = float((digits**2).mean()) * frac
    return mean, (second - mean**2) ** 0.5


def place(
    digits: Tensor, canvas: int, generator: torch.Generator, stats: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Paste each ``(1, 16, 16)`` digit at a random patch-aligned offset on a black ``canvas``.

    Offsets are multiples of the patch size, so a digit always covers the same 4x4 patches'
    contents and only their grid positions change (see the module docstring).

    Returns the images ``(B, 1, canvas, canvas)``, standardised with ``stats`` (mean, std of
    the training canvas, the same at every resolution), and the top-left offsets ``(B, 2)``
    (row, col) in pixels.
    """
    n = digits.shape[0]
    slots = (canvas - DIGIT) // PATCH + 1
    offsets = torch.randint(0, slots, (n, 2), generator=generator) * PATCH
    out = digits.new_zeros(n, 1, canvas, canvas)
    for i, (r, c) in enumerate(offsets.tolist()):
        out[i, :, r : r + DIGIT, c : c + DIGIT] = digits[i]
    mean, std = stats
    return (out - mean) / std, offsets


def object_mask(offsets: Tensor, canvas: int) -> Tensor:
    """``(B, H*W)`` float mask of the patches that overlap each digit's placement box."""
    grid = canvas // PATCH
    first = offsets // PATCH  # (B, 2)
    last = (offsets + DIGIT - 1) // PATCH
    idx = torch.arange(grid)
    rows = (idx[None] >= first[:, :1]) & (idx[None] <= last[:, :1])  # (B, H)
    cols = (idx[None] >= first[:, 1:]) & (idx[None] <= last[:, 1:])  # (B, W)
    # (B, H, W) -> (B, H*W), row-major like the patch tokens
    return (rows[:, :, None] & cols[:, None, :]).flatten(1).float()


@dataclass
class EvalSet:
    images: Tensor
    labels: Tensor
    mask: Tensor


def make_eval_set(
    digits: Tensor,
    labels: Tensor,
    canvas: int,
    seed: int,
    copies: int,
    stats: tuple[float, float],
) -> EvalSet:
    g = torch.Generator().manual_seed(seed)
    imgs, masks = [], []
    for _ in range(copies):
        x, off = place(digits, canvas, g, stats)
        imgs.append(x)
        masks.append(object_mask(off, canvas))
    return EvalSet(torch.cat(imgs), labels.repeat(copies), torch.cat(masks))


# ---- training and evaluation ---------------------------------------------------------------


def readouts(model: Any, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Logits of both read-outs from one ``forward_features`` pass.

    ``avg`` equals ``model(x)`` (timm's ``forward_head`` with ``global_pool="avg"``: mean of
    the patch tokens, ``fc_norm``, ``head``); ``object`` replaces the mean over all patch
    tokens by the mean over the tokens in ``mask`` and shares ``fc_norm`` and ``head``.
    """
    feats = model.forward_features(x)
    tokens = feats[:, model.num_prefix_tokens :]  # (B, N, C)
    m = mask[:, :, None]
    pooled = {"avg": model.pool(feats), "object": (tokens * m).sum(1) / m.sum(1)}
    return {k: model.head(model.head_drop(model.fc_norm(v))) for k, v in pooled.items()}


@torch.no_grad()
def accuracy(model: Any, data: EvalSet, batch: int = 300) -> dict[str, float]:
    """Top-1 of each read-out (``POOLINGS``) on ``data``."""
    model.eval()
    correct = dict.fromkeys(POOLINGS, 0)
    for i in range(0, len(data.labels), batch):
        out = readouts(model, data.images[i : i + batch], data.mask[i : i + batch])
        for k, logits in out.items():
            correct[k] += int((logits.argmax(-1) == data.labels[i : i + batch]).sum())
    return {k: c / len(data.labels) for k, c in correct.items()}


def train(
    case: Case, seed: int, epochs: int, x_train: Tensor, y_train: Tensor, log_every: int = 0
) -> tuple[Any, float]:
    """Train one model; the loss is the mean of both read-outs' cross-entropies."""
    stats = canvas_stats(x_train)
    torch.manual_seed(seed)
    model = build_model(case, img_size=TRAIN_CANVAS)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.99))
    steps_per_epoch = -(-len(y_train) // BATCH)
    total = epochs * steps_per_epoch
    warmup = max(1, int(WARMUP_FRACTION * total))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(10_000 + seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        x_all, offsets = place(x_train, TRAIN_CANVAS, g, stats)  # fresh placements every epoch
        mask_all = object_mask(offsets, TRAIN_CANVAS)
        perm = torch.randperm(len(y_train), generator=g)
        correct, total_loss = 0, 0.0
        for i in range(0, len(perm), BATCH):
            b = perm[i : i + BATCH]
            out = readouts(model, x_all[b], mask_all[b])
            losses = [F.cross_entropy(logits, y_train[b]) for logits in out.values()]
            loss = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((out["avg"].argmax(-1) == y_train[b]).sum())
            total_loss += float(loss.detach()) * len(b)
        if log_every and ((epoch + 1) % log_every == 0 or epoch + 1 == epochs):
            print(
                f"#   {case.name} seed {seed} epoch {epoch + 1}: loss "
                f"{total_loss / len(perm):.3f} running train acc (avg) "
                f"{100 * correct / len(perm):.1f} ({time.perf_counter() - start:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    return model.eval(), time.perf_counter() - start


def retention(per_metric: dict[tuple[str, str], list[float]], res: str, pooling: str) -> float:
    """Mean accuracy at ``res`` over the mean at the training resolution."""
    base = statistics.fmean(per_metric[("1x", pooling)])
    return statistics.fmean(per_metric[(res, pooling)]) / base if base else float("nan")


def fmt(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:5.1f}±{100 * std:3.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scheme (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 40)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny data")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="schemes",
        help="'schemes' (default): every ViT scheme; 'irpe': the iRPE paper's variants",
    )
    parser.add_argument(
        "--log-every", type=int, default=0, help="print training progress every N epochs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = 1 if args.quick else args.seeds
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 40)

    x_train, y_train, x_test, y_test = load_digits_split()
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:128], y_train[:128], x_test[:64], y_test[:64]
    copies = 1 if args.quick else TEST_PLACEMENTS
    stats = canvas_stats(x_train)
    train_eval = make_eval_set(x_train, y_train, TRAIN_CANVAS, DATA_SEED + 1, 1, stats)
    test_sets = {
        res: make_eval_set(x_test, y_test, canvas, DATA_SEED + 2 + k, copies, stats)
        for k, (res, canvas) in enumerate(RESOLUTIONS.items())
    }
    print(
        f"# {len(y_train)} train / {len(y_test)} test digits x {copies} placements, "
        f"{epochs} epochs, seeds {list(range(seeds))}, {torch.get_num_threads()} threads",
        file=sys.stderr,
        flush=True,
    )

    # results[case][(res, pooling)] and train_acc[case][pooling] -> per-seed accuracies
    results: dict[str, dict[tuple[str, str], list[float]]] = {}
    train_acc: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    start = time.perf_counter()
    trained_cases, variant_cases = SUITES[args.suite]
    for case in trained_cases:
        variants = [case] + [v for v in variant_cases if v.trained_as == case.name]
        for seed in range(seeds):
            model, secs = train(case, seed, epochs, x_train, y_train, log_every=args.log_every)
            acc_train = accuracy(model, train_eval)
            for v in variants:
                for pooling in POOLINGS:
                    train_acc.setdefault(v.name, {}).setdefault(pooling, []).append(
                        acc_train[pooling]
                    )
                seconds.setdefault(v.name, []).append(secs)
                for res, canvas in RESOLUTIONS.items():
                    acc = accuracy(eval_model(v, model, canvas / TRAIN_CANVAS), test_sets[res])
                    for pooling in POOLINGS:
                        per = results.setdefault(v.name, {})
                        per.setdefault((res, pooling), []).append(acc[pooling])
            r = results[case.name]
            print(
                f"# {case.name:<11} seed {seed}: train "
                + "/".join(f"{100 * acc_train[p]:.1f}" for p in POOLINGS)
                + "  test "
                + "  ".join(f"{res}/{p} {100 * r[(res, p)][-1]:.1f}" for res, p in r)
                + f"  ({secs:.0f}s train, {time.perf_counter() - start:.0f}s total)",
                file=sys.stderr,
                flush=True,
            )

    for name, per_metric in results.items():
        for (res, pooling), accs in per_metric.items():
            base = results["ape"][(res, pooling)]
            emit(
                BENCH,
                name,
                f"top1_{res}_{pooling}",
                statistics.fmean(accs),
                statistics.fmean(base),
                std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                seeds=len(accs),
                per_seed=accs,
                retention=retention(per_metric, res, pooling),
                train_acc=statistics.fmean(train_acc[name][pooling]),
                resolution=RESOLUTIONS[res],
                train_resolution=TRAIN_CANVAS,
                pooling=pooling,
                epochs=epochs,
                train_seconds=statistics.fmean(seconds[name]),
            )

    cols = [(res, p) for p in POOLINGS for res in RESOLUTIONS]
    header = (
        f"{'case':<16} "
        + " ".join(f"{f'train {p[:3]}':>11}" for p in POOLINGS)
        + " "
        + " ".join(f"{f'{r} {p[:3]}':>11}" for r, p in cols)
        + " "
        + " ".join(f"{f'2x/1x {p[:3]}':>9}" for p in POOLINGS)
    )
    print(
        f"\ntop-1 % (mean±std over {seeds} seed(s)), trained at {TRAIN_CANVAS}x{TRAIN_CANVAS}, "
        f"{epochs} epochs; 2x/1x = retention of the case's own 1x accuracy"
    )
    print(header)
    print("-" * len(header))
    for name, per_metric in results.items():
        trains = " ".join(f"{fmt(train_acc[name][p]):>11}" for p in POOLINGS)
        cells = " ".join(f"{fmt(per_metric[c]):>11}" for c in cols)
        keep = " ".join(f"{retention(per_metric, '2x', p):>9.2f}" for p in POOLINGS)
        print(f"{name:<16} {trains} {cells} {keep}")
    if args.suite == "irpe":
        print("\niRPE paper orderings (object read-out, top-1 points, seeds averaged):")
        for row in irpe_orderings(results):
            emit_row(
                {"bench": BENCH, "case": "irpe_ordering", **row, "seeds": seeds, "epochs": epochs}
            )
    print(f"\nwall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
