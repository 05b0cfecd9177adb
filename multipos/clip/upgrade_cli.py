"""The ``multipos-clip-upgrade`` command: upgrade, distil, fine-tune, evaluate, save.

Example::

    multipos-clip-upgrade --model ViT-B-32 --pretrained weights.bin --method rope \\
        --context-length 248 --distill-data captions.txt --finetune-data pairs.csv --out DIR

    torchrun --nproc_per_node=2 -m multipos.clip.upgrade_cli ...   # data parallel

``--model`` is an open_clip model name or the path of a JSON model config; ``--pretrained`` a
local checkpoint file or an open_clip tag (a tag is resolved by open_clip, which downloads it
unless it is in open_clip's cache: only pass one when that is what you want).

``DIR`` loads back with ``open_clip.create_model("local-dir:DIR")`` once
``multipos.clip`` is imported (any method, the rotary one included).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch

from multipos.clip.checkpoint import save_upgraded
from multipos.clip.data import read_captions, read_pairs
from multipos.clip.distributed import init_distributed
from multipos.clip.evaluation import evaluate_pairs, short_caption_preservation
from multipos.clip.loop import StageConfig
from multipos.clip.spec import METHODS, TextContextSpec
from multipos.clip.stages import distill_text_tower, finetune_long_captions
from multipos.clip.upgrade import upgrade_text_context

__all__ = ["build_parser", "main", "resolve_model_name"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``multipos-clip-upgrade``."""
    p = argparse.ArgumentParser(
        prog="multipos-clip-upgrade",
        description="Upgrade the text tower of an open_clip CLIP model to a longer context "
        "(linear, Long-CLIP kps, TULIP rope), optionally distil and fine-tune it, and save a "
        "directory open_clip loads back.",
        epilog="Load the result with open_clip.create_model('local-dir:DIR') after "
        "'import multipos.clip', or with multipos.clip.load_upgraded(DIR).",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="open_clip model name or JSON config path")
    g.add_argument(
        "--pretrained",
        default=None,
        help="checkpoint file, or an open_clip tag (may download; default: random weights)",
    )
    g.add_argument("--method", choices=METHODS, default="rope")
    g.add_argument("--context-length", type=int, default=248)
    g.add_argument("--keep", type=int, default=20, help="kps: rows kept unchanged")
    g.add_argument("--stretch", type=float, default=None, help="kps: stretch factor")
    g.add_argument("--rope-base", type=float, default=10000.0)
    g.add_argument("--rope-layout", choices=("interleaved", "half"), default="interleaved")
    g.add_argument(
        "--rope-scaling",
        choices=("none", "linear", "ntk", "dynamic", "yarn"),
        default="none",
        help="rope frequency scaling (persisted in the saved config)",
    )
    g.add_argument("--rope-scaling-factor", type=float, default=1.0)
    g.add_argument(
        "--rope-original-length",
        type=float,
        default=None,
        help="dynamic/yarn: positions seen in training (default: the original context)",
    )
    g.add_argument("--device", default="cpu")

    d = p.add_argument_group("data")
    d.add_argument("--distill-data", default=None, help="captions .txt or CSV (stage 1)")
    d.add_argument("--finetune-data", default=None, help="pairs CSV or folder (stage 2)")
    d.add_argument("--eval-data", default=None, help="pairs CSV or folder for evaluation")
    d.add_argument("--csv-img-key", default="filepath")
    d.add_argument("--csv-caption-key", default="title")
    d.add_argument("--csv-separator", default="\t")

    t = p.add_argument_group("training")
    t.add_argument("--distill-epochs", type=int, default=1)
    t.add_argument("--distill-steps", type=int, default=None)
    t.add_argument("--distill-lr", type=float, default=1e-4)
    t.add_argument("--finetune-epochs", type=int, default=1)
    t.add_argument("--finetune-steps", type=int, default=None)
    t.add_argument("--finetune-lr", type=float, default=1e-5)
    t.add_argument("--lock-image", action="store_true", help="freeze the image tower (stage 2)")
    t.add_argument("--batch-size", type=int, default=32, help="per process")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps; 0 = end only")
    t.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p.add_argument("--out", required=True, help="output directory")
    return p


