"""Every input that used to give a silent wrong result or an error from deep inside torch now
raises a ValueError/TypeError that names the argument (or gets the documented result)."""

from __future__ import annotations

import math

import pytest
import torch

import multipos
from multipos import (
    IRPE,
    FrequencyScaling,
    LearnableFourierFeatures,
    RotaryEmbedding,
    apply_rotary,
    attention,
    build_grid_positions,
    build_sequence_positions,
    irpe_buckets,
    rotate_pairs,
)

NAN_POSITIONS = torch.tensor([[0.0, 1.0, math.nan], [0.0, 2.0, 1.0]])
INF_POSITIONS = torch.tensor([[0.0, 1.0, 2.0], [0.0, math.inf, 1.0]])


def _qkv(bq: int = 1, bk: int = 1, heads: int = 2, length: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(bq, heads, length, dim, generator=g)
    k = torch.randn(bk, heads, length, dim, generator=g)
    v = torch.randn(bk, heads, length, dim, generator=g)
    return q, k, v


def _vision():
    pytest.importorskip("timm", reason="needs the [vision] extra (timm)")
    import multipos.vision as mv

    return mv


CASES = {
    "grid size 14.7": (TypeError, "grid size", lambda: build_grid_positions((14.7, 20))),
    "sequence length 4.5": (TypeError, "length", lambda: build_sequence_positions(4.5)),
    "reference_shape zero": (
        ValueError,
        "reference_shape",
        lambda: build_grid_positions((4, 4), reference_shape=(0, 0)),
    ),
    "rope nan positions": (
        ValueError,
        "positions must be finite",
        lambda: RotaryEmbedding(8, num_axes=2)(NAN_POSITIONS),
    ),
    "rope inf positions": (
        ValueError,
        "positions must be finite",
        lambda: RotaryEmbedding(8, num_axes=2)(INF_POSITIONS),
    ),
    "lff nan positions": (
        ValueError,
        "positions must be finite",
        lambda: LearnableFourierFeatures(2, 8)(NAN_POSITIONS),
    ),
    "irpe nan positions": (ValueError, "query positions", lambda: irpe_buckets(NAN_POSITIONS)),
    "irpe inf key": (
        ValueError,
        "key positions",
        lambda: irpe_buckets(NAN_POSITIONS.nan_to_num(0.0), INF_POSITIONS),
    ),
    "scaling factor inf": (
        ValueError,
        "factor must be finite",
        lambda: FrequencyScaling("linear", factor=math.inf),
    ),
    "tables dtype int32": (
        TypeError,
        "dtype",
        lambda: RotaryEmbedding(8)(torch.arange(4.0), dtype=torch.int32),
    ),
    "apply_rotary integer x": (
        TypeError,
        "floating-point",
        lambda: apply_rotary(
            torch.ones(4, 8, dtype=torch.long), *RotaryEmbedding(8)(torch.arange(4.0)), "half"
        ),
    ),
    "rotate_pairs odd width": (
        ValueError,
        "even width",
        lambda: rotate_pairs(torch.ones(2, 5), "half"),
    ),
    "head_dim string": (TypeError, "head_dim", lambda: RotaryEmbedding("64")),
    "head_dim float": (TypeError, "head_dim", lambda: RotaryEmbedding(64.0)),
    "table length != sequence": (
        ValueError,
        "positions but x has",
        lambda: attention(*_qkv(length=4), rotary=RotaryEmbedding(8)(torch.arange(6.0))),
    ),
    "q batch 2, k/v batch 1": (ValueError, "batch and heads", lambda: attention(*_qkv(bq=2, bk=1))),
    "mask of the wrong shape": (
        ValueError,
        "mask of shape",
        lambda: attention(*_qkv(), mask=torch.ones(3, 4, dtype=torch.bool)),
    ),
    "bias with another head count": (
        ValueError,
        "bias of shape",
        lambda: attention(*_qkv(heads=2), bias=torch.zeros(1, 3, 4, 4)),
    ),
    "contextual table head count": (
        ValueError,
        "ContextualBias table",
        lambda: attention(
            *_qkv(heads=2),
            contextual=[
                multipos.ContextualBias(
                    torch.zeros(3, 8, 5), torch.zeros(1, 4, 4, dtype=torch.long)
                )
            ],
        ),
    ),
    "IRPE(0, -3)": (ValueError, "num_heads", lambda: IRPE(0, -3)),
    "IRPE head_dim -3": (ValueError, "head_dim", lambda: IRPE(2, -3)),
    "empty pos_scheme": (
        ValueError,
        "pos_scheme is empty",
        lambda: _vision().VisionSchemes.parse([]),
    ),
    "irpe checkpoint without iRPE keys": (
        ValueError,
        "no iRPE tables",
        lambda: _vision().convert_irpe_checkpoint({"blocks.0.attn.qkv.weight": torch.zeros(1)}),
    ),
    "irpe checkpoint as a file name": (
        TypeError,
        "torch.load",
        lambda: _vision().convert_irpe_checkpoint("file.pth"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_naming_the_argument(case) -> None:
    error, message, call = CASES[case]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("with_values", [False, True], ids=["sdpa", "value_terms"])
def test_a_fully_masked_row_gives_zeros_on_every_path(with_values) -> None:
    q, k, v = _qkv()
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False  # query 2 may attend to nothing
    values = []
    if with_values:
        buckets = torch.zeros(1, 4, 4, dtype=torch.long)
        values = [multipos.ValueBias(torch.ones(1, 3, 8), buckets)]
    out = attention(q, k, v, mask=mask, values=values)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    unmasked = attention(q, k, v, values=values)
    torch.testing.assert_close(out[:, :, [0, 1, 3]], unmasked[:, :, [0, 1, 3]])
