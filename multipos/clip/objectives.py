r"""Training objectives of the CLIP text-length recipes: distillation losses, first-sentence
captions, Long-CLIP's PCA-reduced image features and the long + short contrastive loss.

* Distillation (TULIP, "TULIP: Token-length Upgraded CLIP", Najdenkoska et al., ICLR 2025,
  arXiv:2410.10034; the official ``train_distill.py`` offers ``cosine``, ``mse`` and ``l2``,
  its released script uses ``cosine``): :func:`distillation_loss`.
* First sentence of a caption: both papers add a contrastive loss on a short caption cut
  from the long one (Long-CLIP's data reader keeps the text before the first ``". "``, TULIP's
  the text before the first ``"."``). :func:`first_sentence_ids` cuts token ids at the first
  period token, so it needs no second tokenization and works inside open_clip's data
  pipeline.
* Long-CLIP ("Long-CLIP: Unlocking the Long-Text Capability of CLIP", Zhang et al., ECCV 2024,
  arXiv:2403.15378, Sec. 3.3, primary component matching): the short caption is matched
  against the image features projected onto their first 32 principal components and mapped
  back (:func:`pca_reconstruct`; the official ``model_longclip.py`` does this on the
  normalised features of the local batch with an SVD).
* :class:`LongShortClipLoss`: ``w_long * L(I, T_long) + w_short * L(I_short, T_short)``, each
  the symmetric InfoNCE loss of CLIP with optional label smoothing (Long-CLIP: 0.1, weights
  1 and 1; TULIP's stage 2 with gradient accumulation: 0.8 and 0.2, no smoothing).
"""

from __future__ import annotations

import functools
from typing import Literal, cast, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DISTILL_LOSSES",
    "DistillLoss",
    "LongShortClipLoss",
    "distillation_loss",
    "first_sentence_ids",
    "pca_reconstruct",
    "period_token_id",
]

DistillLoss = Literal["cosine", "mse", "l2"]
DISTILL_LOSSES: tuple[str, ...] = get_args(DistillLoss)


def distillation_loss(student: Tensor, teacher: Tensor, kind: DistillLoss = "cosine") -> Tensor:
    r"""Distance between student and teacher text embeddings ``(B, E)``, averaged over ``B``.

    ``cosine``: :math:`1 - \cos(s_b, t_b)`; ``mse``: :math:`\frac{1}{BE}\sum (s - t)^2`;
    ``l2``: :math:`\lVert s_b - t_b \rVert_2` (the three of TULIP's ``train_distill.py``).

    Raises:
        ValueError: For another ``kind`` or mismatched shapes.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "l2":
        return cast(Tensor, (student - teacher).norm(dim=-1).mean())
    raise ValueError(f"distillation loss must be one of {DISTILL_LOSSES}, got {kind!r}")


@functools.lru_cache(maxsize=1)
def period_token_id() -> int:
    """Id of the sentence-ending ``"."`` in open_clip's CLIP BPE vocabulary (269)."""
    import open_clip

    return int(open_clip.tokenizer.SimpleTokenizer().encoder[".</w>"])


def first_sentence_ids(
    ids: Tensor, *, period_id: int, eot_id: int = 49407, length: int = 77
) -> Tensor:
    """Token ids of each caption's first sentence, ``(B, L) -> (B, length)``.

    The tokens before the first ``period_id`` (or before the end token when there is none),
    cut to ``length - 1`` tokens (start token included), then the end token and padding 0,
    as open_clip's tokenizer would produce for the first sentence.

    Raises:
        ValueError: If ``ids`` is not 2-D or ``length < 2``.
    """
    if ids.dim() != 2 or length < 2:
        raise ValueError(f"ids must be (B, L) and length >= 2, got {tuple(ids.shape)}, {length}")
    batch, width = ids.shape
    positions = torch.arange(width, device=ids.device).expand(batch, width)
    stop = (ids == period_id) | (ids == eot_id)
    # First stop token per row; a row without one (should not happen) ends at its width.
    end = torch.where(stop, positions, width).amin(dim=1).clamp(max=length - 1)
    out = torch.zeros(batch, length, dtype=ids.dtype, device=ids.device)
    width_in = min(width, length)
    keep = positions[:, :width_in] < end[:, None]
    out[:, :width_in] = torch.where(keep, ids[:, :width_in], 0)
    out[torch.arange(batch, device=ids.device), end] = eot_id
    return out


