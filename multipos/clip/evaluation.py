r"""Evaluation of an upgraded CLIP text tower: long-caption retrieval and short-caption
preservation.

* :func:`retrieval_recall`: text->image and image->text recall@K of paired features (pair
  ``i`` is image ``i`` with caption ``i``), the protocol of Long-CLIP (Zhang et al., 2024,
  arXiv:2403.15378) and TULIP (Najdenkoska et al., 2025, arXiv:2410.10034) on Urban1k,
  Long-DCI and ShareGPT4V-1k.
* :func:`short_caption_preservation`: cosine between the original and the upgraded text
  embeddings of the same captions of at most 77 tokens: how much of the original embedding
  space the upgrade kept (1.0 = unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from multipos.clip.spec import text_context_spec
from multipos.clip.towers import trim_tokens

__all__ = [
    "encode_images",
    "encode_texts",
    "evaluate_pairs",
    "retrieval_recall",
    "short_caption_preservation",
]


@torch.no_grad()
def encode_texts(model: Any, tokens: Tensor, *, batch_size: int = 64) -> Tensor:
    """Normalised text features ``(T, E)`` of token ids ``(T, L)``, in batches.

    For upgraded models the trailing padding of each batch is trimmed (exact, faster); an
    original open_clip model gets the ids as they are (its ``encode_text`` needs the full
    context length).
    """
    model.eval()
    device = next(model.parameters()).device
    trim = text_context_spec(model) is not None
    out = []
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i : i + batch_size].to(device)
        out.append(model.encode_text(trim_tokens(chunk) if trim else chunk, normalize=True))
    return torch.cat(out).float().cpu()


@torch.no_grad()
def encode_images(model: Any, images: Tensor, *, batch_size: int = 64) -> Tensor:
    """Normalised image features ``(I, E)`` of images ``(I, 3, H, W)``, in batches."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model.encode_image(images[i : i + batch_size].to(device), normalize=True)
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out).float().cpu()


def retrieval_recall(
    image_features: Tensor, text_features: Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    r"""Recall@K of paired retrieval in both directions.

    .. math::
        \text{R@K}_{t\to i} = \frac1P \sum_p \big[\operatorname{rank}_p(s_{p,p}) \le K\big],
        \quad s = T I^\top

    (ties count against the pair: a caption whose true image shares its score with another
    image is ranked below it). ``image->text`` uses :math:`s^\top`.

    Args:
        image_features: ``(P, E)``, row ``p`` paired with text row ``p``.
        text_features: ``(P, E)``.
        ks: The ``K`` values.

    Returns:
        ``{"t2i_r1": ..., "i2t_r1": ..., ...}`` in percent.

    Raises:
        ValueError: If the shapes differ or are not 2-D.
    """
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"need paired (P, E) features, got {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )
    sim = text_features.float() @ image_features.float().t()
    out: dict[str, float] = {}
    for name, scores in (("t2i", sim), ("i2t", sim.t())):
        true = scores.diagonal().unsqueeze(1)
        # Rank 1 = nothing scores at least as high except the pair itself.
        rank = (scores >= true).sum(dim=1)
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * float((rank <= k).float().mean())
    return out


def evaluate_pairs(
    model: nn.Module,
    pairs: Sequence[tuple[Path, str]],
    preprocess: Callable[[Image.Image], Tensor],
    tokenizer: Callable[..., Tensor],
    *,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 64,
) -> dict[str, float]:
    """Long-caption retrieval recall@K on ``(image path, caption)`` pairs (e.g. from
    :func:`~multipos.clip.read_pairs`), captions tokenized by ``tokenizer``."""
    images = []
    for path, _ in pairs:
        with Image.open(path) as image:
            images.append(preprocess(image.convert("RGB")))
    tokens = tokenizer([caption for _, caption in pairs])
    return retrieval_recall(
        encode_images(model, torch.stack(images), batch_size=batch_size),
        encode_texts(model, tokens, batch_size=batch_size),
        ks,
    )


@torch.no_grad()
def short_caption_preservation(
    original: Any,
    upgraded: Any,
    tokens: Tensor,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    r"""Cosine between original and upgraded text embeddings of the same short captions.

    .. math::
        c_b = \cos\big(f_{\text{orig}}(t_b), f_{\text{up}}(t_b)\big)

    Args:
        original: The model before the upgrade.
        upgraded: The upgraded model.
        tokens: ``(B, L0)`` ids tokenized at the original length (77); captions longer than that
            are truncated by the tokenizer, so pass captions of at most 77 tokens.

    Returns:
        ``{"mean_cosine", "min_cosine", "count"}``.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}")
    original.eval()
    upgraded.eval()
    device = next(upgraded.parameters()).device
    cos = []
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i : i + batch_size].to(device)
        a = original.encode_text(chunk).float()
        b = upgraded.encode_text(chunk).float()
        cos.append(F.cosine_similarity(a, b, dim=-1).cpu())
    values = torch.cat(cos)
    return {
        "mean_cosine": float(values.mean()),
        "min_cosine": float(values.min()),
        "count": float(values.numel()),
    }
