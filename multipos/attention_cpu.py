"""The CPU paths of attention with additive logit terms: the three kernels (product, softmax,
product) run block by block in place, with a hand-written backward (:class:`BiasedAttention`,
when a learnable term such as an iRPE bias or contextual table needs a gradient on CPU), and
without autograd with every iRPE term built block by block too (:func:`blockwise_attention`).
Used by :func:`multipos.attention`; nothing here is public.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from multipos.bias import ContextualBias, ValueBias, contextual_bias, value_bias

__all__ = ["BiasedAttention", "blockwise_attention"]

# Logits per block of (batch, head) slices in the CPU path: the add, the softmax and the
# products of one block stay in cache. Measured (ViT-S layer, B=8, H=6, L=197, 2 threads,
# five processes): forward+backward 1-11% faster than the whole tensor at once.
_BLOCK_BYTES = 2 << 20


class BiasedAttention(torch.autograd.Function):
    r"""``softmax(s q k^T + bias) v`` with a hand-written backward (CPU training path).

    Exact, and fewer memory passes than autograd through the same ops. The logits are built
    a few batch elements at a time (about 2 MiB): product, bias added in place, softmax in
    place, product with the values, while the block is in cache. The softmax backward uses
    the output's row sums, :math:`\sum_j P_{ij}\, dP_{ij} = dO_i \cdot O_i` (as
    FlashAttention's backward does): two in-place passes per block; the bias gradient is the
    logit gradient summed to the bias's shape block by block (for iRPE: to ``(1, 1, L, S)``,
    then scattered into the buckets by the lookup's own backward). The probabilities are kept
    only when a gradient is needed.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
        bsz, heads, length, dim = q.shape
        span = k.shape[-2]
        # (B, H, L, D) -> (B*H, L, D); the scale on q (a third of the logits' size)
        q3 = q.reshape(-1, length, dim) * scale
        k3, v3 = k.reshape(-1, span, dim), v.reshape(-1, span, v.shape[-1])
        bias4 = _as_4d(bias)
        per = _block(bsz, heads, length * span * q.element_size())
        keep = any(ctx.needs_input_grad[:4])
        probs = q.new_empty(bsz * heads if keep else per * heads, length, span)
        out = q.new_empty(bsz * heads, length, v3.shape[-1])
        for b0, b1, rows in _blocks(bsz, heads, per):
            p = probs[rows] if keep else probs[: (b1 - b0) * heads]
            torch.bmm(q3[rows], k3[rows].transpose(1, 2), out=p)
            p.view(b1 - b0, heads, length, span).add_(_batch_part(bias4, b0, b1))
            # The row-wise softmax kernel reads each row before writing it.
            torch.softmax(p, -1, out=p)
            torch.bmm(p, v3[rows], out=out[rows])
        if keep:
            ctx.save_for_backward(q3, k3, v3, probs, out)
            ctx.scale, ctx.bias_shape, ctx.per = scale, bias.shape, per
        # (B*H, L, Dv) -> (B, H, L, Dv)
        return out.view(bsz, heads, length, -1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q3, k3, v3, probs, out = ctx.saved_tensors  # q3 holds s * q
        bsz, heads, length, _ = grad.shape
        span, per = k3.shape[1], ctx.per
        # A loss like out.sum() hands back an expanded gradient (zero strides): made dense once,
        # or every product below copies it matrix by matrix.
        g3 = grad.reshape(-1, length, grad.shape[-1]).contiguous()
        grad_q, grad_k, grad_v = torch.empty_like(q3), torch.empty_like(k3), torch.empty_like(v3)
        bias4 = (1,) * (4 - len(ctx.bias_shape)) + tuple(ctx.bias_shape)
        # A term of the logits' full shape (iRPE contextual): its gradient is the logit
        # gradient itself, written block by block where it ends; otherwise one block of scratch.
        full = bias4 == (bsz, heads, length, span)
        grad_bias = grad.new_empty(bias4) if full or bias4[0] > 1 else grad.new_zeros(bias4)
        scratch = grad_bias.view(-1, length, span) if full else None
        if scratch is None:
            scratch = grad.new_empty(per * heads, length, span)
        # Softmax backward in place: dS = P * (dP - rowsum(P * dP)), rowsum(P * dP) = dO . O.
        row_sums = (g3 * out).sum(-1, keepdim=True)
        for b0, b1, rows in _blocks(bsz, heads, per):
            p, d = probs[rows], scratch[rows] if full else scratch[: (b1 - b0) * heads]
            torch.bmm(p.transpose(1, 2), g3[rows], out=grad_v[rows])
            torch.bmm(g3[rows], v3[rows].transpose(1, 2), out=d).sub_(row_sums[rows]).mul_(p)
            torch.bmm(d, k3[rows], out=grad_q[rows])
            torch.bmm(d.transpose(1, 2), q3[rows], out=grad_k[rows])  # (s q)^T: scaled
            if full:
                continue
            block = d.view(b1 - b0, heads, length, span)
            if bias4[0] > 1:
                grad_bias[b0:b1] = block.sum_to_size((b1 - b0, *bias4[1:]))
            else:
                grad_bias += block.sum_to_size(bias4)
        return (
            grad_q.mul_(ctx.scale).view(bsz, heads, length, -1),
            grad_k.view(bsz, heads, span, -1),
            grad_v.view(bsz, heads, span, -1),
            grad_bias.view(ctx.bias_shape),
            None,
        )


def _block(bsz: int, heads: int, slice_bytes: int) -> int:
    """Batch elements per block of logits: about :data:`_BLOCK_BYTES`, at least one."""
    return max(1, min(bsz, _BLOCK_BYTES // max(1, heads * slice_bytes)))


def _blocks(bsz: int, heads: int, per: int) -> Iterator[tuple[int, int, slice]]:
    """``(b0, b1, rows)`` per block: batch elements ``b0:b1``, their ``(B*H)`` rows."""
    for b0 in range(0, bsz, per):
        b1 = min(b0 + per, bsz)
        yield b0, b1, slice(b0 * heads, b1 * heads)


def _as_4d(bias: Tensor) -> Tensor:
    """An additive term as ``(B | 1, H | 1, L, S)``."""
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


def _batch_part(bias4: Tensor, b0: int, b1: int) -> Tensor:
    """The term of batch elements ``b0:b1`` (the whole term when it is shared by the batch)."""
    return bias4[b0:b1] if bias4.shape[0] > 1 else bias4


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    bias: Tensor | None,
    contextual: Sequence[ContextualBias],
    values: Sequence[ValueBias],
) -> Tensor:
    r"""iRPE attention outside autograd (Wu et al., 2021, arXiv:2107.14222, Eq. (5)-(8)) with
    every ``(L, S)`` tensor built a block of batch elements at a time (about
    :data:`_BLOCK_BYTES`): the contextual terms gathered into the block, :math:`s\,q k^\top`
    added in place, softmax in place, the product with the values and the value term, while
    the block is in cache. The same operations as the whole-tensor path, on batch slices.
    Measured (ViT-S layer, B=8, L=197, contextual on q, k, v, 2 threads): the whole-tensor
    path passes five ``(B, H, L, S)`` tensors through memory."""
    bsz, heads, length, dim = q.shape
    span = k.shape[-2]
    per = _block(bsz, heads, length * span * q.element_size())
    scaled_q = q * scale
    scaled_k = k * scale if any(t.on == "q" for t in contextual) else None
    q3, k3 = scaled_q.reshape(-1, length, dim), k.reshape(-1, span, dim)
    v3 = v.reshape(-1, span, v.shape[-1])
    out = q.new_empty(bsz, heads, length, v.shape[-1])
    bias4 = None if bias is None else _as_4d(bias)
    for b0, b1, rows in _blocks(bsz, heads, per):
        # The terms in attention's order (the bias, then the contextual terms), each block's
        # own; then s q k^T added in place, as on the whole-tensor path.
        logits: Tensor | None = None
        if bias4 is not None:
            logits = q.new_empty(b1 - b0, heads, length, span)
            logits.copy_(_batch_part(bias4, b0, b1))
        for term in contextual:
            if term.on == "k":
                extra = contextual_bias(scaled_q[b0:b1], term.table, term.buckets)
            else:  # "q": the keys' term, gathered in (L, S) order
                assert scaled_k is not None
                extra = contextual_bias(scaled_k[b0:b1], term.table, term.buckets, transpose=True)
            logits = extra if logits is None else logits.add_(extra)
        product = (q3[rows], k3[rows].transpose(1, 2))
        if logits is None:
            flat = torch.bmm(*product)
            logits = flat.view(b1 - b0, heads, length, span)
        else:
            flat = logits.view(-1, length, span).baddbmm_(*product)
        torch.softmax(flat, -1, out=flat)
        block = out[b0:b1]
        torch.bmm(flat, v3[rows], out=block.view(-1, length, block.shape[-1]))
        for value_term in values:
            block += value_bias(logits, value_term.table, value_term.buckets).to(block.dtype)
    return out
