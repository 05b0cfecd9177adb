r"""Relative-position buckets and bias tables: iRPE's piecewise index, static and contextual.

From "Rethinking and Improving Relative Position Encoding for Vision Transformer" (Wu, Peng,
Chen, Fu, Chao, 2021, arXiv:2107.14222). Relative offsets between a query and a key patch are
mapped to a small number of buckets by a piecewise function that is exact near zero and
logarithmic far away; each bucket owns either a scalar per head (``"bias"`` mode) or a vector
that is dotted with the query, key or attention weights (``"contextual"`` mode).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

__all__ = [
    "ContextualBias",
    "IRPEMethod",
    "IRPEMode",
    "ValueBias",
    "contextual_bias",
    "irpe_buckets",
    "irpe_num_buckets",
    "irpe_piecewise_index",
    "lookup_bias",
    "value_bias",
]

IRPEMethod = Literal["euclidean", "quant", "cross", "product"]
IRPEMode = Literal["bias", "contextual"]
IRPE_METHODS: tuple[str, ...] = get_args(IRPEMethod)
IRPE_MODES: tuple[str, ...] = get_args(IRPEMode)
# The paper's best configuration (product buckets, ratio 1.9: 7x7 buckets); every iRPE default
# in the library (functions, the IRPE module, its registry entry, the ViT options) is this one.
IRPE_METHOD: IRPEMethod = "product"
IRPE_RATIO = 1.9


class ContextualBias(NamedTuple):
    """A query- or key-dependent logit bias, iRPE contextual mode.

    ``on="k"``: :math:`b_{ij} = s\\, q_i^\\top r_{\\text{buckets}[i, j]}` with
    ``buckets: (T, L, S)``.
    ``on="q"``: :math:`b_{ij} = s\\, k_j^\\top r_{\\text{buckets}[j, i]}` with key-centred
    ``buckets: (T, S, L)`` (for self-attention, the same tensor as for ``"k"``).
    ``s`` is the attention scale and ``table`` is ``(H or 1, D, K)``.
    """

    table: Tensor
    buckets: Tensor
    on: Literal["q", "k"] = "k"


class ValueBias(NamedTuple):
    """A value-side term :math:`z_i \\mathrel{+}= \\sum_j a_{ij} r_{\\text{buckets}[i, j]}`;
    ``table: (H or 1, K, D)``, ``buckets: (T, L, S)``."""

    table: Tensor
    buckets: Tensor


def _irpe_coefficients(ratio: float) -> tuple[float, float, float]:
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"iRPE ratio must be positive and finite, got {ratio}")
    # alpha : beta : gamma = 1 : 2 : 8, scaled by ratio (paper, Sec. 3.3).
    return 1.0 * ratio, 2.0 * ratio, 8.0 * ratio


def irpe_piecewise_index(x: Tensor, alpha: float, beta: float, gamma: float) -> Tensor:
    r"""iRPE's piecewise index function, Eq. (18) of Wu et al. (2021, arXiv:2107.14222).

    .. math::
        g(x) = \begin{cases}
            [x] & |x| \le \alpha \\
            \operatorname{sign}(x) \min\left(\beta, \left[\alpha + \frac{\ln(|x|/\alpha)}
                {\ln(\gamma/\alpha)} (\beta - \alpha)\right]\right) & |x| > \alpha
        \end{cases}

    where :math:`[\cdot]` rounds half to even; the result is truncated towards zero to an
    integer in :math:`[-\lfloor\beta\rfloor, \lfloor\beta\rfloor]`.

    Args:
        x: Relative offsets (or distances), any shape, integer or float.
        alpha, beta, gamma: Coefficients with ``0 < alpha < beta`` and ``gamma > alpha``.

    Returns:
        ``torch.long`` tensor of the shape of ``x``.

    Raises:
        ValueError: If the coefficients are out of range.
    """
    if not (0 < alpha < beta and gamma > alpha):
        raise ValueError(
            f"need 0 < alpha < beta and gamma > alpha, got alpha={alpha}, beta={beta}, "
            f"gamma={gamma}"
        )
    xf = x.to(torch.float32)
    mag = xf.abs()
    # clamp keeps log finite on the near branch, whose value is discarded by where().
    far = alpha + torch.log(mag.clamp(min=alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    far = torch.sign(xf) * far.round().clamp(max=beta)
    out = torch.where(mag <= alpha, xf.round(), far)
    return out.to(torch.long)


def irpe_num_buckets(
    method: IRPEMethod, ratio: float = IRPE_RATIO, num_prefix_tokens: int = 0
) -> int:
    """Number of buckets of one iRPE table (both axes' tables together for ``"cross"``).

    ``2 * floor(beta) + 1`` for euclidean/quant, ``(2 * floor(beta) + 1) ** 2`` for product,
    ``2 * (2 * floor(beta) + 1)`` for cross (rows and columns); plus one bucket shared by every
    pair involving a prefix token (per axis for cross) when ``num_prefix_tokens > 0``.

    Raises:
        ValueError: On an unknown ``method``.
    """
    if method not in IRPE_METHODS:
        raise ValueError(f"iRPE method must be one of {IRPE_METHODS}, got {method!r}")
    _, beta, _ = _irpe_coefficients(ratio)
    side = 2 * int(beta) + 1
    extra = 1 if num_prefix_tokens > 0 else 0
    if method == "product":
        return side * side + extra
    if method == "cross":
        return 2 * (side + extra)
    return side + extra


def irpe_buckets(
    query: Tensor,
    key: Tensor | None = None,
    *,
    method: IRPEMethod = IRPE_METHOD,
    ratio: float = IRPE_RATIO,
    num_prefix_tokens: int = 0,
) -> Tensor:
    r"""Bucket of every (query, key) pair of 2-D positions, iRPE Eq. (13)-(17) and (18).

    With offsets :math:`(\Delta r, \Delta c) = p_i - p_j` (query minus key) and
    :math:`\beta' = \lfloor\beta\rfloor`:

    .. math::
        \text{euclidean: } g([\sqrt{\Delta r^2 + \Delta c^2}]) + \beta' \qquad
        \text{quant: } g(\Delta r^2 + \Delta c^2) + \beta' \\
        \text{product: } (g(\Delta r) + \beta')(2\beta' + 1) + g(\Delta c) + \beta' \qquad
        \text{cross: } \big(g(\Delta r) + \beta',\; g(\Delta c) + \beta' + K_\text{axis}\big)

    with :math:`\alpha:\beta:\gamma = 1:2:8 \times` ``ratio``. Every pair that involves a
    prefix token (class token, registers) gets one extra bucket (the last; per axis for cross).
    Bucket ids match the official implementation, so its tables load unchanged.

    Args:
        query: ``(2, L)`` query patch positions (rows, cols).
        key: ``(2, S)`` key patch positions; defaults to ``query``.
        method: ``"euclidean"``, ``"quant"``, ``"cross"`` or ``"product"``.
        ratio: Bucket-count ratio (1.9 in the paper's best configuration).
        num_prefix_tokens: Prefix tokens ``P`` placed before the patches of both sides.

    Returns:
        ``(T, P + L, P + S)`` long, ``T = 2`` for cross and 1 otherwise, indexing a table of
        :func:`irpe_num_buckets` rows.

    Raises:
        ValueError: On an unknown method, non-2-D or non-finite positions or a negative
            prefix count.
    """
    if method not in IRPE_METHODS:
        raise ValueError(f"iRPE method must be one of {IRPE_METHODS}, got {method!r}")
    key = query if key is None else key
    if query.dim() != 2 or key.dim() != 2 or query.shape[0] != 2 or key.shape[0] != 2:
        raise ValueError(
            f"iRPE positions must be (2, L) rows/cols, got query {tuple(query.shape)} "
            f"and key {tuple(key.shape)}"
        )
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    if not torch.compiler.is_compiling():
        # A NaN or inf offset would cast to an arbitrary bucket id (data-dependent check,
        # skipped while compiling).
        for name, pos in (("query", query), ("key", key)):
            if pos.is_floating_point() and not bool(torch.isfinite(pos).all()):
                raise ValueError(f"iRPE {name} positions must be finite, got NaN or inf")
    alpha, beta, gamma = _irpe_coefficients(ratio)
    b = int(beta)
    side = 2 * b + 1
    # (2, L, 1) - (2, 1, S) -> (2, L, S) offsets, query minus key.
    diff = query[:, :, None].to(torch.float32) - key[:, None, :].to(torch.float32)
    if method == "euclidean":
        ids = irpe_piecewise_index(diff.square().sum(0).sqrt().round(), alpha, beta, gamma)
        ids = (ids + b)[None]
    elif method == "quant":
        ids = (irpe_piecewise_index(diff.square().sum(0), alpha, beta, gamma) + b)[None]
    else:
        axes = irpe_piecewise_index(diff, alpha, beta, gamma) + b  # (2, L, S) in [0, side)
        ids = (axes[0] * side + axes[1])[None] if method == "product" else axes
    # Cross numbers the column table after the row table (rows first), prefix bucket included.
    per_axis = irpe_num_buckets(method, ratio, num_prefix_tokens)
    if method == "cross":
        per_axis //= 2
        ids = torch.stack((ids[0], ids[1] + per_axis))
    if num_prefix_tokens == 0:
        return ids
    t, length, span = ids.shape
    p = num_prefix_tokens
    # The prefix bucket is the last of each (per-axis) table.
    prefix = torch.arange(t, device=ids.device).view(t, 1, 1) * per_axis + per_axis - 1
    out = prefix.expand(t, p + length, p + span).clone()
    out[:, p:, p:] = ids
    return out


def contextual_bias(
    x: Tensor, table: Tensor, buckets: Tensor, *, transpose: bool = False
) -> Tensor:
    r"""Query-dependent bias :math:`b_{ij} = x_i^\top r_{\text{bucket}(i, j)}` by gather.

    iRPE contextual mode, Eq. (6) of Wu et al. (2021): the product with every bucket vector is
    computed once, :math:`(B, H, L, K)`, then gathered per pair, which is cheaper than
    materialising :math:`r` for every pair.

    Args:
        x: ``(B, H, L, D)`` (queries, already scaled, for a term on keys).
        table: ``(H or 1, D, K)`` bucket vectors.
        buckets: ``(T, L, S)`` long; the ``T`` lookups are summed.

        transpose: Return the ``(B, H, S, L)`` transpose, gathered straight into that order (for
            a term on queries, ``x`` being the keys): the same values as ``.transpose(-1, -2)``
            of the plain result, contiguous.

    Returns:
        ``(B, H, L, S)`` in the dtype of ``x`` (``(B, H, S, L)`` with ``transpose``).

    Raises:
        ValueError: If the shapes disagree.
    """
    if table.dim() != 3 or table.shape[-2] != x.shape[-1]:
        raise ValueError(f"table must be (H or 1, D={x.shape[-1]}, K), got {tuple(table.shape)}")
    if buckets.dim() != 3 or buckets.shape[1] != x.shape[-2]:
        raise ValueError(f"buckets must be (T, L={x.shape[-2]}, S), got {tuple(buckets.shape)}")
    lut = torch.matmul(x, table.to(x.dtype))  # (B, H, L, K)
    bsz, heads, length, count = lut.shape
    span = buckets.shape[-1]
    if transpose:
        # out[..., j, i] = lut[..., i, buckets[t, i, j]]: flat ids i * K + bucket, in (S, L) order.
        rows = torch.arange(length, device=buckets.device) * count
        flat = (buckets.transpose(-1, -2) + rows).reshape(buckets.shape[0], 1, 1, span * length)
        table_flat = lut.reshape(bsz, heads, length * count)
        out = table_flat.gather(-1, flat[0].expand(bsz, heads, -1))
        for t in range(1, buckets.shape[0]):
            out.add_(table_flat.gather(-1, flat[t].expand(bsz, heads, -1)))
        return out.view(bsz, heads, span, length)
    out = lut.gather(-1, buckets[0].expand(bsz, heads, length, span))
    for t in range(1, buckets.shape[0]):
        out.add_(lut.gather(-1, buckets[t].expand(bsz, heads, length, span)))
    return out


def value_bias(probs: Tensor, table: Tensor, buckets: Tensor) -> Tensor:
    r"""Value-side term :math:`z_i = \sum_j a_{ij} r^V_{\text{bucket}(i, j)}`.

    iRPE Eq. (8) of Wu et al. (2021). Attention weights are first summed per bucket,
    :math:`w_{ik} = \sum_{j: \text{bucket}(i,j) = k} a_{ij}`, then multiplied by the table, so the
    cost is :math:`O(BHLS + BHLKD)` instead of materialising :math:`(L, S, D)`.

    Args:
        probs: ``(B, H, L, S)`` attention probabilities.
        table: ``(H or 1, K, D)`` bucket vectors.
        buckets: ``(T, L, S)`` long; the ``T`` lookups are summed.

    Returns:
        ``(B, H, L, D)``.

    Raises:
        ValueError: If the shapes disagree.
    """
    if table.dim() != 3:
        raise ValueError(f"table must be (H or 1, K, D), got {tuple(table.shape)}")
    if buckets.dim() != 3 or tuple(buckets.shape[1:]) != tuple(probs.shape[-2:]):
        raise ValueError(
            f"buckets must be (T, L, S) = (T, {probs.shape[-2]}, {probs.shape[-1]}), "
            f"got {tuple(buckets.shape)}"
        )
    bsz, heads, length, span = probs.shape
    weights = probs.new_zeros(bsz, heads, length, table.shape[1])
    for t in range(buckets.shape[0]):
        weights.scatter_add_(-1, buckets[t].expand(bsz, heads, length, span), probs)
    return torch.matmul(weights, table.to(probs.dtype))


def lookup_bias(table: Tensor, buckets: Tensor) -> Tensor:
    r"""Static bias ``(1, H, L, S)`` from a per-head table ``(H, K)`` and ids ``(T, L, S)``.

    iRPE bias mode, Eq. (5) of Wu et al. (2021, arXiv:2107.14222): the ``T`` lookups are summed.
    """
    # (H, K) table, (T, L, S) ids -> (1, H, L, S). A gather (backward: scatter_add) is several
    # times cheaper than advanced indexing (index_put) or an embedding lookup here.
    heads = table.shape[0]
    steps, length, span = buckets.shape
    flat = buckets.reshape(steps, 1, length * span).expand(steps, heads, length * span)
    out = table.gather(1, flat[0])
    for t in range(1, steps):
        out = out + table.gather(1, flat[t])
    return out.view(1, heads, length, span)
