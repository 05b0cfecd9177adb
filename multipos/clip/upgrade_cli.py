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
import pickle
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch

from multipos.clip.checkpoint import save_upgraded
from multipos.clip.checks import (
    check_captions,
    check_images,
    check_resume_settings,
    prepare_output,
)
from multipos.clip.data import read_captions, read_pairs
from multipos.clip.distributed import init_distributed
from multipos.clip.evaluation import evaluate_pairs, short_caption_preservation
from multipos.clip.loop import PRECISIONS, StageConfig
from multipos.clip.objectives import DISTILL_LOSSES
from multipos.clip.recipes import RECIPES
from multipos.clip.spec import METHODS, TextContextSpec
from multipos.clip.stages import distill_text_tower, finetune_long_captions
from multipos.clip.upgrade import upgrade_text_context
from multipos.clip.upgrade_options import prepare_finetune, settle_options
from multipos.frequencies import SCALING_KINDS
from multipos.rotary import LAYOUTS

__all__ = ["build_parser", "main", "resolve_model_name", "settle_options"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``multipos-clip-upgrade``."""
    p = argparse.ArgumentParser(
        prog="multipos-clip-upgrade",
        description="Upgrade the text tower of an open_clip CLIP model to a longer context "
        "(linear, Long-CLIP kps, TULIP rope), optionally distil and fine-tune it, and save a "
        "directory open_clip loads back. --recipe long-clip / tulip fills the options of the "
        "official recipes; any option given explicitly wins.",
        epilog="Load the result with open_clip.create_model('local-dir:DIR') after "
        "'import multipos.clip', or with multipos.clip.load_upgraded(DIR).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="open_clip model name or JSON config path")
    g.add_argument(
        "--pretrained",
        default=None,
        help="checkpoint file, or an open_clip tag (may download); none = random weights",
    )
    g.add_argument("--recipe", choices=sorted(RECIPES), default=None, help="official preset")
    g.add_argument("--method", choices=METHODS, default=None, help="upgrade method [rope]")
    g.add_argument("--context-length", type=int, default=248, help="new context length N")
    g.add_argument("--keep", type=int, default=None, help="kps: rows kept unchanged [20]")
    g.add_argument("--stretch", type=float, default=None, help="kps: stretch factor [auto]")
    g.add_argument("--rope-base", type=float, default=None, help="rope: base [10000]")
    g.add_argument(
        "--rope-layout", choices=LAYOUTS, default=None, help="rope: channel pairs [interleaved]"
    )
    g.add_argument(
        "--rope-scaling",
        choices=SCALING_KINDS,
        default=None,
        help="rope: frequency scaling, persisted in the saved config [none]",
    )
    g.add_argument("--rope-scaling-factor", type=float, default=None, help="rope: factor [1]")
    g.add_argument(
        "--rope-original-length",
        type=float,
        default=None,
        help="rope dynamic/yarn: positions seen in training [the original context]",
    )
    g.add_argument("--device", default="cpu", help="torch device")

    d = p.add_argument_group("data")
    d.add_argument("--distill-data", default=None, help="captions .txt or CSV (stage 1)")
    d.add_argument("--finetune-data", default=None, help="pairs CSV or folder (stage 2)")
    d.add_argument("--eval-data", default=None, help="pairs CSV or folder for evaluation")
    d.add_argument("--csv-img-key", default="filepath", help="CSV image column")
    d.add_argument("--csv-caption-key", default="title", help="CSV caption column")
    d.add_argument("--csv-separator", default="\t", help="CSV separator")
    d.add_argument(
        "--truncate-captions", action="store_true", help="accept captions longer than N (cut)"
    )

    t = p.add_argument_group("stage 1: distillation")
    t.add_argument("--distill-epochs", type=int, default=1, help="passes over the captions")
    t.add_argument("--distill-steps", type=int, default=None, help="steps (overrides epochs)")
    t.add_argument("--distill-lr", type=float, default=None, help="peak lr [1e-4]")
    t.add_argument("--distill-weight-decay", type=float, default=None, help="AdamW wd [0.1]")
    t.add_argument("--distill-warmup", type=int, default=None, help="warm-up steps [0]")
    t.add_argument("--distill-loss", choices=DISTILL_LOSSES, default=None, help="distance [cosine]")

    f = p.add_argument_group("stage 2: fine-tuning on (image, long caption) pairs")
    f.add_argument("--finetune-epochs", type=int, default=None, help="passes over pairs [1]")
    f.add_argument("--finetune-steps", type=int, default=None, help="steps (overrides epochs)")
    f.add_argument("--finetune-lr", type=float, default=None, help="peak lr [1e-5]")
    f.add_argument("--finetune-weight-decay", type=float, default=None, help="AdamW wd [0.1]")
    f.add_argument("--finetune-warmup", type=int, default=None, help="warm-up steps [0]")
    f.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    f.add_argument(
        "--projection",
        choices=("distilled", "teacher"),
        default=None,
        help="text projection for stage 2 after distillation [distilled]",
    )
    f.add_argument(
        "--train-token-embedding",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stage 2 trains the token table [no]",
    )
    f.add_argument(
        "--frozen-rows", type=int, default=None, help="linear/kps: table rows kept frozen [0]"
    )
    f.add_argument("--long-weight", type=float, default=None, help="long-caption loss [1]")
    f.add_argument("--short-weight", type=float, default=None, help="first-sentence loss [0]")
    f.add_argument(
        "--short-image",
        choices=("full", "pca"),
        default=None,
        help="image features of the first-sentence loss [full]",
    )
    f.add_argument("--pca-dim", type=int, default=None, help="pca: components [32]")
    f.add_argument("--label-smoothing", type=float, default=None, help="both losses [0]")
    f.add_argument("--logit-scale", type=float, default=None, help="initial log scale [keep]")
    f.add_argument(
        "--finetune-context-length", type=int, default=None, help="rope: stage-2 length [N]"
    )
    f.add_argument(
        "--finetune-rope-scaling",
        choices=("none", "dynamic"),
        default=None,
        help="rope: stage-2 scaling over N [none]",
    )
    f.add_argument(
        "--finetune-rope-scaling-factor", type=float, default=None, help="its factor [1]"
    )

    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=32, help="per process")
    r.add_argument("--accum-freq", type=int, default=1, help="micro-batches per step")
    r.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast dtype")
    r.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    r.add_argument("--seed", type=int, default=0, help="seed of weights and batch order")
    r.add_argument("--checkpoint-every", type=int, default=100, help="steps; 0 = end only")
    r.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument(
        "--keep-checkpoints", action="store_true", help="keep DIR/checkpoints after success"
    )
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
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
        return _run(settle_options(args))
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"multipos-clip-upgrade: error: {err}", file=sys.stderr)
        return 2


def _load_model(name: str, pretrained: str | None, device: torch.device) -> Any:
    try:
        return open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except (KeyError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        if pretrained is not None and Path(pretrained).is_file():
            raise ValueError(
                f"--pretrained {pretrained} is not an open_clip/OpenAI checkpoint of {name} "
                f"({type(err).__name__}: {err})"
            ) from err
        raise


def _read_all(args: argparse.Namespace, short_tok: Any, long_tok: Any) -> dict[str, Any]:
    """Every data source read and checked before training: captions, pairs, images."""
    keys = dict(caption_key=args.csv_caption_key, separator=args.csv_separator)
    data: dict[str, Any] = {}
    if args.distill_data is not None:
        data["distill"] = read_captions(args.distill_data, **keys)
        check_captions(data["distill"], short_tok, source=args.distill_data, truncate=True)
    for stage, source in (("finetune", args.finetune_data), ("eval", args.eval_data)):
        if source is not None:
            pairs = read_pairs(source, img_key=args.csv_img_key, **keys)
            check_captions(
                [c for _, c in pairs], long_tok, source=source, truncate=args.truncate_captions
            )
            check_images(pairs, source=source)
            data[stage] = pairs
    return data


def _config(args: argparse.Namespace, stage: str) -> StageConfig:
    return StageConfig(
        epochs=getattr(args, f"{stage}_epochs"),
        steps=getattr(args, f"{stage}_steps"),
        lr=getattr(args, f"{stage}_lr"),
        weight_decay=getattr(args, f"{stage}_weight_decay"),
        warmup=getattr(args, f"{stage}_warmup"),
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        accum_freq=args.accum_freq,
        precision=args.precision,
        workers=args.workers,
    )


def _run(args: argparse.Namespace) -> int:
    info = init_distributed()
    device = torch.device(args.device)
    if device.type == "cuda" and info.world_size > 1:
        device = torch.device("cuda", info.local_rank)
    name = resolve_model_name(args.model)
    model_cfg = open_clip.get_model_config(name)
    original_length = int(model_cfg["text_cfg"].get("context_length", 77))
    if args.context_length <= original_length:
        raise ValueError(
            f"--context-length {args.context_length} does not extend the original "
            f"{original_length} tokens; give a longer one"
        )
    short_tokenizer = open_clip.get_tokenizer(name, context_length=original_length)
    long_tokenizer = open_clip.get_tokenizer(name, context_length=args.context_length)
    data = _read_all(args, short_tokenizer, long_tokenizer)
    for stage in ("distill", "finetune"):
        if stage in data and len(data[stage]) < args.batch_size * info.world_size:
            raise ValueError(
                f"--{stage}-data has {len(data[stage])} items for a batch of {args.batch_size} "
                f"x {info.world_size} process(es); a batch would repeat items (false negatives "
                "in a contrastive loss): lower --batch-size or add data"
            )
    torch.manual_seed(args.seed)
    model, _, preprocess = _load_model(name, args.pretrained, device)
    out = Path(args.out)
    if info.main:
        prepare_output(out, overwrite=args.overwrite, resume=args.resume)
        check_resume_settings(out, vars(args), resume=args.resume)
    model.eval()
    need_teacher = "distill" in data or "eval" in data
    teacher = copy.deepcopy(model) if need_teacher else None

    upgrade_text_context(
        model,
        args.method,
        args.context_length,
        keep=args.keep if args.keep is not None else 20,
        stretch=args.stretch,
        base=args.rope_base or 10000.0,
        layout=args.rope_layout or "interleaved",
        scaling=_scaling(args, original_length) if args.method == "rope" else None,
    )
    ckpt_dir = out / "checkpoints"
    progress = not args.no_progress
    summary: dict[str, Any] = {
        "method": args.method,
        "recipe": args.recipe,
        "context_length": args.context_length,
    }
    finetune_ckpt = ckpt_dir / "finetune.pt"
    skip_distill = args.resume and "finetune" in data and finetune_ckpt.is_file()
    if "distill" in data and not skip_distill:
        assert teacher is not None
        losses = distill_text_tower(
            teacher,
            model,
            data["distill"],
            short_tokenizer,
            _config(args, "distill"),
            loss=args.distill_loss,
            checkpoint=ckpt_dir / "distill.pt",
            resume=args.resume,
            progress=progress,
            info=info,
        )
        summary["distill_loss_first_last"] = [losses[0], losses[-1]] if losses else []
    if "finetune" in data:
        prepare_finetune(args, model, teacher)
        losses = finetune_long_captions(
            model,
            data["finetune"],
            preprocess,
            open_clip.get_tokenizer(name, context_length=model.text_context_spec.context_length),
            _config(args, "finetune"),
            lock_image=args.lock_image,
            train_token_embedding=args.train_token_embedding,
            long_weight=args.long_weight,
            short_weight=args.short_weight,
            short_image=args.short_image,
            pca_dim=args.pca_dim,
            label_smoothing=args.label_smoothing,
            frozen_rows=args.frozen_rows or 0,
            checkpoint=finetune_ckpt,
            resume=args.resume,
            progress=progress,
            info=info,
        )
        summary["finetune_loss_first_last"] = [losses[0], losses[-1]] if losses else []
    model.eval()
    if info.main:
        save_upgraded(model, out, model_cfg)
        if "eval" in data:
            assert teacher is not None
            pairs = data["eval"]
            summary["eval_upgraded"] = evaluate_pairs(model, pairs, preprocess, long_tokenizer)
            summary["eval_original"] = evaluate_pairs(teacher, pairs, preprocess, short_tokenizer)
            summary["short_caption_preservation"] = short_caption_preservation(
                teacher, model, short_tokenizer([c for _, c in pairs])
            )
        summary["out"] = str(out)
        summary["spec"] = TextContextSpec.to_dict(model.text_context_spec)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not args.keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        print(json.dumps(summary))
    if info.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
