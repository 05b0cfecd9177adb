"""Resolution generalisation of ViT position schemes: train at one resolution, test at larger.

Tests the claim of CPVT (Chu et al. 2021, arXiv:2102.10882) and RoPE-ViT (Heo et al. 2024,
arXiv:2403.13298): a learned absolute table interpolated to a new grid (timm's bicubic
resampling with ``dynamic_img_size=True``) degrades at resolutions not seen in training, while
the conditional encoding (PEG) and 2-D RoPE hold.

Task: scikit-learn's ``load_digits`` (8x8, 10 classes), each digit upscaled to 16x16 (pixel
duplication) and pasted at a random location on a black canvas. Training: 32x32 canvas, patch 4
(8x8 grid), a fresh random placement of every training digit each epoch. Test: held-out digits
(``train_test_split``, ``random_state=0``) on 32x32 (1x), 48x48 (1.5x) and 64x64 (2x) canvases,
the digit at the SAME pixel scale (16x16) at a random location; placements come from seeded
``torch.Generator`` s, identical for every scheme. No fine-tuning at the new resolutions.

Model: timm ``vit_tiny_patch16_multipos_224`` shrunk to embed 64, depth 4, 4 heads, patch 4,
``dynamic_img_size=True``, no class token, ``global_pool="avg"`` (mean of patch tokens, then
timm's ``fc_norm`` and ``head``). No class token so that both poolings below read the same
trained head (CPVT also reports its PEG best with global average pooling). Two read-outs:

* ``avg``: the model's own head, mean over all patch tokens (background tokens of a larger
  canvas included);
* ``object``: mean over the patch tokens that overlap the digit's 16x16 placement box only,
  followed by the same ``fc_norm`` and ``head``, so a larger background cannot dilute the effect.

Schemes trained: ``ape`` (baseline: interpolated learned table), ``none``, ``ape+irpe``
(product/contextual on k), ``peg``, ``lff``, ``rope_axial``, ``rope_mixed``. Two more are
evaluated from already-trained weights (they equal their parent at the training grid):
``lff_reference`` (the ``lff`` weights with ``coords="reference"``, so a larger input
extends the coordinates instead of interpolating them) and ``rope_axial_yarn`` (the
``rope_axial`` weights with YaRN scaling, ``factor`` = the resolution ratio,
``original_length`` = 8 patches).

Recipe, identical for every scheme: AdamW (lr 2e-3, weight decay 0.05, betas 0.9/0.99),
batch 64, linear warm-up then cosine decay per step, ``--epochs`` epochs, 3 seeds.

Output: one JSON line per (case, resolution, pooling) with ``ours`` the mean top-1 over
seeds, ``baseline`` the same metric of ``ape``, ``ratio`` = ours / baseline; then a table.

    python benchmarks/resolution_generalization.py [--seeds 3] [--epochs N] [--quick]
"""

from __future__ import annotations

import argparse
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
from _common import emit

BENCH = "resolution_generalization"
PATCH = 4
DIGIT = 16  # pixel size of a digit on the canvas (8x8 upscaled 2x)
TRAIN_CANVAS = 32
RESOLUTIONS: dict[str, int] = {"1x": 32, "1.5x": 48, "2x": 64}
POOLINGS = ("avg", "object")
BATCH = 64
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
    Case("rope_axial", "rope_axial"),
    Case("rope_mixed", "rope_mixed"),
]
VARIANTS = [
    Case("lff_reference", "lff", {"lff": {"coords": "reference"}}, trained_as="lff"),
    Case("rope_axial_yarn", "rope_axial", {"rope_axial": {}}, trained_as="rope_axial"),
]


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
    if case.trained_as is None:
        return trained
    cfg: dict[str, Any] = {k: dict(v) for k, v in case.pos_cfg.items()}
    if case.name == "rope_axial_yarn":
        if ratio == 1.0:
            return trained  # no scaling at the training resolution
        grid = TRAIN_CANVAS // PATCH
        cfg["rope_axial"]["scaling"] = {"kind": "yarn", "factor": ratio, "original_length": grid}
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


def place(digits: Tensor, canvas: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Paste each ``(1, 16, 16)`` digit at a random pixel offset on a black ``canvas``.

    Returns the images ``(B, 1, canvas, canvas)`` and the top-left offsets ``(B, 2)`` (row, col).
    """
    n = digits.shape[0]
    offsets = torch.randint(0, canvas - DIGIT + 1, (n, 2), generator=generator)
    out = digits.new_zeros(n, 1, canvas, canvas)
    for i, (r, c) in enumerate(offsets.tolist()):
        out[i, :, r : r + DIGIT, c : c + DIGIT] = digits[i]
    return out, offsets


def object_mask(offsets: Tensor, canvas: int) -> Tensor:
    """``(B, H*W)`` float mask of the patches that overlap each digit's placement box."""
    grid = canvas // PATCH
    first = offsets // PATCH  # (B, 2)
    last = (offsets + DIGIT - 1) // PATCH
    idx = torch.arange(grid)
    rows = (idx[None] >= first[:, :1]) & (idx[None] <= last[:, :1])  # (B, H)
    cols = (idx[None] >= first[:, 1:]) & (idx[None] <= last[:, 1:])  # (B, W)
    return (rows[:, :, None] & cols[:, None, :]).flatten(1).float()


@dataclass
class EvalSet:
    images: Tensor
    labels: Tensor
    mask: Tensor


def make_eval_set(digits: Tensor, labels: Tensor, canvas: int, seed: int, copies: int) -> EvalSet:
    g = torch.Generator().manual_seed(seed)
    imgs, masks = [], []
    for _ in range(copies):
        x, off = place(digits, canvas, g)
        imgs.append(x)
        masks.append(object_mask(off, canvas))
    return EvalSet(torch.cat(imgs), labels.repeat(copies), torch.cat(masks))


# ---- training and evaluation ---------------------------------------------------------------


@torch.no_grad()
def accuracy(model: Any, data: EvalSet, pooling: str, batch: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data.labels), batch):
        x = data.images[i : i + batch]
        if pooling == "avg":
            logits = model(x)
        else:
            tokens = model.forward_features(x)[:, model.num_prefix_tokens :]  # (B, N, C)
            m = data.mask[i : i + batch, :, None]
            pooled = (tokens * m).sum(1) / m.sum(1)
            logits = model.head(model.head_drop(model.fc_norm(pooled)))
        correct += int((logits.argmax(-1) == data.labels[i : i + batch]).sum())
    return correct / len(data.labels)


