r"""Text towers that read 1..N tokens: the upgraded open_clip classes and their encoding.

An upgraded model is an open_clip ``CLIP`` / ``CustomTextCLIP`` whose class is swapped for
:class:`LongTextCLIP` / :class:`LongTextCustomCLIP` (with a :class:`LongTextTransformer` text
tower) by :func:`~multipos.clip.upgrade_text_context`. Their text branch reads token tensors of
any length ``1 <= L <= N``: the causal mask and the positional table (if any) are sliced to
``L`` and the pooled feature is read at the end token (``argmax`` of the ids, or the ``eos``
id). Because attention is causal and pooling reads the end token, padding after it never
changes an embedding (:func:`trim_tokens` drops it for speed).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, text_global_pool
from torch import Tensor, nn
from torch.nn.utils import parametrize

from multipos.clip.spec import TextContextSpec, text_context_spec

__all__ = [
    "POOL_TYPES",
    "LongTextCLIP",
    "LongTextCustomCLIP",
    "LongTextTransformer",
    "causal_mask",
    "check_upgradable",
    "text_tower",
    "trim_tokens",
]

POOL_TYPES = ("argmax", "eos")


def text_tower(model: nn.Module) -> Any:
    """The module that owns the text attributes: the CLIP itself, or ``model.text``.

    Raises:
        TypeError: If ``model`` is not an open_clip ``CLIP`` / ``CustomTextCLIP``.
        ValueError: If the text tower is not open_clip's ``TextTransformer``.
    """
    kind = type(model)
    if parametrize.is_parametrized(model):
        kind = kind.__bases__[0]  # torch's parametrize subclasses the model's class
    if kind in (CLIP, LongTextCLIP):
        return model
    if kind in (CustomTextCLIP, LongTextCustomCLIP):
        text = model.text
        if type(text) not in (TextTransformer, LongTextTransformer):
            raise ValueError(
                f"the text tower is {type(text).__name__}; only open_clip's TextTransformer "
                "(CLIP BPE towers) can be upgraded, not Hugging Face towers"
            )
        return text
    raise TypeError(
        "model must be an open_clip CLIP or CustomTextCLIP (CoCa and subclasses are not "
        f"supported), got {type(model).__name__}"
    )


def _pool_type(tower: Any) -> str:
    return str(getattr(tower, "text_pool_type", None) or tower.pool_type)


def check_upgradable(model: nn.Module) -> Any:
    """The text tower of ``model`` if it is causal and end-token pooled, else raise.

    Raises:
        TypeError: As :func:`text_tower`.
        ValueError: For SigLIP-style towers (bidirectional attention, pooling other than
            ``argmax``/``eos``) and towers with a class embedding (CoCa).
    """
    tower = text_tower(model)
    pool = _pool_type(tower)
    bidirectional = tower.attn_mask is None and text_context_spec(model) is None
    if bidirectional or pool not in POOL_TYPES:
        raise ValueError(
            "SigLIP-style text towers (bidirectional attention, pool_type 'last'/'first'/'none') "
            "cannot be lengthened: their pooled token depends on the padding, and open_clip "
            "maintainers report zero-shot collapse after a length change (open_clip #1067). "
            f"This tower has attn_mask={'None' if bidirectional else 'causal'}, "
            f"pool_type={pool!r}; supported: causal attention with pool_type in {POOL_TYPES}"
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise ValueError("text towers with a class embedding (CoCa) are not supported")
    return tower


def causal_mask(length: int, device: torch.device) -> Tensor:
    """Additive causal mask ``(L, L)``: ``-inf`` above the diagonal, open_clip's convention."""
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


def _check_tokens(text: Tensor, context_length: int) -> None:
    if not isinstance(text, Tensor) or text.dim() != 2 or text.dtype.is_floating_point:
        raise ValueError(
            f"text must be integer token ids (B, L), got {getattr(text, 'shape', type(text))}"
        )
    if not 1 <= text.shape[1] <= context_length:
        raise ValueError(
            f"text length must be in [1, {context_length}] for this tower, got shape "
            f"{tuple(text.shape)}; tokenize with context_length={context_length}"
        )


