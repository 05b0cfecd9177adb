r"""Rotation of complex channel pairs by unit complex numbers ("turns") that may be learnable.

RoPE in complex form (RoFormer, Su et al., 2021, arXiv:2104.09864, Eq. (34)) multiplies each
pair by :math:`e^{i\phi}`. When the angles are learnable (RoPE-Mixed, Heo et al., 2024,
arXiv:2403.13298) the turns ``(H, L, R)`` are shared by every batch element of ``(B, H, L, R)``
pairs, and autograd's product rule forms the full ``(B, H, L, R)`` product
:math:`g \odot \bar{x}` before summing it over the batch. :func:`rotate` instead accumulates
that sum one leading slice at a time (:math:`\partial L / \partial t = \sum_b g_b \odot
\bar{x}_b`): the same values, without the batch-sized temporary. Used by
:func:`multipos.rotary.apply_rotary`; nothing here is public.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["rotate"]

#: Most leading slices accumulated one by one; beyond, the product is summed at once.
_MAX_SLICES = 64


class _Rotate(torch.autograd.Function):
    """``pairs * turn`` with ``turn`` broadcast over leading dimensions of ``pairs``."""

    @staticmethod
    def forward(ctx: Any, pairs: Tensor, turn: Tensor) -> Tensor:
        ctx.save_for_backward(pairs, turn)
        return pairs * turn

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        pairs, turn = ctx.saved_tensors
        grad_pairs = grad * turn.conj() if ctx.needs_input_grad[0] else None
        grad_turn = None
        if ctx.needs_input_grad[1]:
            lead = pairs.dim() - turn.dim()
            slices = math.prod(pairs.shape[:lead])
            if slices <= _MAX_SLICES and turn.shape == pairs.shape[lead:]:
                grads, values = grad.reshape(-1, *turn.shape), pairs.reshape(-1, *turn.shape)
                grad_turn = torch.zeros_like(turn)
                for i in range(slices):
                    grad_turn.addcmul_(grads[i], values[i].conj())
            else:
                grad_turn = (grad * pairs.conj()).sum_to_size(turn.shape)
        return grad_pairs, grad_turn


def rotate(pairs: Tensor, turn: Tensor) -> Tensor:
    """``pairs * turn`` (complex), ``turn`` broadcastable to ``pairs``; a lean backward when
    ``turn`` needs a gradient."""
    if torch.is_grad_enabled() and turn.requires_grad and turn.dim() <= pairs.dim():
        out: Tensor = _Rotate.apply(pairs, turn)
        return out
    return pairs * turn
