r"""The official training recipes of Long-CLIP and TULIP as named presets, and the model
changes they need (frozen table rows, the teacher's projection, a longer rotary context).

Every field of :class:`Recipe` is also an individual option of ``multipos-clip-upgrade``; a
preset only fills the options the user did not give. Sources (read in the official code):

* ``"long-clip"`` ("Long-CLIP: Unlocking the Long-Text Capability of CLIP", Zhang et al., ECCV
  2024, arXiv:2403.15378; ``model/longclip.py``, ``model/model_longclip.py``,
  ``train/train.py``): knowledge-preserved stretching with 20 kept rows; while training, the
  first 20 rows come from a frozen table and the others from a trainable residual copy
  (Sec. 3.2); loss = long-caption CLIP loss + first-sentence CLIP loss against the image
  features reduced to 32 principal components (Sec. 3.3), both with label smoothing 0.1; every
  other parameter trained, both towers included; AdamW lr 1e-6, weight decay 0.01, 200
  warm-up steps, cosine schedule, 2 epochs (``train.py`` defaults), logit scale reset to
  ln(100).
* ``"tulip"`` ("TULIP: Token-length Upgraded CLIP", Najdenkoska et al., ICLR 2025,
  arXiv:2410.10034; ``scripts/distill_tulip.sh``, ``scripts/finetune_tulip.sh``,
  ``training/train_distill.py``, ``training/main_context_finetune_rope.py``,
  ``training/train.py``): stage 1 cosine distillation, lr 5e-4, weight decay 0.1, 1000 warm-up
  steps (the script's bf16 and gradient accumulation 4 are options here too), token table
  frozen; stage 2 keeps the **teacher's** text projection (the distilled one is discarded),
  trains the token table, weights the long and first-sentence losses 0.8 / 0.2, lr 1e-5,
  weight decay 0.1, 1000 warm-up steps, and runs the rotary tower with dynamic NTK scaling of
  factor 8 over the distilled length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from multipos.clip.objectives import DistillLoss
from multipos.clip.spec import Method, TextContextSpec, text_context_spec
from multipos.clip.text_rope import RotaryAttention
from multipos.clip.towers import text_tower
from multipos.frequencies import FrequencyScaling

__all__ = [
    "RECIPES",
    "FrozenRows",
    "Recipe",
    "extend_rotary_context",
    "freeze_position_rows",
    "release_position_rows",
    "use_teacher_projection",
]


@dataclass(frozen=True)
class Recipe:
    """Training choices of one recipe; ``None`` leaves the command's own default.

    Attributes:
        method: Upgrade method.
        distill: Whether stage 1 (distillation) belongs to the recipe.
        distill_loss: ``"cosine"``, ``"mse"`` or ``"l2"``.
        distill_lr, distill_weight_decay, distill_warmup: Stage-1 AdamW settings.
        projection: Stage-2 text projection: ``"distilled"`` (the student's) or ``"teacher"``.
        train_token_embedding: Stage 2 trains the token table.
        frozen_rows: Stage 2 keeps the first rows of the position table frozen (0: none).
        long_weight, short_weight: Weights of the long and first-sentence losses.
        short_image: Image features of the first-sentence loss: ``"full"`` or ``"pca"``.
        pca_dim: Principal components for ``"pca"``.
        label_smoothing: Cross-entropy label smoothing of both contrastive losses.
        lock_image: Freeze the image tower in stage 2.
        lr, weight_decay, warmup, epochs: Stage-2 AdamW / schedule settings.
        logit_scale: Stage-2 initial log logit scale (``None``: keep the model's).
        finetune_scaling, finetune_scaling_factor: Rotary scaling installed for stage 2.
    """

    method: Method
    distill: bool
    distill_loss: DistillLoss = "cosine"
    distill_lr: float | None = None
    distill_weight_decay: float | None = None
    distill_warmup: int | None = None
    projection: Literal["distilled", "teacher"] = "distilled"
    train_token_embedding: bool = False
    frozen_rows: int = 0
    long_weight: float = 1.0
    short_weight: float = 0.0
    short_image: Literal["full", "pca"] = "full"
    pca_dim: int = 32
    label_smoothing: float = 0.0
    lock_image: bool = False
    lr: float | None = None
    weight_decay: float | None = None
    warmup: int | None = None
    epochs: int | None = None
    logit_scale: float | None = None
    finetune_scaling: Literal["none", "dynamic"] = "none"
    finetune_scaling_factor: float = 1.0

    def options(self) -> dict[str, Any]:
        """The recipe as a plain dict (field name -> value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


RECIPES: dict[str, Recipe] = {
    "long-clip": Recipe(
        method="kps",
        distill=False,
        train_token_embedding=True,
        frozen_rows=20,
        long_weight=1.0,
        short_weight=1.0,
        short_image="pca",
        pca_dim=32,
        label_smoothing=0.1,
        lr=1e-6,
        weight_decay=1e-2,
        warmup=200,
        epochs=2,
        logit_scale=4.6052,
    ),
    "tulip": Recipe(
        method="rope",
        distill=True,
        distill_loss="cosine",
        distill_lr=5e-4,
        distill_weight_decay=0.1,
        distill_warmup=1000,
        projection="teacher",
        train_token_embedding=True,
        long_weight=0.8,
        short_weight=0.2,
        lr=1e-5,
        weight_decay=0.1,
        warmup=1000,
        finetune_scaling="dynamic",
        finetune_scaling_factor=8.0,
    ),
}


class FrozenRows(nn.Module):
    """Parametrization of a position table: rows ``< R`` from a frozen copy, the rest from the
    trainable table (Long-CLIP's ``positional_embedding`` + ``positional_embedding_res``).

    Shape:
        ``forward(table: (N, C)) -> (N, C)``.
    """

    frozen: Tensor

    def __init__(self, frozen: Tensor) -> None:
        super().__init__()
        self.register_buffer("frozen", frozen.detach().clone())

    def forward(self, table: Tensor) -> Tensor:
        rows = self.frozen.shape[0]
        return torch.cat([self.frozen.to(table.dtype), table[rows:]], dim=0)


def freeze_position_rows(model: nn.Module, rows: int) -> None:
    """Keep the first ``rows`` rows of an upgraded absolute table fixed while training.

    The table becomes a frozen part plus a trainable residual (a ``torch.nn.utils.parametrize``
    parametrization, so weight decay and optimiser state cannot move the frozen rows); undo it
    with :func:`release_position_rows` before saving.

    Raises:
        ValueError: If the model is not upgraded, is a ``"rope"`` tower (no table) or ``rows``
            is not in ``[1, N]``.
    """
    spec = _spec(model)
    if spec.method == "rope":
        raise ValueError("frozen position rows need a position table; 'rope' towers have none")
    if not 1 <= rows <= spec.context_length:
        raise ValueError(f"frozen rows must be in [1, {spec.context_length}], got {rows}")
    tower = text_tower(model)
    if parametrize.is_parametrized(tower, "positional_embedding"):
        raise ValueError("position rows are already frozen")
    frozen = tower.positional_embedding[:rows]
    parametrize.register_parametrization(tower, "positional_embedding", FrozenRows(frozen))


def release_position_rows(model: nn.Module) -> None:
    """Undo :func:`freeze_position_rows`: one plain table with the trained values (no-op
    when nothing is frozen)."""
    tower = text_tower(model)
    if parametrize.is_parametrized(tower, "positional_embedding"):
        parametrize.remove_parametrizations(tower, "positional_embedding", leave_parametrized=True)


def use_teacher_projection(student: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's text projection into the student (TULIP's stage 2 discards the
    distilled projection: ``main_context_finetune_rope.py`` swaps in the distilled tower but
    keeps the original model's ``text_projection``).

    Raises:
        ValueError: If the projections differ in shape.
    """
    source, target = text_tower(teacher).text_projection, text_tower(student).text_projection
    source_w = source.weight if isinstance(source, nn.Linear) else source
    target_w = target.weight if isinstance(target, nn.Linear) else target
    if source_w.shape != target_w.shape:
        raise ValueError(
            f"text projections differ: {tuple(source_w.shape)} vs {tuple(target_w.shape)}"
        )
    with torch.no_grad():
        target_w.copy_(source_w)
        if isinstance(source, nn.Linear) and source.bias is not None:
            target.bias.copy_(source.bias)


def extend_rotary_context(
    model: nn.Module, context_length: int, scaling: FrequencyScaling | dict[str, Any] | str | None
) -> TextContextSpec:
    """Give a ``"rope"`` tower a new context length and frequency scaling, in place.

    TULIP's stage 2 replaces the distilled rotary table with a dynamic-NTK one
    (``precompute_freqs_cis_dynamic_ntk_scaling``, factor 8); with ``scaling={"kind":
    "dynamic", "factor": 8, "original_length": N}`` and a longer ``context_length`` this is
    the same base, evaluated at the new length. No learned value changes.

    Returns:
        The new spec (also set on the model, so it is saved).

    Raises:
        ValueError: If the model is not an upgraded ``"rope"`` tower or the length shrinks.
    """
    spec = _spec(model)
    if spec.method != "rope":
        raise ValueError(f"only 'rope' towers change their rotary context, not {spec.method!r}")
    new = TextContextSpec(
        **{**spec.to_dict(), "context_length": context_length, "scaling": scaling}
    )
    tower = text_tower(model)
    head_dim = tower.transformer.width // tower.transformer.resblocks[0].attn.num_heads
    rotary = new.rotary(head_dim).to(tower.token_embedding.weight.device)
    for block in tower.transformer.resblocks:
        if isinstance(block.attn, RotaryAttention):
            block.attn.rotary = rotary
            block.attn.context_length = context_length
    if tower is not model:
        tower.num_pos = tower.context_length = context_length
        tower.text_context_spec = new
    target = cast(Any, model)
    target.context_length = context_length
    target.text_context_spec = new
    return new


def _spec(model: nn.Module) -> TextContextSpec:
    spec = text_context_spec(model)
    if spec is None:
        raise ValueError("model must be upgraded with upgrade_text_context first")
    return spec