def pca_reconstruct(features: Tensor, dim: int = 32) -> Tensor:
    r"""Project ``(B, E)`` features onto their first ``dim`` principal components and back.

    Long-CLIP, Sec. 3.3 (primary component matching):
    :math:`\hat X = (X - \mu) V_k V_k^\top + \mu` with :math:`V_k` the top-``dim`` right
    singular vectors of the centred batch. Computed in float32. With ``dim >= min(B, E)``
    the features come back unchanged (up to rounding).

    Raises:
        ValueError: If ``features`` is not 2-D or ``dim < 1``.
    """
    if features.dim() != 2 or dim < 1:
        raise ValueError(f"features must be (B, E) and dim >= 1, got {tuple(features.shape)}")
    x = features.float()
    mean = x.mean(dim=0, keepdim=True)
    centred = x - mean
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    basis = vt[:dim].T  # (E, k)
    return cast(Tensor, (centred @ basis @ basis.T + mean).to(features.dtype))


def _contrastive(
    image: Tensor, text: Tensor, scale: Tensor, smoothing: float, rank: int, world: int
) -> Tensor:
    """Symmetric InfoNCE of the local batch against the features of every rank."""
    if world > 1:
        import torch.distributed.nn as dist_nn

        all_image = torch.cat(dist_nn.all_gather(image), dim=0)  # type: ignore[no-untyped-call]
        all_text = torch.cat(dist_nn.all_gather(text), dim=0)  # type: ignore[no-untyped-call]
    else:
        all_image, all_text = image, text
    targets = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    per_image = scale * image @ all_text.T
    per_text = scale * text @ all_image.T
    return 0.5 * (
        F.cross_entropy(per_image, targets, label_smoothing=smoothing)
        + F.cross_entropy(per_text, targets, label_smoothing=smoothing)
    )


class LongShortClipLoss(nn.Module):
    r"""CLIP loss on long captions plus a first-sentence loss, open_clip's loss interface.

    .. math::
        \mathcal{L} = w_\ell\, \mathcal{L}_{\mathrm{CLIP}}(I, T_\ell)
        + w_s\, \mathcal{L}_{\mathrm{CLIP}}(\phi(I), T_s)

    with :math:`\phi` the identity (TULIP) or :func:`pca_reconstruct` (Long-CLIP, 32
    components) and :math:`\mathcal{L}_{\mathrm{CLIP}}` the symmetric cross-entropy over
    features gathered from every rank, with label smoothing ``label_smoothing``.

    Args:
        long_weight: :math:`w_\ell`.
        short_weight: :math:`w_s` (0: long captions only; ``short_text_features`` may be absent).
        short_image: ``"full"`` or ``"pca"``.
        pca_dim: Components kept for ``"pca"``.
        label_smoothing: Cross-entropy label smoothing.
        rank, world_size: Distributed position (features are gathered when ``world_size > 1``).

    Shape:
        ``forward(image_features (B, E), text_features (B, E), logit_scale (), short_text_features
        (B, E) | None, output_dict) -> scalar`` or ``{"contrastive_loss", "first_sentence_loss"}``.

    Raises:
        ValueError: For negative weights, an unknown ``short_image`` or ``pca_dim < 1``; in
            ``forward`` when ``short_weight > 0`` and no short features are given.
    """

    def __init__(
        self,
        long_weight: float = 1.0,
        short_weight: float = 0.0,
        *,
        short_image: Literal["full", "pca"] = "full",
        pca_dim: int = 32,
        label_smoothing: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if long_weight < 0 or short_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {long_weight}, {short_weight}")
        if short_image not in ("full", "pca"):
            raise ValueError(f"short_image must be 'full' or 'pca', got {short_image!r}")
        if pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {pca_dim}")
        self.long_weight, self.short_weight = float(long_weight), float(short_weight)
        self.short_image, self.pca_dim = short_image, int(pca_dim)
        self.label_smoothing = float(label_smoothing)
        self.rank, self.world_size = int(rank), int(world_size)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        short_text_features: Tensor | None = None,
        output_dict: bool = False,
        **_: object,
    ) -> Tensor | dict[str, Tensor]:
        world = self.world_size if dist.is_available() and dist.is_initialized() else 1
        args = (logit_scale, self.label_smoothing, self.rank, world)
        out = {
            "contrastive_loss": self.long_weight
            * _contrastive(image_features, text_features, *args)
        }
        if self.short_weight > 0:
            if short_text_features is None:
                raise ValueError("short_weight > 0 needs short_text_features (first sentences)")
            image = image_features
            if self.short_image == "pca":
                image = pca_reconstruct(image_features, self.pca_dim)
            out["first_sentence_loss"] = self.short_weight * _contrastive(
                image, short_text_features, *args
            )
        return out if output_dict else torch.stack(list(out.values())).sum()
