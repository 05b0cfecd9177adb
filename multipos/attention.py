r"""One attention entry point that applies position schemes and dispatches to fused SDPA.

Schemes act on attention in a few ways, and :func:`attention` applies any combination:

1. rotate q and k (RoPE family): fused SDPA is kept;
2. transform q, k, v and the output by per-token group representations (GTA,
   :mod:`multipos.groups`): fused SDPA is kept;
3. add a bias to the logits, static or query/key-dependent (iRPE bias and contextual modes):
   passed to SDPA as ``attn_mask`` and composed with any user mask;
4. add a term to the output from the attention probabilities (iRPE on values): the one case
   that needs the probabilities, computed on the manual path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from multipos.attention_cpu import BiasedAttention, blockwise_attention
from multipos.bias import ContextualBias, ValueBias, contextual_bias, value_bias
from multipos.groups import GTARepresentation
from multipos.rotary import Layout, RotaryTables, apply_rotary

__all__ = ["ContextualBias", "ValueBias", "attention"]


def _mask_to_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        # SDPA convention: True means "may attend".
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, float("-inf")
        )
    if not mask.is_floating_point():
        raise TypeError(f"mask must be bool or floating point, got {mask.dtype}")
    return mask.to(dtype)


def _check_broadcast(name: str, term: Tensor, shape: tuple[int, int, int, int]) -> None:
    dims = tuple(term.shape)
    ok = len(dims) <= 4 and all(d in (1, n) for d, n in zip(dims[::-1], shape[::-1], strict=False))
    if not ok:
        raise ValueError(f"{name} of shape {dims} does not broadcast to (B, H, L, S) = {shape}")


def _check_table_heads(name: str, table: Tensor, heads: int) -> None:
    if table.dim() != 3 or table.shape[0] not in (1, heads):
        raise ValueError(
            f"{name} table must be (H or 1, ...) with H = {heads} heads, got {tuple(table.shape)}"
        )


def _fits(term: Tensor, total: Tensor) -> bool:
    """Whether ``term`` broadcasts to ``total``'s shape (so ``total.add_(term)`` is valid)."""
    return term.dim() <= total.dim() and all(
        t in (1, s) for t, s in zip(reversed(term.shape), reversed(total.shape), strict=False)
    )


