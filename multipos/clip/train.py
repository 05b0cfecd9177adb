r"""Fine-tune an upgraded CLIP with open_clip's own trainer (``open_clip_train``, extra ``train``).

Example::

    python -m multipos.clip.train --model local-dir:DIR --train-data pairs.csv \
        --dataset-type csv --batch-size 64 --lr 1e-5 --epochs 1 --workers 8 \
        --precision amp_bf16 --accum-freq 4 --grad-checkpointing \
        --short-weight 0.2 --long-weight 0.8 --export OUT
    torchrun --nproc_per_node=8 -m multipos.clip.train ...

``DIR`` is a folder written by :func:`~multipos.clip.save_upgraded` (or the command
``multipos-clip-upgrade``); importing :mod:`multipos.clip` lets open_clip's factory build it.
The options below are this launcher's; **every other option goes to** ``open_clip_train``
unchanged (CSV and webdataset data, workers, precision, accumulation, gradient checkpointing,
logging, zero-shot and validation evaluation, resume, torchrun), see
``python -m open_clip_train.main --help``.

* ``--short-weight W`` / ``--long-weight``: the first-sentence contrastive loss of Long-CLIP
  and TULIP (:class:`~multipos.clip.objectives.LongShortClipLoss`); first sentences are cut
  from the caption ids while training (:func:`~multipos.clip.objectives.first_sentence_ids`).
* ``--short-image pca --pca-dim 32 --label-smoothing 0.1``: Long-CLIP's short-caption target.
* ``--frozen-rows R``: rows ``< R`` of a ``linear``/``kps`` table stay frozen (Long-CLIP: 20).
* ``--export OUT``: after training, rank 0 writes the trained model as a ``local-dir``
  folder (frozen rows merged back into one table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from multipos.clip.checkpoint import read_spec, save_upgraded
from multipos.clip.objectives import LongShortClipLoss, first_sentence_ids, period_token_id
from multipos.clip.recipes import freeze_position_rows, release_position_rows
from multipos.clip.spec import text_context_spec

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The launcher's own options (the rest are open_clip_train's)."""
    p = argparse.ArgumentParser(
        prog="python -m multipos.clip.train",
        description="open_clip_train for upgraded text towers, plus the first-sentence loss "
        "and frozen table rows. Unknown options are passed to open_clip_train.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--long-weight", type=float, default=1.0, help="long-caption loss weight")
    p.add_argument("--short-weight", type=float, default=0.0, help="first-sentence loss weight")
    p.add_argument("--short-image", choices=("full", "pca"), default="full", help="short target")
    p.add_argument("--pca-dim", type=int, default=32, help="pca: principal components kept")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="of both losses")
    p.add_argument("--frozen-rows", type=int, default=0, help="linear/kps: frozen table rows")
    p.add_argument("--export", default=None, help="write the trained model to this folder")
    return p


def _with_first_sentence(model: nn.Module) -> None:
    """``model(images, texts)`` also returns ``short_text_features`` while training."""
    spec = text_context_spec(model)
    if spec is None:
        raise ValueError("--short-weight needs an upgraded model (--model local-dir:DIR)")
    target = cast(Any, model)
    plain = model.forward
    period = period_token_id()

    def forward(image: Tensor | None = None, text: Tensor | None = None) -> Any:
        out = plain(image, text)
        if model.training and text is not None and isinstance(out, dict):
            short = first_sentence_ids(text, period_id=period, length=spec.original_length)
            out["short_text_features"] = target.encode_text(short, normalize=True)
        return out

    target.forward = forward


def main(argv: Sequence[str] | None = None) -> int:
    """Run open_clip_train with the upgraded-model loader, the extra losses and options."""
    try:
        import open_clip_train.main as trainer
    except ImportError as err:
        raise SystemExit(
            f"open_clip_train is not installed ({err}); pip install 'multipos[train]'"
        ) from err
    ours, rest = build_parser().parse_known_args(argv)
    created: list[nn.Module] = []
    create = trainer.create_model_and_transforms
    make_loss = trainer.create_loss

    def create_model_and_transforms(*args: Any, **kwargs: Any) -> Any:
        model, *transforms = create(*args, **kwargs)
        if not created:  # the trained model (a later call builds open_clip's distill teacher)
            if ours.frozen_rows:
                freeze_position_rows(model, ours.frozen_rows)
            if ours.short_weight > 0:
                _with_first_sentence(model)
            created.append(model)
        return (model, *transforms)

    def create_loss(args: Any) -> nn.Module:
        if ours.short_weight == 0 and ours.long_weight == 1 and not ours.label_smoothing:
            return make_loss(args)  # type: ignore[no-any-return]
        if args.siglip or args.distill or "coca" in str(args.model).lower():
            raise ValueError("--short-weight / --label-smoothing apply to the CLIP loss only")
        return LongShortClipLoss(
            ours.long_weight,
            ours.short_weight,
            short_image=ours.short_image,
            pca_dim=ours.pca_dim,
            label_smoothing=ours.label_smoothing,
            rank=args.rank,
            world_size=args.world_size,
        )

    trainer.create_model_and_transforms = create_model_and_transforms
    trainer.create_loss = create_loss
    try:
        trainer.main(rest)
    finally:
        trainer.create_model_and_transforms, trainer.create_loss = create, make_loss
    if ours.export and created and _is_main():
        model = created[0]
        release_position_rows(model)
        model_name = _model_option(rest)
        if not model_name.startswith("local-dir:"):
            raise ValueError("--export needs --model local-dir:DIR (an upgraded folder)")
        config, _ = read_spec(model_name.removeprefix("local-dir:"))
        save_upgraded(model.cpu().eval(), Path(ours.export), config["model_cfg"])
    return 0


def _model_option(rest: Sequence[str]) -> str:
    for i, item in enumerate(rest):
        if item == "--model" and i + 1 < len(rest):
            return rest[i + 1]
        if item.startswith("--model="):
            return item.split("=", 1)[1]
    return ""


def _is_main() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


if __name__ == "__main__":
    sys.exit(main())
