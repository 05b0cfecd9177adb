"""Options of ``multipos-clip-upgrade`` that depend on each other: a recipe fills the ones
left unset, then the general defaults; options of another method are refused.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from multipos.clip.recipes import RECIPES, extend_rotary_context, use_teacher_projection

__all__ = [
    "GENERAL_DEFAULTS",
    "METHOD_OPTIONS",
    "RECIPE_OPTIONS",
    "prepare_finetune",
    "settle_options",
]

#: Options that belong to one method only, and their defaults.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "kps": {"keep": 20, "stretch": None},
    "rope": {
        "rope_base": 10000.0,
        "rope_layout": "interleaved",
        "rope_scaling": "none",
        "rope_scaling_factor": 1.0,
        "rope_original_length": None,
        "finetune_context_length": None,
        "finetune_rope_scaling": "none",
        "finetune_rope_scaling_factor": 1.0,
    },
    "linear/kps": {"frozen_rows": 0},
}
#: Recipe field -> command option.
RECIPE_OPTIONS = {
    "method": "method",
    "distill_loss": "distill_loss",
    "distill_lr": "distill_lr",
    "distill_weight_decay": "distill_weight_decay",
    "distill_warmup": "distill_warmup",
    "projection": "projection",
    "train_token_embedding": "train_token_embedding",
    "frozen_rows": "frozen_rows",
    "long_weight": "long_weight",
    "short_weight": "short_weight",
    "short_image": "short_image",
    "pca_dim": "pca_dim",
    "label_smoothing": "label_smoothing",
    "lr": "finetune_lr",
    "weight_decay": "finetune_weight_decay",
    "warmup": "finetune_warmup",
    "epochs": "finetune_epochs",
    "logit_scale": "logit_scale",
    "finetune_scaling": "finetune_rope_scaling",
    "finetune_scaling_factor": "finetune_rope_scaling_factor",
}
GENERAL_DEFAULTS: dict[str, Any] = {
    "method": "rope",
    "distill_loss": "cosine",
    "distill_lr": 1e-4,
    "distill_weight_decay": 0.1,
    "distill_warmup": 0,
    "projection": "distilled",
    "train_token_embedding": False,
    "long_weight": 1.0,
    "short_weight": 0.0,
    "short_image": "full",
    "pca_dim": 32,
    "label_smoothing": 0.0,
    "finetune_lr": 1e-5,
    "finetune_weight_decay": 0.1,
    "finetune_warmup": 0,
    "finetune_epochs": 1,
}


def settle_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset: from ``--recipe``, then the defaults; refuse options that
    do not apply to the method (they would be ignored, or saved into a spec unused).

    Raises:
        ValueError: Naming the options that do not apply, or a context that does not grow.
    """
    if args.recipe is not None:
        recipe = RECIPES[args.recipe]
        for field, option in RECIPE_OPTIONS.items():
            if getattr(args, option) is None:
                setattr(args, option, getattr(recipe, field))
        if not recipe.distill and args.distill_data is not None:
            raise ValueError(f"--recipe {args.recipe} has no distillation stage (--distill-data)")
    for option, value in GENERAL_DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    groups = {
        "kps": args.method == "kps",
        "rope": args.method == "rope",
        "linear/kps": args.method in ("linear", "kps"),
    }
    recipe_set = set(RECIPE_OPTIONS.values()) if args.recipe else set()
    wrong = []
    for group, options in METHOD_OPTIONS.items():
        for option, default in options.items():
            value = getattr(args, option)
            if groups[group]:
                if value is None:
                    setattr(args, option, default)
            elif value is not None and not (option in recipe_set and value == default):
                wrong.append(f"--{option.replace('_', '-')} ({group} only)")
            else:
                setattr(args, option, default if groups[group] else None)
    if wrong:
        raise ValueError(f"option(s) that do not apply to --method {args.method}: {wrong}")
    return args


def prepare_finetune(args: argparse.Namespace, model: Any, teacher: Any) -> None:
    """Stage-2 model changes of the recipe: teacher projection, logit scale, rotary context."""
    if args.projection == "teacher" and teacher is not None and args.distill_data is not None:
        use_teacher_projection(model, teacher)
    if args.logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(args.logit_scale)
    if args.method == "rope" and (
        args.finetune_context_length is not None or args.finetune_rope_scaling != "none"
    ):
        spec = model.text_context_spec
        length = args.finetune_context_length or spec.context_length
        scaling = None
        if args.finetune_rope_scaling == "dynamic":
            scaling = {
                "kind": "dynamic",
                "factor": args.finetune_rope_scaling_factor,
                "original_length": float(spec.context_length),
            }
        extend_rotary_context(model, length, scaling)
