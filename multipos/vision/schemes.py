"""Registrations of the vision schemes that are modules of their own (PEG, RoPE-Mixed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multipos.registry import register_scheme
from multipos.vision.peg import PEGInit, PositionalEncodingGenerator
from multipos.vision.rope_mixed import MixedRotaryEmbedding


def _peg_inputs(
    module: nn.Module, generator: torch.Generator
) -> tuple[Tensor, tuple[int, int], int]:
    assert isinstance(module, PositionalEncodingGenerator)
    dim = module.proj.in_channels
    return torch.randn(2, 1 + 3 * 5, dim, generator=generator), (3, 5), 1


@register_scheme(
    "peg",
    paper="Conditional Positional Encodings for Vision Transformers (Chu et al., 2021, "
    "arXiv:2102.10882)",
    summary="CPVT positional encoding generator: depthwise conv over the patch grid",
    tiny={"dim": 8},
    sample_inputs=_peg_inputs,
    domain="vision",
)
def peg(
    dim: int, *, kernel_size: int = 3, init: PEGInit = "default"
) -> PositionalEncodingGenerator:
    return PositionalEncodingGenerator(dim, kernel_size=kernel_size, init=init)


@register_scheme(
    "rope_mixed",
    paper="Rotary Position Embedding for Vision Transformer (Heo et al., 2024, arXiv:2403.13298)",
    summary="RoPE-Mixed: 2-D rotary tables with learnable per-head frequencies mixing both axes",
    tiny={"head_dim": 8, "num_heads": 2},
    sample_inputs=lambda module, g: (torch.rand(2, 6, generator=g) * 5,),
    domain="vision",
)
def rope_mixed(
    head_dim: int, num_heads: int, *, base: float = 10.0, generator: torch.Generator | None = None
) -> MixedRotaryEmbedding:
    return MixedRotaryEmbedding(head_dim, num_heads, base=base, generator=generator)
