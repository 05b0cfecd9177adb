r"""Positional encoding generator (PEG), the conditional position encoding of CPVT."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from multipos.registry import register_scheme

__all__ = ["PEGInit", "PositionalEncodingGenerator"]

PEGInit = Literal["twins", "default", "zero"]
PEG_INITS: tuple[str, ...] = get_args(PEGInit)


def _check_grid_tokens(x: Tensor, height: int, width: int, num_prefix_tokens: int) -> None:
    if x.shape[1] - num_prefix_tokens != height * width:
        raise ValueError(
            f"PEG got {x.shape[1] - num_prefix_tokens} patch tokens for a {height}x{width} grid "
            f"(x: {tuple(x.shape)}, num_prefix_tokens={num_prefix_tokens})"
        )


# One graph node under torch.fx: the check reads the token count, which tracing cannot.
torch.fx.wrap("_check_grid_tokens")


class PositionalEncodingGenerator(nn.Module):
    r"""Depthwise convolution over the patch grid, added to the tokens; prefix tokens pass through.

    From "Conditional Positional Encodings for Vision Transformers" (Chu, Tian, Zhang, Wang,
    Shen, ICLR 2023, arXiv:2102.10882), Eq. (1) and Fig. 3:

    .. math::
        X' = X + \operatorname{DWConv}_{k \times k}(X), \quad X \in \mathbb{R}^{H \times W \times C}

    The zero padding of the convolution is what lets the encoding carry absolute position; it
    works at any resolution without interpolation.

    Args:
        dim: Channels ``C``, the token width of the model.
        kernel_size: Odd kernel size ``k`` (3 in the paper).
        init: Where the initial weights come from:

            - ``"twins"`` (default): weights from :math:`\mathcal{N}(0, 2 / \text{fan\_out})`
              with :math:`\text{fan\_out} = k^2 C / \text{groups} = k^2`, bias zero; the
              init of the only released PEG training code, ``CPVTV2._init_weights`` of Twins
              ("Twins: Revisiting the Design of Spatial Attention in Vision Transformers",
              Chu et al., 2021, arXiv:2104.13840; the CPVT paper does not state one);
            - ``"default"``: PyTorch's ``Conv2d`` init (Kaiming-uniform weights and bias);
            - ``"zero"``: weights and bias zero, so the module starts as the identity (used
              when adding a PEG to a trained model).
        generator: Random generator for the ``"twins"`` and ``"default"`` inits.
        device: Device of the parameters.

    Shape:
        ``forward(x, grid, num_prefix_tokens)`` with ``x: (B, P + H*W, C)`` and
        ``grid = (H, W)`` returns the same shape.

    Raises:
        ValueError: On an even kernel, an unknown ``init``, or tokens that do not match the grid.
    """

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 3,
        init: PEGInit = "twins",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if init not in PEG_INITS:
            raise ValueError(f"init must be one of {PEG_INITS}, got {init!r}")
        self.proj = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True, device=device
        )
        self.init: PEGInit = init
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the initial weights named by ``init``."""
        weight, bias = self.proj.weight, self.proj.bias
        assert bias is not None
        if self.init == "zero":
            weight.zero_()
            bias.zero_()
        elif self.init == "twins":
            k_h, k_w = self.proj.kernel_size
            fan_out = k_h * k_w * self.proj.out_channels // self.proj.groups
            weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
            bias.zero_()
        else:
            # PyTorch's Conv2d.reset_parameters (Kaiming-uniform, a = sqrt(5)) with the
            # generator: weight and bias bounds are both 1 / sqrt(fan_in).
            bound = 1.0 / math.sqrt(weight[0].numel())
            weight.uniform_(-bound, bound, generator=generator)
            bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> Tensor:
        height, width = grid
        _check_grid_tokens(x, height, width, num_prefix_tokens)
        prefix, tokens = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        bsz, _, channels = tokens.shape
        # (B, H*W, C) -> (B, C, H, W)
        feat = tokens.transpose(1, 2).reshape(bsz, channels, height, width)
        feat = feat + self.proj(feat)
        # (B, C, H, W) -> (B, H*W, C)
        return torch.cat((prefix, feat.flatten(2).transpose(1, 2)), dim=1)


def _peg_inputs(
    module: nn.Module, generator: torch.Generator
) -> tuple[Tensor, tuple[int, int], int]:
    assert isinstance(module, PositionalEncodingGenerator)
    dim = module.proj.in_channels
    return torch.randn(2, 1 + 3 * 5, dim, generator=generator), (3, 5), 1


register_scheme(
    "peg",
    PositionalEncodingGenerator,
    paper="Conditional Positional Encodings for Vision Transformers (Chu et al., 2021, "
    "arXiv:2102.10882)",
    summary="CPVT positional encoding generator: depthwise conv over the patch grid",
    tiny={"dim": 8},
    sample_inputs=_peg_inputs,
    domain="vision",
)
