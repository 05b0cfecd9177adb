r"""Token-level bookkeeping shared by the language-model position builders.

Which tokens are real (``attention_mask``), where each packed sample starts (``sequence_ids``)
and the additive attention mask that keeps packed samples apart. Pure torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["packed_attention_mask"]


def check_token_inputs(
    input_ids: Tensor, attention_mask: Tensor | None, sequence_ids: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Validate ``(B, L)`` token inputs; return ``(valid, starts)``, both ``(B, L)`` bool.

    ``valid`` marks real tokens; ``starts`` marks the first real token of every sample: the
    first real token of a row, and (with ``sequence_ids``) every real token whose sample id
    differs from that of the previous real token of its row.
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (B, L) tensor, got {shape}")
    if input_ids.is_floating_point() or input_ids.is_complex():
        raise TypeError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    batch, length = input_ids.shape
    if attention_mask is None:
        valid = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        if tuple(attention_mask.shape) != (batch, length):
            raise ValueError(
                f"attention_mask must be (B, L) = {(batch, length)} like input_ids, got "
                f"{tuple(attention_mask.shape)}"
            )
        if attention_mask.is_floating_point() and not bool(
            ((attention_mask == 0) | (attention_mask == 1)).all()
        ):
            raise ValueError("attention_mask must hold 0 (padding) and 1 (token) only")
        valid = attention_mask.to(device=input_ids.device) != 0
    index = torch.arange(length, device=input_ids.device).expand(batch, length)
    # Index of the previous real token of the row (-1 before the first one).
    last_valid = torch.where(valid, index, torch.full_like(index, -1)).cummax(dim=-1).values
    prev_valid = torch.cat((last_valid.new_full((batch, 1), -1), last_valid[:, :-1]), dim=-1)
    starts = valid & (prev_valid < 0)
    if sequence_ids is not None:
        if tuple(sequence_ids.shape) != (batch, length):
            raise ValueError(
                f"sequence_ids must be (B, L) = {(batch, length)} like input_ids, got "
                f"{tuple(sequence_ids.shape)}"
            )
        if sequence_ids.is_floating_point() or sequence_ids.is_complex():
            raise TypeError(f"sequence_ids must hold integer sample ids, got {sequence_ids.dtype}")
        ids = sequence_ids.to(input_ids.device)
        previous = ids.gather(1, prev_valid.clamp(min=0))
        starts = starts | (valid & (prev_valid >= 0) & (ids != previous))
    return valid, starts


def sample_index(valid: Tensor, starts: Tensor) -> Tensor:
    """``(B, L)`` long: for every token, the row index of the start of its sample."""
    batch, length = valid.shape
    index = torch.arange(length, device=valid.device).expand(batch, length)
    return torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values


def packed_attention_mask(
    sequence_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Additive causal mask that keeps the samples packed in one row apart, ``(B, 1, L, L)``.

    Query ``i`` may attend key ``j`` iff :math:`j \le i`, both are real tokens and they belong
    to the same sample (a sample starts wherever ``sequence_ids`` changes between consecutive
    real tokens, as in :func:`~multipos.llm.v2pe_position_ids`):

    .. math::
        M_{ij} = \begin{cases} 0 & j \le i,\ m_i = m_j = 1,\ s_i = s_j \\
        \min(\text{dtype}) & \text{otherwise} \end{cases}

    Hugging Face models use a 4-D mask as given (eager and SDPA attention), so this replaces
    the packed-sequence detection that ``transformers`` performs on integer ``position_ids``
    (a step other than +1 starts a new sample there, which fractional V2PE steps would
    trigger). Rows of padding queries keep their diagonal so that softmax stays finite.

    Args:
        sequence_ids: ``(B, L)`` integer sample id of every token.
        attention_mask: ``(B, L)`` 1 for tokens, 0 for padding; default: all tokens.
        dtype: Dtype of the mask, the model's dtype (the additive value is its minimum).

    Returns:
        ``(B, 1, L, L)`` mask of ``dtype``: 0 where attention is allowed.

    Raises:
        TypeError: If ``sequence_ids`` is not integer or ``dtype`` is not floating point.
        ValueError: If the shapes differ or ``attention_mask`` is not 0/1.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be floating point (the model's dtype), got {dtype}")
    if not isinstance(sequence_ids, Tensor) or sequence_ids.dim() != 2:
        shape = tuple(sequence_ids.shape) if isinstance(sequence_ids, Tensor) else sequence_ids
        raise ValueError(f"sequence_ids must be a (B, L) tensor, got {shape}")
    valid, starts = check_token_inputs(sequence_ids.long(), attention_mask, sequence_ids)
    sample = starts.long().cumsum(dim=-1)  # (B, L): sample number within the row
    length = sequence_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=sequence_ids.device).tril()
    same = sample[:, :, None] == sample[:, None, :]  # (B, L, L)
    allowed = causal & same & valid[:, :, None] & valid[:, None, :]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=sequence_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=sequence_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)
