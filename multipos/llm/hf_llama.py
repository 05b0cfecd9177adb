r"""Float (V2PE) and multi-axis positions for Hugging Face Llama-family causal LMs.

Training-free: the weights are untouched; the model's rotary module is swapped for
:class:`~multipos.llm.HFRotaryEmbedding` and two integer-position assumptions of
``transformers`` 5 are lifted (see :func:`apply_llama_positions`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from multipos.llm.hf_rotary import (
    Continuation,
    HFRotaryEmbedding,
    install_continuation,
    install_mask_guard,
    v2pe_continuation,
)

__all__ = ["apply_llama_positions"]


def find_decoder(model: nn.Module) -> nn.Module:
    """The module that owns ``rotary_emb`` and the decoder layers (``model.model`` of a
    ``LlamaForCausalLM``, or the model itself).

    Raises:
        TypeError: If no such module is found.
    """
    for candidate in (model, getattr(model, "model", None)):
        if isinstance(candidate, nn.Module) and isinstance(
            getattr(candidate, "rotary_emb", None), nn.Module
        ):
            return candidate
    raise TypeError(
        f"model must be a Llama-family transformers model whose decoder has a rotary_emb "
        f"module (LlamaForCausalLM, LlamaModel, MistralForCausalLM, Qwen2ForCausalLM, ...), "
        f"got {type(model).__name__}"
    )


def apply_llama_positions(
    model: nn.Module,
    *,
    rotary: nn.Module | None = None,
    continuation: Continuation = v2pe_continuation,
) -> nn.Module:
    r"""Let a Llama-family causal LM take float and multi-axis ``position_ids``, in place.

    For V2PE (Ge et al., 2024, arXiv:2412.09616) the positions of
    :func:`~multipos.llm.v2pe_position_ids` go in through ``position_ids`` of ``forward`` and
    ``generate``; the rotation is RoFormer's :math:`\phi_j = p\,\theta_j` on the float
    position :math:`p` (Su et al., 2021, arXiv:2104.09864, Eq. 34). Three things change:

    1. ``rotary_emb`` becomes ``rotary`` (default:
       :meth:`HFRotaryEmbedding.from_module` of the model's own, same frequencies), which
       keeps frequencies and angles in float32 under a bf16/fp16 model and accepts
       ``(A, B, L)`` positions when built with ``sections``. Integer positions give outputs
       identical to the unmodified model.
    2. A forward pre-hook gives the decoder an all-ones 2-D ``attention_mask`` when positions
       come without mask and cache, so that ``transformers`` does not read fractional steps
       as packed-sample boundaries. Packed rows (several samples per row, positions
       restarting per sample) take ``attention_mask=``
       :func:`~multipos.llm.packed_attention_mask` ``(sequence_ids, dtype=model.dtype)``,
       a 4-D mask used as given (eager and SDPA attention).
    3. ``generate()`` extends ``position_ids`` with ``continuation`` instead of ``+1``:
       by default :func:`~multipos.llm.v2pe_continuation`, which rounds up after a prompt
       that ends inside an image. Pass ``position_ids`` (float32) and ``attention_mask``
       (left padding) to ``generate``; decoding with the KV cache then continues from the
       last prompt position. The cache itself stores keys and values only, no positions.

    Not covered: flash-attention kernels (they infer packed samples from ``position_ids``
    themselves; use eager or SDPA attention with fractional positions) and assisted /
    speculative decoding (its candidate model extends positions by ``+1`` on its own).

    Another position scheme plugs in through ``rotary`` (its module, e.g. an
    :class:`HFRotaryEmbedding` with two ``sections`` for two position levels) and
    ``continuation`` (the positions of generated tokens, ``(A, B, L), n -> (A, B, n)``).

    Args:
        model: ``LlamaForCausalLM`` / ``LlamaModel`` or a sibling with the same layout.
        rotary: Replacement rotary module, ``forward(x, position_ids) -> (cos, sin)``.
        continuation: Positions of generated tokens from the previous ones.

    Returns:
        ``model``, modified in place (applying again replaces the rotary module only).

    Raises:
        TypeError: If ``model`` has no decoder with a ``rotary_emb`` module, or ``rotary`` is
            not an ``nn.Module``.
        ValueError: If the model's rotary type depends on the sequence length.
    """
    decoder = find_decoder(model)
    if rotary is None:
        current: Any = decoder.rotary_emb
        rotary = (
            current
            if isinstance(current, HFRotaryEmbedding)
            else HFRotaryEmbedding.from_module(current)
        )
    if not isinstance(rotary, nn.Module):
        raise TypeError(f"rotary must be an nn.Module, got {type(rotary).__name__}")
    device = next(decoder.parameters()).device
    rotary.to(device=device)
    decoder.rotary_emb = rotary
    install_mask_guard(decoder)
    if hasattr(model, "_update_model_kwargs_for_generation"):
        install_continuation(model, continuation)
    return model
