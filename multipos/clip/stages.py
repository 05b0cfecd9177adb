r"""TULIP's two training stages for an upgraded open_clip text tower, with DDP and resume.

From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034):

* **Stage 1, distillation** (:func:`distill_text_tower`): the original tower (teacher, frozen)
  and the upgraded tower (student) read the same first ``L0 = 77`` tokens of each caption; the
  loss is the cosine distance of the projected, pooled text embeddings

  .. math::
      \mathcal{L}_1 = \frac{1}{B} \sum_b \Big(1 - \cos\big(f_T(t_b^{\le L_0}),\,
      f_S(t_b^{\le L_0})\big)\Big)

  The student's text projection is trained and **kept** (TULIP's released stage 2 discards it).
* **Stage 2, long captions** (:func:`finetune_long_captions`): the CLIP contrastive loss
  (Radford et al., 2021, arXiv:2103.00020) on (image, long caption) pairs read at ``N``
  tokens; the image tower can be locked.

Both stages run under ``torchrun --nproc_per_node=K`` with ``DistributedDataParallel`` (gloo on
CPU, NCCL on CUDA), show tqdm progress bars on rank 0, write periodic checkpoints and resume
from them (:func:`~multipos.clip.loop.run_stage`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from PIL import Image
from torch import Tensor, nn

from multipos.clip.data import CaptionDataset, PairDataset
from multipos.clip.distributed import DistInfo, init_distributed
from multipos.clip.loop import StageConfig, run_stage
from multipos.clip.objectives import (
    DistillLoss,
    LongShortClipLoss,
    distillation_loss,
    first_sentence_ids,
    period_token_id,
)
from multipos.clip.recipes import freeze_position_rows, release_position_rows
from multipos.clip.spec import TextContextSpec, text_context_spec
from multipos.clip.towers import text_tower as text_tower_of
from multipos.clip.towers import trim_tokens

__all__ = ["distill_text_tower", "finetune_long_captions", "text_parameters"]


def text_parameters(model: nn.Module, *, token_embedding: bool = False) -> list[str]:
    """Names of the text-tower parameters of an open_clip CLIP/CustomTextCLIP.

    ``token_embedding=False`` leaves the token table out (TULIP does not train it).
    """
    names = []
    for name, _ in model.named_parameters():
        if name.startswith("visual.") or name in ("logit_scale", "logit_bias"):
            continue
        if not token_embedding and name.split(".")[-2:-1] == ["token_embedding"]:
            continue
        names.append(name)
    return names


class _TextFeatures(nn.Module):
    """``encode_text`` as ``forward``, so DDP sees (and syncs) the text-tower gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, cast(Any, self.model).encode_text(tokens))


def _upgraded_spec(model: nn.Module, role: str) -> TextContextSpec:
    spec = text_context_spec(model)
    if spec is None:
        raise ValueError(f"{role} must be upgraded with upgrade_text_context first")
    return spec


def distill_text_tower(
    teacher: nn.Module,
    student: nn.Module,
    captions: Sequence[str],
    tokenizer: Callable[..., Tensor],
    config: StageConfig | None = None,
    *,
    train_token_embedding: bool = False,
    loss: DistillLoss = "cosine",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    info: DistInfo | None = None,
) -> list[float]:
    r"""TULIP stage 1: distil the original text tower into the upgraded one on 77 tokens.

    From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034),
    Sec. 3.2: :math:`\mathcal{L}_1 = 1 - \cos(f_T(t), f_S(t))` on the projected, pooled
    embeddings of the same first ``L0`` tokens ``t`` (``tokenizer`` should tokenize at the
    teacher's length, 77). Trained: every text-tower parameter of ``student`` except the token
    table (unless ``train_token_embedding``); the projection is trained and kept.

    Args:
        teacher: The original model (frozen, eval mode).
        student: The upgraded model (trained in place).
        captions: Caption strings.
        tokenizer: Tokenizer at the teacher's context length.
        config: Hyper-parameters.
        train_token_embedding: Also train the token table.
        loss: ``"cosine"`` (TULIP's script), ``"mse"`` or ``"l2"``
            (:func:`~multipos.clip.objectives.distillation_loss`).
        checkpoint: Checkpoint file (written every ``config.checkpoint_every`` steps and at the
            end).
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show a tqdm bar (rank 0).
        info: Distributed info (default: :func:`init_distributed`).

    Returns:
        The loss of every step (averaged over ranks).

    Raises:
        ValueError: If ``student`` is not upgraded, ``loss`` is unknown, there are fewer
            captions than a batch, or the checkpoint belongs to another run.
    """
    spec = _upgraded_spec(student, "student")
    distillation_loss(torch.zeros(1, 1), torch.zeros(1, 1), loss)  # refuses an unknown kind
    info = info or init_distributed()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = next(student.parameters()).device

    # An original open_clip tower reads exactly its context length, so only an upgraded
    # teacher gets the trimmed ids (trimming is exact for upgraded towers, just faster).
    trim_teacher = text_context_spec(teacher) is not None

    def loss_of_batch(module: nn.Module, tokens: Tensor) -> Tensor:
        tokens = tokens.to(device)
        trimmed = trim_tokens(tokens)
        with torch.no_grad():
            target = cast(Any, teacher).encode_text(trimmed if trim_teacher else tokens)
        return distillation_loss(module(trimmed).float(), target.float(), loss)

    return run_stage(
        stage="distill",
        model=student,
        trainable=text_parameters(student, token_embedding=train_token_embedding),
        ddp_module=_TextFeatures(student),
        dataset=CaptionDataset(captions, tokenizer),
        loss_of_batch=loss_of_batch,
        config=config,
        info=info,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        extra_state={"spec": spec.to_dict(), "loss": loss},
    )


