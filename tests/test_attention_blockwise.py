"""Attention with iRPE value terms outside autograd on CPU builds every (L, S) tensor block
by block (multipos.attention_cpu.blockwise_attention): the same result as the whole-tensor
path and as the definition (iRPE Eq. (5)-(8)), whatever the blocks; taken only where nothing
needs a gradient and no mask, causal flag or dropout applies."""

from __future__ import annotations

import sys

import pytest
import torch

import multipos.attention_cpu
from multipos import attention
from multipos.bias import ContextualBias, ValueBias

attention_module = sys.modules["multipos.attention"]

B, H, L, S, D, K = 3, 2, 5, 7, 4, 6


def _case(dtype: torch.dtype, bias_shape: tuple[int, ...] | None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, generator=g, dtype=dtype)
    k, v = (torch.randn(B, H, S, D, generator=g, dtype=dtype) for _ in range(2))
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=g, dtype=dtype)
    ids = torch.randint(0, K, (2, L, S), generator=g)  # two lookups summed (T = 2)
    ids_q = torch.randint(0, K, (1, S, L), generator=g)  # key-centred ids of the term on q
    contextual = [
        ContextualBias(torch.randn(1, D, K, generator=g, dtype=dtype), ids, "k"),
        ContextualBias(torch.randn(H, D, K, generator=g, dtype=dtype), ids_q, "q"),
    ]
    values = [ValueBias(torch.randn(H, K, D, generator=g, dtype=dtype), ids)]
    return q, k, v, bias, contextual, values


def _definition(q, k, v, bias, contextual, values, scale):
    """Eq. (5)-(8) with every pair's table rows materialised."""
    logits = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    for term in contextual:
        table = term.table.expand(H, -1, -1)  # (H, D, K)
        for ids in term.buckets:
            rows = table[:, :, ids]  # (H, D, L|S, S|L)
            if term.on == "k":
                logits = logits + torch.einsum("bhid,hdij->bhij", q * scale, rows)
            else:
                logits = logits + torch.einsum("bhjd,hdji->bhij", k * scale, rows)
    probs = logits.softmax(-1)
    out = probs @ v
    for term in values:
        table = term.table.expand(H, -1, -1)  # (H, K, D)
        for ids in term.buckets:
            out = out + torch.einsum("bhij,hijd->bhid", probs, table[:, ids])
    return out


@pytest.mark.parametrize("bias_shape", [None, (1, 1, L, S), (B, H, L, S), (L, S)])
@pytest.mark.parametrize("block_bytes", [1, 2 << 20], ids=["one_sample_per_block", "one_block"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blockwise_equals_the_whole_tensor_path_and_the_definition(
    bias_shape, block_bytes, dtype, monkeypatch
) -> None:
    monkeypatch.setattr(multipos.attention_cpu, "_BLOCK_BYTES", block_bytes)
    q, k, v, bias, contextual, values = _case(dtype, bias_shape)
    with torch.no_grad():
        got = attention(q, k, v, bias=bias, contextual=contextual, values=values, scale=0.4)
        monkeypatch.setattr(attention_module, "_blockwise", lambda *args: False)
        whole = attention(q, k, v, bias=bias, contextual=contextual, values=values, scale=0.4)
    ref = _definition(
        q.double(),
        k.double(),
        v.double(),
        None if bias is None else bias.double(),
        [t._replace(table=t.table.double()) for t in contextual],
        [t._replace(table=t.table.double()) for t in values],
        0.4,
    )
    torch.testing.assert_close(got, whole)
    torch.testing.assert_close(got, ref.to(dtype))


def _count_blockwise(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = multipos.attention_cpu.blockwise_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_module, "blockwise_attention", counted)
    return calls


def test_blockwise_is_taken_without_autograd_or_masks(monkeypatch) -> None:
    calls = _count_blockwise(monkeypatch)
    q, k, v, bias, contextual, values = _case(torch.float32, (1, 1, L, S))
    with torch.no_grad():
        attention(q, k, v, bias=bias, contextual=contextual, values=values)
    assert len(calls) == 1
    # grad enabled but nothing requires it: still no autograd graph to keep
    attention(q, k, v, bias=bias, contextual=contextual, values=values)
    assert len(calls) == 2


@pytest.mark.parametrize("case", ["table_grad", "q_grad", "mask", "causal", "no_values"])
def test_blockwise_is_not_taken_where_it_does_not_apply(case, monkeypatch) -> None:
    calls = _count_blockwise(monkeypatch)
    q, k, v, _, contextual, values = _case(torch.float64, None)
    kwargs: dict = {"contextual": contextual, "values": values}
    if case == "table_grad":
        kwargs["values"] = [values[0]._replace(table=values[0].table.requires_grad_())]
    elif case == "q_grad":
        q.requires_grad_()
    elif case == "mask":
        kwargs["mask"] = torch.ones(L, S, dtype=torch.bool)
    elif case == "causal":
        q, k, v = q[..., :L, :], k[..., :L, :], v[..., :L, :]
        kwargs = {
            "contextual": [],
            "values": [ValueBias(values[0].table, values[0].buckets[..., :L])],
        }
        kwargs["is_causal"] = True
    else:
        kwargs["values"] = []
    out = attention(q, k, v, **kwargs)
    assert not calls
    assert torch.isfinite(out).all()
