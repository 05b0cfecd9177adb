"""iRPE buckets and lookups (Wu et al., 2021)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from multipos import (
    IRPE,
    RelativePositionBias,
    build_grid_positions,
    contextual_bias,
    irpe_buckets,
    irpe_num_buckets,
    irpe_piecewise_index,
    value_bias,
)
from multipos.bias import IRPE_METHODS

ALPHA, BETA, GAMMA = 1.9, 3.8, 15.2  # ratio 1.9


def _paper_g(x: float) -> int:
    """Eq. (18) written out by hand for one value."""
    if abs(x) <= ALPHA:
        return round(x)
    y = ALPHA + math.log(abs(x) / ALPHA) / math.log(GAMMA / ALPHA) * (BETA - ALPHA)
    return int(math.copysign(min(round(y), BETA), x))


def test_piecewise_index_hand_values() -> None:
    x = torch.tensor([0, 1, -1, 2, 3, 4, 5, -5, 13, 100, -100])
    # 2 -> 1.9 + ln(2/1.9)/ln 8 * 1.9 = 1.947 -> 2;  4 -> 2.58 -> 3;  13 -> 3.66 -> min(4, 3.8) -> 3
    assert irpe_piecewise_index(x, ALPHA, BETA, GAMMA).tolist() == [
        0,
        1,
        -1,
        2,
        2,
        3,
        3,
        -3,
        3,
        3,
        -3,
    ]


@given(st.floats(-400, 400, allow_nan=False))
def test_piecewise_index_matches_equation(x) -> None:
    got = irpe_piecewise_index(torch.tensor([x], dtype=torch.float64), ALPHA, BETA, GAMMA).item()
    # Exact ties of round() can differ between float32 and float64; skip them.
    if abs(abs(x) - ALPHA) > 1e-4:
        assert got == _paper_g(x)
    assert -3 <= got <= 3


def test_bucket_counts_of_paper_configs() -> None:
    # "ctx product, ratio 1.9": 7 x 7 product buckets + 1 class-token bucket = 50.
    assert irpe_num_buckets("product", 1.9, num_prefix_tokens=1) == 50
    assert irpe_num_buckets("euclidean", 20.0) == 81
    assert irpe_num_buckets("cross", 20.0, num_prefix_tokens=1) == 2 * 82


def test_product_buckets_hand_computed_offsets() -> None:
    grid = build_grid_positions((14, 14))
    ids = irpe_buckets(grid.patches, method="product")[0]
    # query (0, 0) vs key (r, c): offset = (-r, -c); bucket = (g(-r) + 3) * 7 + g(-c) + 3.
    for r, c in [(0, 0), (0, 1), (1, 0), (2, 5), (13, 13), (3, 0)]:
        expected = (_paper_g(-r) + 3) * 7 + _paper_g(-c) + 3
        assert ids[0, r * 14 + c].item() == expected
    assert ids[0, 0].item() == 24  # zero offset sits in the middle of the 7 x 7 table


@pytest.mark.parametrize("method", IRPE_METHODS)
@given(shift=st.tuples(st.integers(-20, 20), st.integers(-20, 20)))
def test_buckets_depend_only_on_offset(method, shift) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 12, (2, 9), generator=g)
    k = torch.randint(0, 12, (2, 7), generator=g)
    t = torch.tensor(shift)[:, None]
    a = irpe_buckets(q, k, method=method)
    b = irpe_buckets(q + t, k + t, method=method)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < irpe_num_buckets(method)


def test_undirected_methods_are_symmetric_and_directed_are_not() -> None:
    pos = build_grid_positions((4, 5)).patches
    for method in ("euclidean", "quant"):
        ids = irpe_buckets(pos, method=method)[0]
        assert torch.equal(ids, ids.t())
    ids = irpe_buckets(pos, method="product")[0]
    assert not torch.equal(ids, ids.t())


@pytest.mark.parametrize("method", IRPE_METHODS)
def test_prefix_tokens_share_the_last_bucket(method) -> None:
    pos = build_grid_positions((3, 3)).patches
    ids = irpe_buckets(pos, method=method, num_prefix_tokens=2)
    total = irpe_num_buckets(method, num_prefix_tokens=2)
    last = total // 2 - 1 if method == "cross" else total - 1
    assert ids.shape[-2:] == (11, 11)
    assert torch.all(ids[0, :2, :] == last) and torch.all(ids[0, :, :2] == last)
    assert torch.all(ids[0, 2:, 2:] != last)
    if method == "cross":
        assert torch.all(ids[1, :2, :] == total - 1)
        assert ids[1, 2:, 2:].min() >= total // 2


def test_contextual_bias_equals_naive_sum() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 4, generator=g)
    table = torch.randn(3, 4, 6, generator=g)
    buckets = torch.randint(0, 6, (2, 5, 7), generator=g)
    got = contextual_bias(x, table, buckets)
    expected = torch.zeros(2, 3, 5, 7)
    for t in range(2):
        for i in range(5):
            for j in range(7):
                expected[:, :, i, j] += torch.einsum(
                    "bhd,hd->bh", x[:, :, i], table[:, :, buckets[t, i, j]]
                )
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("lookups", [1, 2])
def test_contextual_bias_transposed_equals_the_transpose(lookups) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 4, generator=g, requires_grad=True)
    table = torch.randn(3, 4, 6, generator=g, requires_grad=True)
    buckets = torch.randint(0, 6, (lookups, 5, 7), generator=g)
    plain = contextual_bias(x, table, buckets).transpose(-1, -2)
    got = contextual_bias(x, table, buckets, transpose=True)
    assert got.shape == (2, 3, 7, 5) and got.is_contiguous()
    assert torch.equal(got, plain)
    weights = torch.randn(got.shape, generator=g)
    grads = torch.autograd.grad((got * weights).sum(), (x, table))
    expected = torch.autograd.grad((plain * weights).sum(), (x, table))
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_value_bias_equals_naive_sum() -> None:
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(2, 1, 4, 6, generator=g).softmax(-1)
    table = torch.randn(1, 5, 3, generator=g)
    buckets = torch.randint(0, 5, (1, 4, 6), generator=g)
    got = value_bias(probs, table, buckets)
    expected = torch.einsum("bhij,ijd->bhid", probs, table[0][buckets[0]])
    torch.testing.assert_close(got, expected)


def test_relative_position_bias_table() -> None:
    rpb = RelativePositionBias(4, 2)
    assert torch.all(rpb.table == 0)
    with torch.no_grad():
        rpb.table.copy_(torch.arange(8.0).view(2, 4))
    out = rpb(torch.tensor([[[0, 3], [2, 1]]]))
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 1].tolist() == [[4.0, 7.0], [6.0, 5.0]]


def test_irpe_starts_as_identity_of_plain_attention() -> None:
    grid = build_grid_positions((3, 4), num_prefix_tokens=1)
    q, k, v = torch.randn(3, 2, 2, grid.num_tokens, 8)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for method in IRPE_METHODS:
        for mode, on in (("bias", "qk"), ("contextual", "qkv")):
            rpe = IRPE(2, 8, method=method, mode=mode, on=on)
            torch.testing.assert_close(rpe(q, k, v, rpe.buckets(grid.patches)), plain)


def test_irpe_terms_match_manual_attention() -> None:
    g = torch.Generator().manual_seed(4)
    grid = build_grid_positions((2, 3), num_prefix_tokens=1)
    rpe = IRPE(2, 4, method="product", mode="contextual", on="qkv", shared_heads=False)
    with torch.no_grad():
        for p in rpe.parameters():
            p.normal_(generator=g)
    q, k, v = torch.randn(3, 1, 2, grid.num_tokens, 4, generator=g)
    ids = rpe.buckets(grid.patches)[0]
    s = 4**-0.5
    rq = rpe.table_q[:, :, ids]  # (H, D, L, L)
    rk = rpe.table_k[:, :, ids]
    rv = rpe.table_v[:, ids]  # (H, L, L, D)
    logits = s * q @ k.transpose(-1, -2)
    logits = logits + s * torch.einsum("bhid,hdij->bhij", q, rk)
    logits = logits + s * torch.einsum("bhjd,hdji->bhij", k, rq)
    a = logits.softmax(-1)
    expected = a @ v + torch.einsum("bhij,hijd->bhid", a, rv)
    torch.testing.assert_close(rpe(q, k, v, rpe.buckets(grid.patches)), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "manhattan"}, "method must be one of"),
        ({"mode": "ctx"}, "mode must be one of"),
        ({"on": "kx"}, "subset of 'qkv'"),
        ({"on": "kk"}, "subset of 'qkv'"),
        ({"mode": "bias", "on": "v"}, "bias mode"),
        ({"ratio": 0.0}, "ratio"),
    ],
)
def test_irpe_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        IRPE(2, 8, **kwargs)


def test_bucket_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, L\)"):
        irpe_buckets(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"buckets must be \(T, L=5, S\)"):
        contextual_bias(torch.zeros(1, 1, 5, 4), torch.zeros(1, 4, 3), torch.zeros(1, 6, 6).long())


def _eq18(x: float, alpha: float, beta: float, gamma: float) -> int:
    """iRPE Eq. (18) in plain Python: round half to even, clip at beta, truncate to int."""
    if abs(x) <= alpha:
        return round(x)
    far = alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    return int(math.copysign(min(beta, round(far)), x))


def _paper_buckets(shape, method, ratio, prefix) -> list[list[list[int]]]:
    """Bucket ids of every token pair from iRPE Eq. (13)-(18), one pair at a time.

    Tables are numbered as the official code loads them: euclidean/quant/product ids in
    [0, K), the prefix bucket last; cross has a row table then a column table, each with its
    own prefix bucket, so column ids start at K_axis = 2 * floor(beta) + 1 (+ 1 with prefix).
    """
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    b = int(beta)
    side = 2 * b + 1
    cells = [(r, c) for r in range(shape[0]) for c in range(shape[1])]
    extra = 1 if prefix else 0
    per_axis = {"product": side * side, "cross": side}.get(method, side) + extra
    n = prefix + len(cells)
    out = [[[0] * n for _ in range(n)] for _ in range(2 if method == "cross" else 1)]
    for i in range(n):
        for j in range(n):
            if i < prefix or j < prefix:
                ids = [per_axis - 1] if method != "cross" else [per_axis - 1, 2 * per_axis - 1]
            else:
                (ri, ci), (rj, cj) = cells[i - prefix], cells[j - prefix]
                dr, dc = ri - rj, ci - cj
                if method == "euclidean":
                    ids = [_eq18(round(math.sqrt(dr * dr + dc * dc)), alpha, beta, gamma) + b]
                elif method == "quant":
                    ids = [_eq18(dr * dr + dc * dc, alpha, beta, gamma) + b]
                elif method == "product":
                    gr, gc = (_eq18(d, alpha, beta, gamma) + b for d in (dr, dc))
                    ids = [gr * side + gc]
                else:
                    ids = [
                        _eq18(dr, alpha, beta, gamma) + b,
                        _eq18(dc, alpha, beta, gamma) + b + per_axis,
                    ]
            for t, v in enumerate(ids):
                out[t][i][j] = v
    return out


@pytest.mark.parametrize("prefix", [0, 1, 2])
@pytest.mark.parametrize("ratio", [0.5, 1.9, 3.0])
@pytest.mark.parametrize("method", IRPE_METHODS)
@pytest.mark.parametrize("shape", [(5, 5), (3, 7)], ids=["square", "non_square"])
def test_buckets_equal_the_papers_equations(shape, method, ratio, prefix) -> None:
    pos = build_grid_positions(shape).patches
    got = irpe_buckets(pos, method=method, ratio=ratio, num_prefix_tokens=prefix)
    assert got.tolist() == _paper_buckets(shape, method, ratio, prefix)
    total = irpe_num_buckets(method, ratio, num_prefix_tokens=prefix)
    assert int(got.min()) >= 0 and int(got.max()) < total


def test_cross_without_prefix_tokens_uses_the_column_table() -> None:
    # Without prefix tokens the column ids must still point into the column half.
    pos = build_grid_positions((4, 6)).patches
    ids = irpe_buckets(pos, method="cross")
    half = irpe_num_buckets("cross") // 2
    assert int(ids[0].max()) < half <= int(ids[1].min())