def trim_tokens(text: Tensor, pad_id: int = 0) -> Tensor:
    """Drop trailing columns that are padding in every row, ``(B, L) -> (B, L')``.

    Exact for upgraded towers: attention is causal and pooling reads the end token, so tokens
    after it never reach the embedding. At least one column is kept.

    Raises:
        ValueError: If ``text`` is not 2-D.
    """
    if text.dim() != 2:
        raise ValueError(f"text must be (B, L), got shape {tuple(text.shape)}")
    used = (text != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return text[:, :length]


def _embed(tower: Any, text: Tensor) -> tuple[Tensor, Tensor | None]:
    """Token ids ``(B, L)``, ``1 <= L <= N`` -> token embeddings (plus the table's first
    ``L`` rows, if any) and the causal mask sliced to ``L`` (``None`` for rotary towers)."""
    _check_tokens(text, tower.text_context_spec.context_length)
    length = text.shape[1]
    x = tower.token_embedding(text).to(tower.transformer.get_cast_dtype())
    if tower.positional_embedding is not None:
        x = x + tower.positional_embedding[:length].to(x.dtype)
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    return x, mask


def _encode(tower: Any, text: Tensor) -> Tensor:
    """Token ids ``(B, L)`` -> pooled, projected features ``(B, E)`` of a flattened CLIP."""
    x, mask = _embed(tower, text)
    return _pool_project(tower, tower.transformer(x, attn_mask=mask), text)


def _pool_project(tower: Any, x: Tensor, text: Tensor) -> Tensor:
    """Final norm, end-token pooling and projection of the transformer output ``x``."""
    pooled: Tensor = text_global_pool(
        tower.ln_final(x), text, _pool_type(tower), eos_token_id=tower.text_eos_id
    )
    projection = tower.text_projection
    if isinstance(projection, nn.Linear):
        return cast(Tensor, projection(pooled))
    return pooled if projection is None else pooled @ projection


class LongTextCLIP(CLIP):  # type: ignore[misc]
    """open_clip ``CLIP`` whose ``encode_text`` reads 1..N tokens (set by
    :func:`~multipos.clip.upgrade_text_context`; never constructed directly)."""

    text_context_spec: TextContextSpec

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:
        x = _encode(self, text)
        return F.normalize(x, dim=-1) if normalize else x

    def forward_intermediates(  # type: ignore[no-untyped-def]
        self,
        image: Tensor | None = None,
        text: Tensor | None = None,
        text_indices: int | list[int] | None = None,
        normalize: bool = True,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
        output_logits: bool = False,
        output_logit_scale_bias: bool = False,
        **kwargs,
    ) -> dict[str, Any]:
        """open_clip's ``forward_intermediates`` with the text branch on 1..N tokens."""
        out: dict[str, Any] = super().forward_intermediates(
            image=image,
            text=None,
            normalize=normalize,
            normalize_intermediates=normalize_intermediates,
            intermediates_only=intermediates_only,
            **kwargs,
        )
        if text is not None:
            x, mask = _embed(self, text)
            x, blocks = self.transformer.forward_intermediates(
                x, attn_mask=mask, indices=text_indices
            )
            if normalize_intermediates:
                blocks = [self.ln_final(b) for b in blocks]
            out["text_intermediates"] = blocks
            if not intermediates_only:
                # The blocks ran to the end: pool their output instead of encoding again.
                features = _pool_project(self, x, text)
                out["text_features"] = F.normalize(features, dim=-1) if normalize else features
        if (output_logits or output_logit_scale_bias) and not intermediates_only:
            scale = self.logit_scale.exp()
            if output_logits:
                logits = scale * out["image_features"] @ out["text_features"].T
                if self.logit_bias is not None:
                    logits = logits + self.logit_bias
                out["image_logits"], out["text_logits"] = logits, logits.T
            if output_logit_scale_bias:
                out["logit_scale"] = scale
                if self.logit_bias is not None:
                    out["logit_bias"] = self.logit_bias
        return out


class LongTextCustomCLIP(CustomTextCLIP):  # type: ignore[misc]
    """open_clip ``CustomTextCLIP`` carrying a :class:`~multipos.clip.TextContextSpec` (see
    :func:`~multipos.clip.upgrade_text_context`)."""

    text_context_spec: TextContextSpec


class LongTextTransformer(TextTransformer):  # type: ignore[misc]
    """open_clip ``TextTransformer`` whose inputs may be 1..N tokens long (mask and table
    sliced; see :func:`~multipos.clip.upgrade_text_context`)."""

    text_context_spec: TextContextSpec

    def _embeds(self, text: Tensor) -> tuple[Tensor, Tensor | None]:
        return _embed(self, text)
