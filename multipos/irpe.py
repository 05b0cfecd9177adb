r"""Modules that own iRPE tables: a static relative-position bias and the full iRPE.

From "Rethinking and Improving Relative Position Encoding for Vision Transformer" (Wu, Peng,
Chen, Fu, Chao, 2021, arXiv:2107.14222). The bucketing and lookups are pure functions in
:mod:`multipos.bias`; attention goes through :func:`multipos.attention`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multipos.attention import attention
from multipos.bias import (
    IRPE_METHOD,
    IRPE_MODES,
    IRPE_RATIO,
    ContextualBias,
    IRPEMethod,
    IRPEMode,
    ValueBias,
    irpe_buckets,
    irpe_num_buckets,
    lookup_bias,
)

__all__ = ["IRPE", "RelativePositionBias"]


class RelativePositionBias(nn.Module):
    r"""Learnable scalar per (head, bucket): a static attention bias :math:`b_{ij} = t_{h,
    \text{bucket}(i,j)}`.

    iRPE bias mode, Eq. (5) of "Rethinking and Improving Relative Position Encoding for Vision
    Transformer" (Wu et al., 2021, arXiv:2107.14222). The table starts at zero, so adding it to
    a trained model changes nothing until it is trained.

    Args:
        num_buckets: Table rows ``K``.
        num_heads: Heads ``H``; with ``shared_heads`` one row is shared by all heads.
        shared_heads: Share one table between heads.

    Shape:
        ``forward(buckets: (T, L, S))`` returns ``(1, H or 1, L, S)``.

    Raises:
        ValueError: On non-positive sizes.
    """

    def __init__(self, num_buckets: int, num_heads: int, *, shared_heads: bool = False) -> None:
        super().__init__()
        if num_buckets <= 0 or num_heads <= 0:
            raise ValueError(
                f"num_buckets and num_heads must be positive, got {num_buckets}, {num_heads}"
            )
        self.num_buckets = num_buckets
        self.num_heads = num_heads
        self.table = nn.Parameter(torch.zeros(1 if shared_heads else num_heads, num_buckets))

    def forward(self, buckets: Tensor) -> Tensor:
        return lookup_bias(self.table, buckets)


class IRPE(nn.Module):
    r"""Image relative position encoding on queries, keys and/or values.

    From "Rethinking and Improving Relative Position Encoding for Vision Transformer" (Wu,
    Peng, Chen, Fu, Chao, ICCV 2021, arXiv:2107.14222), Eq. (5)-(8):

    .. math::
        e_{ij} = \frac{(x_i W^Q)(x_j W^K)^\top + b_{ij}}{\sqrt{d}},\quad
        b_{ij} = \underbrace{x_i W^Q r^K_{ij}}_{\text{on k}} +
                 \underbrace{x_j W^K r^Q_{ij}}_{\text{on q}},\quad
        z_i = \sum_j a_{ij} (x_j W^V + \underbrace{r^V_{ij}}_{\text{on v}})

    where :math:`r_{ij}` is the table row of the pair's bucket (:func:`irpe_buckets`); in
    ``"bias"`` mode :math:`r_{ij}` is a scalar per head. Tables start at zero (the paper's
    initialisation), so adding iRPE to a trained model leaves its outputs unchanged.

    The defaults are the paper's best configuration (product buckets, contextual mode on keys,
    ratio 1.9, tables shared between heads); this signature is the one place they are written:
    ``create_scheme("irpe")`` and ``multipos.vision.IRPEConfig`` read them from here.

    Args:
        num_heads: Attention heads ``H``.
        head_dim: Channels per head ``D``.
        method: ``"euclidean"``, ``"quant"``, ``"cross"`` or ``"product"``.
        mode: ``"bias"`` or ``"contextual"``.
        on: Which of ``"q"``, ``"k"``, ``"v"`` carry a term, e.g. ``"k"`` or ``"qkv"``.
        ratio: Bucket-count ratio (default 1.9: 7x7 product buckets).
        shared_heads: Share each table between heads (the paper's default).
        num_prefix_tokens: Prefix tokens (class, registers) sharing one extra bucket.

    Raises:
        ValueError: On a non-positive ``num_heads``/``head_dim``, an unknown method or mode,
            ``on`` with letters other than q/k/v, or ``"bias"`` mode on values (undefined in
            the paper).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        method: IRPEMethod = IRPE_METHOD,
        mode: IRPEMode = "contextual",
        on: str = "k",
        ratio: float = IRPE_RATIO,
        shared_heads: bool = True,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (("num_heads", num_heads), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if mode not in IRPE_MODES:
            raise ValueError(f"iRPE mode must be one of {IRPE_MODES}, got {mode!r}")
        sides = set(on)
        if not on or not sides <= {"q", "k", "v"} or len(sides) != len(on):
            raise ValueError(
                f"on must be a non-empty subset of 'qkv' like 'k' or 'qkv', got {on!r}"
            )
        if mode == "bias" and "v" in sides:
            raise ValueError(
                "iRPE bias mode is defined on q and k only; use mode='contextual' for v"
            )
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.method: IRPEMethod = method
        self.mode: IRPEMode = mode
        self.on = "".join(s for s in "qkv" if s in sides)
        self.ratio = ratio
        self.shared_heads = shared_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.num_buckets = irpe_num_buckets(method, ratio, num_prefix_tokens)
        h = 1 if shared_heads else num_heads
        k = self.num_buckets
        self.table_q = self._table(h, k) if "q" in sides else None
        self.table_k = self._table(h, k) if "k" in sides else None
        self.table_v = nn.Parameter(torch.zeros(h, k, head_dim)) if "v" in sides else None

    def _table(self, heads: int, buckets: int) -> nn.Parameter:
        shape = (heads, buckets) if self.mode == "bias" else (heads, self.head_dim, buckets)
        return nn.Parameter(torch.zeros(shape))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, method={self.method!r}, "
            f"mode={self.mode!r}, on={self.on!r}, ratio={self.ratio}, "
            f"num_buckets={self.num_buckets}, shared_heads={self.shared_heads}"
        )

    def buckets(self, query: Tensor, key: Tensor | None = None) -> Tensor:
        """Bucket ids ``(T, P + L, P + S)`` for patch positions ``(2, L)`` (and ``(2, S)``)."""
        return irpe_buckets(
            query,
            key,
            method=self.method,
            ratio=self.ratio,
            num_prefix_tokens=self.num_prefix_tokens,
        )

    def static_bias(self, buckets: Tensor) -> Tensor | None:
        """Bias-mode term ``(1, H or 1, L, S)``, or ``None`` in contextual mode."""
        if self.mode != "bias":
            return None
        out: Tensor | None = None
        if self.table_k is not None:
            out = lookup_bias(self.table_k, buckets)
        if self.table_q is not None:
            # Key-centred ids of a self-attention pair are the transposed ones.
            q_term = lookup_bias(self.table_q, buckets.transpose(-1, -2))
            out = q_term if out is None else out + q_term
        return out

    def attention_terms(
        self, buckets: Tensor
    ) -> tuple[Tensor | None, list[ContextualBias], list[ValueBias]]:
        """The ``bias``, ``contextual`` and ``values`` arguments of :func:`multipos.attention`.

        Args:
            buckets: ``(T, L, L)`` from :meth:`buckets` (self-attention).
        """
        contextual = []
        if self.mode == "contextual":
            if self.table_k is not None:
                contextual.append(ContextualBias(self.table_k, buckets, "k"))
            if self.table_q is not None:
                contextual.append(ContextualBias(self.table_q, buckets, "q"))
        values = [ValueBias(self.table_v, buckets)] if self.table_v is not None else []
        return self.static_bias(buckets), contextual, values

    def forward(self, q: Tensor, k: Tensor, v: Tensor, buckets: Tensor) -> Tensor:
        """Self-attention with this iRPE; ``q, k, v: (B, H, L, D)``, ``buckets: (T, L, L)``."""
        bias, contextual, values = self.attention_terms(buckets)
        return attention(q, k, v, bias=bias, contextual=contextual, values=values)