class _LongShortFeatures(nn.Module):
    """Normalised image, long-caption and first-sentence features in one ``forward`` (so DDP
    sees every parameter the losses use)."""

    def __init__(self, model: nn.Module, short: bool) -> None:
        super().__init__()
        self.model, self.short = model, short

    def forward(self, images: Tensor, long_ids: Tensor, short_ids: Tensor) -> tuple[Any, ...]:
        model = cast(Any, self.model)
        image = model.encode_image(images, normalize=True)
        text = model.encode_text(trim_tokens(long_ids), normalize=True)
        short = model.encode_text(trim_tokens(short_ids), normalize=True) if self.short else None
        return image, text, short, model.logit_scale.exp()


def finetune_long_captions(
    model: nn.Module,
    pairs: Sequence[tuple[Path, str]] | torch.utils.data.Dataset[Any],
    preprocess: Callable[[Image.Image], Tensor] | None,
    tokenizer: Callable[..., Tensor] | None,
    config: StageConfig | None = None,
    *,
    lock_image: bool = False,
    train_token_embedding: bool = False,
    long_weight: float = 1.0,
    short_weight: float = 0.0,
    short_image: Literal["full", "pca"] = "full",
    pca_dim: int = 32,
    label_smoothing: float = 0.0,
    frozen_rows: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    info: DistInfo | None = None,
) -> list[float]:
    r"""TULIP stage 2: CLIP contrastive fine-tuning on (image, long caption) pairs.

    From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034),
    Sec. 3.3, with the symmetric InfoNCE loss of CLIP (Radford et al., 2021,
    arXiv:2103.00020, Eq. in Fig. 3):

    .. math::
        \mathcal{L}_2 = \tfrac12\big(\mathrm{CE}(s\, I T^\top, \mathrm{id})
        + \mathrm{CE}(s\, T I^\top, \mathrm{id})\big)

    with :math:`I, T` the normalised image and text features and :math:`s` the logit scale;
    under DDP the features of all ranks are gathered (open_clip's ``ClipLoss``). Captions are
    tokenized at ``N`` (``tokenizer``) and trimmed to the longest caption of each batch.

    Args:
        model: An upgraded model (trained in place).
        pairs: ``(image path, caption)`` pairs (see :func:`read_pairs`) or a dataset yielding
            ``(image tensor, token ids)``.
        preprocess: Image transform (ignored when ``pairs`` is a dataset).
        tokenizer: Tokenizer at ``N`` (ignored when ``pairs`` is a dataset).
        config: Hyper-parameters.
        lock_image: Freeze the image tower (LiT-style); TULIP trains both towers.
        train_token_embedding: Also train the token table.
        long_weight, short_weight: Weights of the long-caption and first-sentence losses
            (:class:`~multipos.clip.objectives.LongShortClipLoss`; Long-CLIP 1 / 1, TULIP
            0.8 / 0.2). First sentences are cut from the caption ids at the first period
            (:func:`~multipos.clip.objectives.first_sentence_ids`), at the original length.
        short_image: ``"pca"``: the first-sentence loss sees image features reduced to
            ``pca_dim`` principal components (Long-CLIP); ``"full"``: as they are (TULIP).
        pca_dim: Components kept for ``"pca"`` (Long-CLIP: 32).
        label_smoothing: Label smoothing of both losses (Long-CLIP: 0.1).
        frozen_rows: Keep the first rows of a ``"linear"``/``"kps"`` table frozen while
            training (Long-CLIP: 20; :func:`~multipos.clip.recipes.freeze_position_rows`).
        checkpoint, resume, progress, info: As :func:`distill_text_tower`.

    Returns:
        The loss of every step.

    Raises:
        ValueError: If ``model`` is not upgraded or the checkpoint belongs to another run.
    """
    spec = _upgraded_spec(model, "model")
    info = info or init_distributed()
    if isinstance(pairs, torch.utils.data.Dataset):
        dataset = pairs
    else:
        if preprocess is None or tokenizer is None:
            raise ValueError("preprocess and tokenizer are needed for (path, caption) pairs")
        dataset = PairDataset(pairs, preprocess, tokenizer)
    loss_fn = LongShortClipLoss(
        long_weight,
        short_weight,
        short_image=short_image,
        pca_dim=pca_dim,
        label_smoothing=label_smoothing,
        rank=info.rank,
        world_size=info.world_size,
    )
    if frozen_rows:
        freeze_position_rows(model, frozen_rows)
    trainable = text_parameters(model, token_embedding=train_token_embedding)
    trainable.append("logit_scale")
    if not lock_image:
        trainable += [n for n, _ in model.named_parameters() if n.startswith("visual.")]
    device = next(model.parameters()).device
    period = period_token_id()
    eot = int(getattr(text_tower_of(model), "text_eos_id", None) or 49407)

    def loss_of_batch(module: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, tokens = batch
        tokens = tokens.to(device)
        short = first_sentence_ids(
            tokens, period_id=period, eot_id=eot, length=spec.original_length
        )
        image, text, short_text, scale = module(images.to(device), tokens, short)
        return cast(Tensor, loss_fn(image, text, scale, short_text))

    objective = {
        "lock_image": lock_image,
        "train_token_embedding": train_token_embedding,
        "weights": [long_weight, short_weight],
        "short_image": short_image,
        "pca_dim": pca_dim,
        "label_smoothing": label_smoothing,
        "frozen_rows": frozen_rows,
    }
    try:
        return run_stage(
            stage="finetune",
            model=model,
            trainable=trainable,
            ddp_module=_LongShortFeatures(model, short_weight > 0),
            dataset=dataset,
            loss_of_batch=loss_of_batch,
            config=config,
            info=info,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            extra_state={"spec": spec.to_dict(), **objective},
        )
    finally:
        release_position_rows(model)
