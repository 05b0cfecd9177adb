r"""Sinusoidal embedding of ROPE reading-order codes, optionally projected to a message width.

From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
Information Extraction" (Lee et al., 2021, arXiv:2106.10786): each integer code
:math:`c_{ij}` of :func:`~multipos.documents.rope_codes` goes through the Transformer's
sinusoidal embedding ("Attention Is All You Need", Vaswani et al., 2017, arXiv:1706.03762,
Sec. 3.5) and enters the message of edge ``j -> i``:

.. math::
    \mathrm{PE}(c)_{2k} = \sin(c\, \omega_k), \quad \mathrm{PE}(c)_{2k+1} = \cos(c\,
    \omega_k), \qquad \omega_k = \mathrm{base}^{-2k / \mathrm{dim}}

Frequencies and angles are computed in float32 on every call (no buffer, so casting the
module never rounds them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ReadingOrderCodeEmbedding", "code_sinusoids"]


def _check_dim(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def code_sinusoids(codes: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    r"""Sinusoidal embedding ``(E, dim)`` float32 of integer codes ``(E,)``.

    From "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762), Sec. 3.5, as
    used for ROPE codes (Lee et al., 2021, arXiv:2106.10786):

    .. math::
        \mathrm{PE}(c)_{2k} = \sin(c\, \mathrm{base}^{-2k/\mathrm{dim}}), \quad
        \mathrm{PE}(c)_{2k+1} = \cos(c\, \mathrm{base}^{-2k/\mathrm{dim}})

    Args:
        codes: ``(E,)`` integer (or float) codes.
        dim: Even embedding width.
        base: Frequency base, finite and ``> 1``.

    Returns:
        ``(E, dim)`` float32, interleaved ``sin, cos`` pairs.

    Raises:
        TypeError: If ``dim`` is not an int or ``codes`` not a real tensor.
        ValueError: If ``dim`` is odd or not positive, ``base <= 1`` or ``codes`` not 1-D.
    """
    dim = _check_dim("dim", dim)
    if dim % 2:
        raise ValueError(f"dim must be even (sin/cos pairs), got {dim}")
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a float > 1, got {type(base).__name__}")
    if not (math.isfinite(base) and base > 1):
        raise ValueError(f"base must be finite and > 1, got {base}")
    if not isinstance(codes, Tensor) or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be a real torch.Tensor of shape (E,), got {codes!r:.60}")
    if codes.dim() != 1:
        raise ValueError(f"codes must have shape (E,), got {tuple(codes.shape)}")
    k = torch.arange(0, dim, 2, device=codes.device, dtype=torch.float32)
    omega = torch.exp(-math.log(base) * k / dim)  # (dim / 2,)
    angles = codes.to(torch.float32)[:, None] * omega  # (E, dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (E, dim)


class ReadingOrderCodeEmbedding(nn.Module):
    r"""ROPE code embedding: sinusoids of the codes, optionally a learned linear projection.

    From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document
    Information Extraction" (Lee et al., 2021, arXiv:2106.10786), with the sinusoid of
    "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762):

    .. math::
        e_{ij} = W\, \mathrm{PE}(c_{ij}) + b \quad (\text{or } \mathrm{PE}(c_{ij})
        \text{ when } \mathrm{out\_dim} \text{ is None})

    Registered as ``reading_order_code_embedding``. Concatenate ``e_ij`` to the message of
    edge ``j -> i`` (what the paper does), or add it to an edge embedding.

    Args:
        dim: Even sinusoid width.
        out_dim: Width of the projection, or ``None`` for the bare sinusoid (no parameters).
        base: Frequency base of the sinusoid.

    Shapes:
        ``codes (E,)`` integer -> ``(E, out_dim)`` (``(E, dim)`` without projection), in
        the projection's dtype (float32 without projection).

    Raises:
        TypeError / ValueError: On an invalid ``dim``, ``out_dim`` or ``base`` (at
            construction) or ``codes`` (on call).
    """

    def __init__(self, dim: int = 32, out_dim: int | None = None, base: float = 10000.0) -> None:
        super().__init__()
        code_sinusoids(torch.zeros(0, dtype=torch.int64), dim, base)  # validates dim, base
        self.dim, self.base = dim, float(base)
        self.out_dim = None if out_dim is None else _check_dim("out_dim", out_dim)
        self.proj = None if out_dim is None else nn.Linear(dim, out_dim)

    def forward(self, codes: Tensor) -> Tensor:
        pe = code_sinusoids(codes, self.dim, self.base)  # (E, dim) float32
        if self.proj is None:
            return pe
        out: Tensor = self.proj(pe.to(self.proj.weight.dtype))  # (E, out_dim)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, out_dim={self.out_dim}, base={self.base:g}"