def resolve_model_name(model: str) -> str:
    """An open_clip model name; a JSON config path is registered with
    ``open_clip.add_model_config`` under its file stem.

    Raises:
        ValueError: If the name is neither a known model nor a JSON file.
    """
    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"model config file not found: {model}")
        open_clip.add_model_config(path)
        return path.stem
    if open_clip.get_model_config(model) is None:
        raise ValueError(
            f"unknown open_clip model {model!r}; pass a name from open_clip.list_models() or a "
            "JSON config path"
        )
    return model


def _scaling(args: argparse.Namespace, original: int) -> dict[str, Any] | None:
    if args.rope_scaling == "none":
        return None
    out: dict[str, Any] = {"kind": args.rope_scaling, "factor": args.rope_scaling_factor}
    if args.rope_scaling in ("dynamic", "yarn"):
        out["original_length"] = args.rope_original_length or float(original)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"multipos-clip-upgrade: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    info = init_distributed()
    device = torch.device(args.device)
    if device.type == "cuda" and info.world_size > 1:
        device = torch.device("cuda", info.local_rank)
    torch.manual_seed(args.seed)
    name = resolve_model_name(args.model)
    model_cfg = open_clip.get_model_config(name)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=args.pretrained, device=device
    )
    model.eval()
    original_length = int(model_cfg["text_cfg"].get("context_length", 77))
    short_tokenizer = open_clip.get_tokenizer(name, context_length=original_length)
    long_tokenizer = open_clip.get_tokenizer(name, context_length=args.context_length)
    need_teacher = args.distill_data is not None or args.eval_data is not None
    teacher = copy.deepcopy(model) if need_teacher else None

    upgrade_text_context(
        model,
        args.method,
        args.context_length,
        keep=args.keep,
        stretch=args.stretch,
        base=args.rope_base,
        layout=args.rope_layout,
        scaling=_scaling(args, original_length),
    )
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    progress = not args.no_progress
    summary: dict[str, Any] = {"method": args.method, "context_length": args.context_length}
    common = dict(
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    finetune_ckpt = ckpt_dir / "finetune.pt"
    skip_distill = args.resume and args.finetune_data is not None and finetune_ckpt.is_file()
    if args.distill_data is not None and not skip_distill:
        assert teacher is not None
        captions = read_captions(
            args.distill_data, caption_key=args.csv_caption_key, separator=args.csv_separator
        )
        losses = distill_text_tower(
            teacher,
            model,
            captions,
            short_tokenizer,
            StageConfig(
                epochs=args.distill_epochs, steps=args.distill_steps, lr=args.distill_lr, **common
            ),
            checkpoint=ckpt_dir / "distill.pt",
            resume=args.resume,
            progress=progress,
            info=info,
        )
        summary["distill_loss_first_last"] = [losses[0], losses[-1]] if losses else []
    if args.finetune_data is not None:
        pairs = read_pairs(
            args.finetune_data,
            img_key=args.csv_img_key,
            caption_key=args.csv_caption_key,
            separator=args.csv_separator,
        )
        losses = finetune_long_captions(
            model,
            pairs,
            preprocess,
            long_tokenizer,
            StageConfig(
                epochs=args.finetune_epochs,
                steps=args.finetune_steps,
                lr=args.finetune_lr,
                **common,
            ),
            lock_image=args.lock_image,
            checkpoint=finetune_ckpt,
            resume=args.resume,
            progress=progress,
            info=info,
        )
        summary["finetune_loss_first_last"] = [losses[0], losses[-1]] if losses else []
    model.eval()
    if info.main:
        save_upgraded(model, out, model_cfg)
        if args.eval_data is not None:
            assert teacher is not None
            pairs = read_pairs(
                args.eval_data,
                img_key=args.csv_img_key,
                caption_key=args.csv_caption_key,
                separator=args.csv_separator,
            )
            summary["eval_upgraded"] = evaluate_pairs(model, pairs, preprocess, long_tokenizer)
            summary["eval_original"] = evaluate_pairs(teacher, pairs, preprocess, short_tokenizer)
            summary["short_caption_preservation"] = short_caption_preservation(
                teacher, model, short_tokenizer([c for _, c in pairs])
            )
        summary["out"] = str(out)
        summary["spec"] = TextContextSpec.to_dict(model.text_context_spec)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary))
    if info.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
