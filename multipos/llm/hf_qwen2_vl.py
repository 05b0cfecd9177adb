r"""Our M-RoPE / V2PE position ids inside Hugging Face Qwen2-VL-family models."""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor, nn

from multipos.llm.hf_rotary import HFRotaryEmbedding, install_continuation, v2pe_continuation
from multipos.llm.mrope import mrope_positions
from multipos.llm.v2pe import Delta

__all__ = ["apply_qwen2_vl_positions", "mrope_continuation"]


def mrope_continuation(position_ids: Tensor, num_new: int) -> Tensor:
    """Positions of generated tokens for Qwen2-VL's position tensors.

    ``(3, B, L)`` (t, h, w) rows continue by :func:`~multipos.llm.v2pe_continuation` (one
    past the largest position, rounded up, on every axis); the ``(4, B, L)`` form that
    ``generate()`` of ``transformers`` 5 carries (a plain text row used for masks, then
    t, h, w) continues its text row by ``+1``.
    """
    if position_ids.dim() == 3 and position_ids.shape[0] == 4:
        text = position_ids[:1, :, -1:] + torch.arange(
            1, num_new + 1, dtype=position_ids.dtype, device=position_ids.device
        )
        return torch.cat((text, v2pe_continuation(position_ids[1:], num_new)), dim=0)
    return v2pe_continuation(position_ids, num_new)


def _decoding_positions(self: nn.Module, *args: Any, **kwargs: Any) -> Tensor | None:
    # transformers 5.23 builds the positions of tokens decoded with a cache (and no
    # position_ids) from the whole attention mask, one per cached token too; keep the new ones.
    positions: Tensor | None = type(self).compute_3d_position_ids(  # type: ignore[attr-defined]
        self, *args, **kwargs
    )
    embeds = kwargs.get("inputs_embeds", args[1] if len(args) > 1 else None)
    if isinstance(positions, Tensor) and isinstance(embeds, Tensor):
        length = embeds.shape[1]
        if positions.shape[-1] > length:
            positions = positions[..., -length:]
    return positions


def apply_qwen2_vl_positions(
    model: nn.Module,
    *,
    delta: Delta = 1.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Use :func:`~multipos.llm.mrope_positions` in a Qwen2-VL model, in place.

    M-RoPE of "Qwen2-VL" (Wang et al., 2024, arXiv:2409.12191) with V2PE's visual
    increment :math:`\delta` (Ge et al., 2024, arXiv:2412.09616) on each axis:

    1. ``model.get_rope_index`` (what ``forward`` and ``generate`` call to build the 3-D
       positions and the ``rope_deltas`` of decoding) becomes :func:`mrope_positions` with the
       model's ``image_token_id``, ``video_token_id``, ``spatial_merge_size`` and ``delta``.
       Positions are float32 and padding-aware; ``delta = 1`` reproduces Qwen2-VL's ids.
    2. The language model's rotary module becomes :class:`~multipos.llm.HFRotaryEmbedding`
       with the model's ``mrope_section``: the same frequencies, kept in float32 under
       bf16, angles from float32 positions.
    3. A forward with a cache and no ``position_ids`` (decoding by hand) places the new
       tokens at ``cumsum(attention_mask) - 1 + rope_deltas``, keeping only the new tokens'
       positions (``transformers`` 5.23 returns one per cached token as well and fails).
    4. ``generate()`` continues generated tokens one past the largest prompt position on
       every axis (rounded up after a trailing image) instead of ``last + 1`` per axis.

    Qwen2.5-VL-style models (video frames spaced by ``tokens_per_second``) are accepted for
    images; a video raises, as their time-scaled temporal ids are not reproduced.

    Packed rows: pass ``position_ids=mrope_positions(..., sequence_ids=...).position_ids``
    and ``attention_mask=packed_attention_mask(sequence_ids, dtype=...)`` to ``forward``.

    Args:
        model: ``Qwen2VLForConditionalGeneration`` or ``Qwen2VLModel`` (or a sibling with
            ``get_rope_index``, ``config.vision_config.spatial_merge_size`` and a
            ``language_model.rotary_emb`` with ``mrope_section``).
        delta: Visual increment in (0, 1], or a set to draw from per image (training mode).
        generator: Required when ``delta`` is a set.

    Returns:
        ``model``, modified in place.

    Raises:
        TypeError: If ``model`` is not laid out like a Qwen2-VL model.
        ValueError: If ``delta`` is invalid, or the rotary type depends on the length.
    """
    inner: Any = getattr(model, "model", model)
    language: Any = getattr(inner, "language_model", None)
    rotary = getattr(language, "rotary_emb", None)
    config: Any = getattr(inner, "config", None)
    if not (
        hasattr(inner, "get_rope_index")
        and isinstance(rotary, nn.Module)
        and hasattr(getattr(config, "vision_config", None), "spatial_merge_size")
    ):
        raise TypeError(
            "model must be a Qwen2-VL-family transformers model (get_rope_index, "
            f"language_model.rotary_emb, vision_config.spatial_merge_size), got "
            f"{type(model).__name__}"
        )
    # Validate delta (and the generator) now rather than at the first forward.
    mrope_positions(torch.zeros(1, 1, dtype=torch.long), delta=delta, generator=generator)
    merge = int(config.vision_config.spatial_merge_size)
    # Qwen2.5-VL spaces video frames by absolute time (tokens_per_second); not reproduced.
    timed = getattr(config.vision_config, "tokens_per_second", None) is not None
    image_token_id = getattr(config, "image_token_id", None)
    video_token_id = getattr(config, "video_token_id", None)

    def get_rope_index(
        input_ids: Tensor,
        mm_token_type_ids: Tensor | None = None,
        image_grid_thw: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        if timed and video_grid_thw is not None:
            raise ValueError(
                "video_grid_thw given to a model whose video frames are spaced by absolute "
                "time (vision_config.tokens_per_second, Qwen2.5-VL): its temporal ids are not "
                "reproduced; use images only, or a Qwen2-VL model"
            )
        mask = attention_mask if isinstance(attention_mask, Tensor) else None
        if mask is not None and mask.dim() != 2:
            mask = None
        result = mrope_positions(
            input_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            attention_mask=mask,
            image_token_id=image_token_id,
            video_token_id=video_token_id,
            mm_token_type_ids=mm_token_type_ids,
            spatial_merge_size=merge,
            delta=delta,
            generator=generator,
        )
        return result.position_ids, result.rope_deltas

    inner.get_rope_index = get_rope_index
    if callable(getattr(type(inner), "compute_3d_position_ids", None)):
        inner.compute_3d_position_ids = types.MethodType(_decoding_positions, inner)
    if not isinstance(rotary, HFRotaryEmbedding):
        sections = getattr(rotary, "mrope_section", None)
        if sections is None:
            raise TypeError(f"{type(rotary).__name__} has no mrope_section")
        new = HFRotaryEmbedding.from_module(rotary, sections=list(sections))
        language.rotary_emb = new.to(device=next(language.parameters()).device)
    if hasattr(model, "_update_model_kwargs_for_generation"):
        install_continuation(model, mrope_continuation)
    return model