def train(
    case: Case, seed: int, epochs: int, x_train: Tensor, y_train: Tensor, log_every: int = 0
) -> tuple[Any, float]:
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
        return 0.5 * (1.0 + torch.cos(torch.tensor(t * torch.pi)).item())

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(10_000 + seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        x_all, _ = place(x_train, TRAIN_CANVAS, g)  # fresh placements every epoch
        perm = torch.randperm(len(y_train), generator=g)
        correct, total_loss = 0, 0.0
        for i in range(0, len(perm), BATCH):
            b = perm[i : i + BATCH]
            logits = model(x_all[b])
            loss = F.cross_entropy(logits, y_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(-1) == y_train[b]).sum())
            total_loss += float(loss.detach()) * len(b)
        if log_every and ((epoch + 1) % log_every == 0 or epoch + 1 == epochs):
            print(
                f"#   {case.name} seed {seed} epoch {epoch + 1}: loss "
                f"{total_loss / len(perm):.3f} running train acc {100 * correct / len(perm):.1f} "
                f"({time.perf_counter() - start:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    return model.eval(), time.perf_counter() - start


def fmt(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:5.1f}±{100 * std:3.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scheme (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 60)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny data")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = 1 if args.quick else args.seeds
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 60)

    x_train, y_train, x_test, y_test = load_digits_split()
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:128], y_train[:128], x_test[:64], y_test[:64]
    copies = 1 if args.quick else TEST_PLACEMENTS
    train_eval = make_eval_set(x_train, y_train, TRAIN_CANVAS, DATA_SEED + 1, 1)
    test_sets = {
        res: make_eval_set(x_test, y_test, canvas, DATA_SEED + 2 + k, copies)
        for k, (res, canvas) in enumerate(RESOLUTIONS.items())
    }
    print(
        f"# {len(y_train)} train / {len(y_test)} test digits x {copies} placements, "
        f"{epochs} epochs, seeds {list(range(seeds))}, {torch.get_num_threads()} threads",
        file=sys.stderr,
        flush=True,
    )

    # results[case][(res, pooling)] -> per-seed accuracies; train_acc[case] -> per seed
    results: dict[str, dict[tuple[str, str], list[float]]] = {}
    train_acc: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    start = time.perf_counter()
    for case in TRAINED:
        variants = [case] + [v for v in VARIANTS if v.trained_as == case.name]
        for seed in range(seeds):
            model, secs = train(case, seed, epochs, x_train, y_train)
            acc_train = accuracy(model, train_eval, "avg")
            for v in variants:
                train_acc.setdefault(v.name, []).append(acc_train)
                seconds.setdefault(v.name, []).append(secs)
                for res, canvas in RESOLUTIONS.items():
                    m = eval_model(v, model, canvas / TRAIN_CANVAS)
                    for pooling in POOLINGS:
                        acc = accuracy(m, test_sets[res], pooling)
                        results.setdefault(v.name, {}).setdefault((res, pooling), []).append(acc)
            r = results[case.name]
            print(
                f"# {case.name:<11} seed {seed}: train {100 * acc_train:5.1f}  "
                + "  ".join(f"{res}/{p} {100 * r[(res, p)][-1]:5.1f}" for res, p in r)
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
                train_acc=statistics.fmean(train_acc[name]),
                resolution=RESOLUTIONS[res],
                train_resolution=TRAIN_CANVAS,
                pooling=pooling,
                epochs=epochs,
                train_seconds=statistics.fmean(seconds[name]),
            )

    cols = [(res, p) for p in POOLINGS for res in RESOLUTIONS]
    header = f"{'case':<16} {'train':>11} " + " ".join(f"{f'{r} {p}':>11}" for r, p in cols)
    print(f"\ntop-1 % (mean±std over {seeds} seed(s)), trained at {TRAIN_CANVAS}x{TRAIN_CANVAS}")
    print(header)
    print("-" * len(header))
    for name, per_metric in results.items():
        cells = " ".join(f"{fmt(per_metric[c]):>11}" for c in cols)
        print(f"{name:<16} {fmt(train_acc[name]):>11} {cells}")
    print(f"\nwall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