class _Sum:
    """Sum of the additive logit terms. Terms this function computed itself are added in
    place (on CPU, allocating and first writing a fresh ``(B, H, L, S)`` buffer per term was
    measured to cost more than the addition); a tensor the caller passed (``bias``) is never
    written."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.owned = False

    def add(self, term: Tensor, *, owned: bool) -> None:
        if self.total is None:
            self.total, self.owned = term, owned
        elif self.owned and _fits(term, self.total):
            self.total.add_(term)
        else:
            self.total, self.owned = self.total + term, True


def _rotary_layout(
    rotary: tuple[Tensor, Tensor], rotary_k: tuple[Tensor, Tensor] | None, layout: Layout | None
) -> Layout:
    """The one layout of the tables, from the tables themselves or from ``layout``."""
    found, source = layout, "layout"
    for name, tables in (("rotary", rotary), ("rotary_k", rotary_k)):
        if not isinstance(tables, RotaryTables):
            continue
        if found is not None and tables.layout != found:
            raise ValueError(
                f"{name} tables were built for layout={tables.layout!r} but {source} says "
                f"{found!r}; rotating with the other pairing breaks the relative-position property"
            )
        found, source = tables.layout, name
    if found is None:
        raise ValueError(
            "rotary is a plain (cos, sin) pair: pass the RotaryTables a rotary embedding returns "
            "(they carry their layout) or layout='half' / 'interleaved' as they were built"
        )
    return found


def _check_gta(
    gta: GTARepresentation | None,
    gta_k: GTARepresentation | None,
    transform_values: bool,
    rotary: tuple[Tensor, Tensor] | None,
) -> None:
    for name, rep in (("gta", gta), ("gta_k", gta_k)):
        if rep is not None and not isinstance(rep, GTARepresentation):
            raise TypeError(f"{name} must be a GTARepresentation, got {type(rep).__name__}")
    if gta is None:
        if gta_k is not None:
            raise ValueError("gta_k given without gta")
        if not transform_values:
            raise ValueError("transform_values=False given without gta")
    elif rotary is not None:
        raise ValueError(
            "gta and rotary both transform q and k and do not compose; put the rotary part in "
            "the representation as SO(2) blocks (multipos.groups.so2_blocks)"
        )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rotary: tuple[Tensor, Tensor] | None = None,
    rotary_k: tuple[Tensor, Tensor] | None = None,
    layout: Layout | None = None,
    bias: Tensor | None = None,
    contextual: Sequence[ContextualBias] = (),
    values: Sequence[ValueBias] = (),
    mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    gta: GTARepresentation | None = None,
    gta_k: GTARepresentation | None = None,
    transform_values: bool = True,
) -> Tensor:
    r"""Scaled dot-product attention with position schemes applied.

    .. math::
        \text{out}_i = \sum_j a_{ij} \Big(\rho_i^{-1}\rho_j v_j + \sum_{\text{values}}
        r_{ij}\Big),\quad
        a_{ij} = \operatorname{softmax}_j\big(s\, (R_i q_i)^\top \rho_i^{-1}\rho_j (R_j k_j)
        + \text{bias}_{ij} + \text{contextual}_{ij} + \text{mask}_{ij}\big)

    where :math:`R` are the rotary rotations, :math:`\rho` the GTA representations (Miyato et
    al., 2024, arXiv:2310.10375, Eq. (5); identity without ``gta``, and on values without
    ``transform_values``) and :math:`s` is ``scale`` (default :math:`D^{-1/2}`). GTA transforms
    q by :math:`\rho_i^{-\top}`, k and v by :math:`\rho_j` and the output by
    :math:`\rho_i^{-1}`, so fused SDPA is kept; contextual terms see the untransformed q and k
    (a relative term such as iRPE's stays relative), and value terms are added after the
    output transform. Without value terms this calls
    :func:`torch.nn.functional.scaled_dot_product_attention` (flash/efficient kernels when no
    additive term is present); value terms need the probabilities and use the manual path, as
    does training on CPU with a learnable additive term and no user mask (same result, less
    overhead than SDPA's unfused path).
    Contextual terms see q and k after rotation.

    Args:
        q: ``(B, H, L, D)``.
        k: ``(B, H, S, D)``.
        v: ``(B, H, S, Dv)``.
        rotary: :class:`~multipos.rotary.RotaryTables` ``(cos, sin)`` for the queries,
            ``(..., L, R)``, as a rotary embedding returns them; also used for the keys unless
            ``rotary_k`` is given. A plain ``(cos, sin)`` pair needs ``layout``.
        rotary_k: Tables for the keys, ``(..., S, R)``.
        layout: Channel pairing, ``"half"`` or ``"interleaved"``. Read from the tables when
            they carry it (then an explicit value must agree); required for plain pairs.
        bias: Additive logit bias broadcastable to ``(B, H, L, S)``.
        contextual: Query/key-dependent biases (iRPE contextual mode).
        values: Value-side terms (iRPE on values).
        mask: Boolean (True = attend) or additive float mask broadcastable to
            ``(B, H, L, S)``.
        is_causal: Causal mask (top-left aligned, like SDPA); composed with the rest.
        scale: Logit scale; default ``1 / sqrt(D)``.
        dropout_p: Dropout on the attention probabilities.
        gta: :class:`~multipos.groups.GTARepresentation` of the query tokens ``(L, D)``; also
            of the keys unless ``gta_k`` is given. Not combined with ``rotary`` (put SO(2)
            blocks in the representation instead).
        gta_k: Representation of the key/value tokens ``(S, D)``.
        transform_values: With ``gta``: also transform values and outputs (GTA); ``False``
            transforms only q and k (RoPE when all blocks are SO(2)).

    Returns:
        ``(B, H, L, Dv)`` in the dtype of ``q``. A row that ``mask`` blocks entirely gives
        zeros on every path.

    Raises:
        ValueError: If q, k, v are not 4-D with equal batch and heads (no broadcasting), a
            ``bias`` or ``mask`` does not broadcast to ``(B, H, L, S)``, a contextual or value
            table has another head count, a ``ContextualBias`` has an unknown ``on``, the
            rotary layout is missing, or ``layout``, ``rotary`` and ``rotary_k`` name
            different layouts; if ``gta`` is combined with ``rotary``, ``gta_k`` or
            ``transform_values=False`` are given without ``gta``, or q, k, v do not fit the
            representations.
        TypeError: If ``gta`` or ``gta_k`` is not a ``GTARepresentation``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be (B, H, L, D); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if (
        q.shape[:2] != k.shape[:2]
        or k.shape[:2] != v.shape[:2]
        or k.shape[-2] != v.shape[-2]
        or q.shape[-1] != k.shape[-1]
    ):
        raise ValueError(
            f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: batch and "
            "heads must be equal, k and v must have the same length, q and k the same width"
        )
    batch, heads, length, span = q.shape[0], q.shape[1], q.shape[-2], k.shape[-2]
    for name, additive in (("bias", bias), ("mask", mask)):
        if additive is not None:
            _check_broadcast(name, additive, (batch, heads, length, span))
    for ctx in contextual:
        _check_table_heads("ContextualBias", ctx.table, heads)
        if ctx.on not in ("q", "k"):
            raise ValueError(f"ContextualBias.on must be 'q' or 'k', got {ctx.on!r}")
    for val in values:
        _check_table_heads("ValueBias", val.table, heads)
    _check_gta(gta, gta_k, transform_values, rotary)
    if rotary is not None:
        pairing = _rotary_layout(rotary, rotary_k, layout)
        q = apply_rotary(q, *rotary, layout=pairing)
        k = apply_rotary(k, *(rotary_k if rotary_k is not None else rotary), layout=pairing)
    elif rotary_k is not None:
        raise ValueError("rotary_k given without rotary")
    elif layout is not None:
        raise ValueError(f"layout={layout!r} given without rotary tables")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    # Value terms need the probabilities (no fused SDPA): outside autograd on CPU every
    # (L, S) tensor is built block by block (measured, ViT-S layer with iRPE on q, k, v, two
    # threads: 17.1-17.6 -> 13.3-14.3 ms, the same bits).
    if (
        values
        and mask is None
        and not is_causal
        and dropout_p == 0.0
        and gta is None
        and _blockwise(q, k, v, bias, contextual, values)
    ):
        return blockwise_attention(q, k, v, scale, bias, contextual, values)

    terms = _Sum()
    if bias is not None:
        terms.add(bias.to(q.dtype), owned=False)
    scaled_q: Tensor | None = None
    for term in contextual:
        if term.on == "k":
            scaled_q = q * scale if scaled_q is None else scaled_q
            terms.add(contextual_bias(scaled_q, term.table, term.buckets), owned=True)
        else:  # "q" (checked above)
            terms.add(
                contextual_bias(k * scale, term.table, term.buckets, transpose=True), owned=True
            )
    if mask is not None:
        terms.add(_mask_to_bias(mask, q.dtype), owned=mask.dtype == torch.bool)
    if is_causal and (terms.total is not None or values):
        allowed = torch.ones(length, span, dtype=torch.bool, device=q.device).tril()
        terms.add(_mask_to_bias(allowed, q.dtype), owned=True)
        is_causal = False
    total = terms.total

    if gta is not None:
        keys = gta if gta_k is None else gta_k
        q = gta._act(q, "inverse_transpose", "q", scratch=True)
        if transform_values:
            k, v = keys._act_keys_values(k, v)
        else:
            k = keys._act(k, "rho", "k", scratch=True)
    back = gta if gta is not None and transform_values else None

    # A learnable additive term (iRPE bias/contextual tables) keeps SDPA off its fused CPU
    # kernel: it runs the same matmul-softmax-matmul plus a fully-masked-row check, measured
    # 5-9% slower forward+backward than the plain path below (ViT-S layer, 1 and 2 threads).
    # Without a user mask no row is fully masked, so both give the same result.
    plain_cpu_backward = (
        q.device.type == "cpu"
        and mask is None
        and total is not None
        and total.requires_grad
        and torch.is_grad_enabled()
    )
    if not values and not plain_cpu_backward:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=total, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
        return out if back is None else back._act(out, "inverse", "output", owned=True)

    if not values and dropout_p == 0.0 and total is not None and total.dtype == q.dtype:
        out = BiasedAttention.apply(q, k, v, total, scale)
        return out if back is None else back._act(out, "inverse", "output", owned=True)

    if gta is not None or scaled_q is None:
        scaled_q = q * scale
    probs = _probabilities(scaled_q, k, terms, mask is not None)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    out = torch.matmul(probs, v)
    if back is not None:
        out = back._act(out, "inverse", "output", owned=True)
    for vterm in values:
        extra = value_bias(probs, vterm.table, vterm.buckets).to(out.dtype)
        out = out.add_(extra) if back is None else out + extra
    return out


def _blockwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    contextual: Sequence[ContextualBias],
    values: Sequence[ValueBias],
) -> bool:
    """Whether iRPE terms may be built block by block (:func:`blockwise_attention`): on CPU,
    one dtype, no gradient to record, and not while compiling (compiled and exported graphs
    keep the whole-tensor path, whose shapes do not depend on a block size)."""
    if torch.compiler.is_compiling():
        return False
    if q.device.type != "cpu" or not q.dtype == k.dtype == v.dtype:
        return False
    if not torch.is_grad_enabled():
        return True
    tensors = [q, k, v, *(t.table for t in contextual), *(t.table for t in values)]
    return not any(t.requires_grad for t in tensors) and (bias is None or not bias.requires_grad)


def _probabilities(scaled_q: Tensor, k: Tensor, terms: _Sum, masked: bool) -> Tensor:
    """``softmax(q k^T + terms)`` with ``q`` already scaled; a row a mask blocks entirely gives
    zeros (as on the SDPA path), not NaN. A summed term of the full shape that this function
    owns takes the product in place (``baddbmm_``): no fresh ``(B, H, L, S)`` buffer."""
    total = terms.total
    bsz, heads, length, dim = scaled_q.shape
    span = k.shape[-2]
    if (
        total is not None
        and terms.owned
        and total.shape == (bsz, heads, length, span)
        and total.dtype == scaled_q.dtype
        and total.is_contiguous()
    ):
        logits = (
            total.view(bsz * heads, length, span)
            .baddbmm_(
                scaled_q.reshape(bsz * heads, length, dim),
                k.reshape(bsz * heads, span, dim).transpose(1, 2),
            )
            .view(bsz, heads, length, span)
        )
    else:
        logits = torch.matmul(scaled_q, k.transpose(-1, -2))
        if total is not None:
            logits = logits + total
    probs = logits.softmax(dim=-1)
    return probs.nan_to_num(0.0) if masked else probs
