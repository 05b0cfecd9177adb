"""Complex rotation by learnable turns: the lean backward equals autograd's product rule."""

from __future__ import annotations

import pytest
import torch

from multipos.rotary_turn import _MAX_SLICES, rotate


def _complex(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, 2, generator=generator, dtype=torch.float64).view(torch.complex128)[
        ..., 0
    ]


@pytest.mark.parametrize(
    ("pairs_shape", "turn_shape"),
    [
        ((4, 3, 5, 6), (3, 5, 6)),  # turns shared by the batch (RoPE-Mixed)
        ((2, 4, 3, 5, 6), (3, 5, 6)),  # two leading dimensions
        ((_MAX_SLICES + 1, 5, 6), (5, 6)),  # too many slices: summed at once
        ((4, 3, 5, 6), (1, 3, 5, 6)),  # a size-1 dimension: summed at once
        ((4, 3, 5, 6), (4, 3, 5, 6)),  # no broadcast
    ],
)
def test_gradients_equal_the_plain_product(pairs_shape, turn_shape) -> None:
    g = torch.Generator().manual_seed(0)
    pairs = _complex(pairs_shape, g).requires_grad_()
    turn = _complex(turn_shape, g).requires_grad_()
    upstream = _complex(pairs_shape, g)
    out = rotate(pairs, turn)
    expected = pairs * turn
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    mine = torch.autograd.grad(out, (pairs, turn), upstream)
    reference = torch.autograd.grad(expected, (pairs, turn), upstream)
    for a, b in zip(mine, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fixed_turns_and_no_grad_take_the_plain_product() -> None:
    g = torch.Generator().manual_seed(1)
    pairs = _complex((2, 3, 4), g).requires_grad_()
    turn = _complex((3, 4), g)
    assert rotate(pairs, turn).grad_fn.__class__.__name__ == "MulBackward0"
    with torch.no_grad():
        assert rotate(pairs, turn.requires_grad_()).grad_fn is None


def test_gradcheck_and_second_derivatives() -> None:
    g = torch.Generator().manual_seed(2)
    pairs = _complex((3, 2, 4), g).requires_grad_()
    turn = _complex((2, 4), g).requires_grad_()
    assert torch.autograd.gradcheck(rotate, (pairs, turn))
    assert torch.autograd.gradgradcheck(rotate, (pairs, turn))
