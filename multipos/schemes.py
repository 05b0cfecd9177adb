"""Registrations of the core schemes (imported by ``multipos``).

Each factory takes only keyword arguments that mean one thing library-wide (``head_dim``,
``num_heads``, ``base``, ``layout``, ``factor``...), so ``create_scheme`` can list the valid ones
on a typo. Where a scheme is one module with its paper's defaults (LFF, iRPE), the class itself
is registered, so its signature is the one place those defaults are written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from multipos.fourier import LearnableFourierFeatures
from multipos.frequencies import FrequencyScaling
from multipos.gta import GeometricTransformAttention
from multipos.irpe import IRPE
from multipos.positions import build_grid_positions
from multipos.registry import register_scheme
from multipos.rotary import Layout, RotaryEmbedding

ROFORMER = (
    "RoFormer: Enhanced Transformer with Rotary Position Embedding (Su et al., 2021, "
    "arXiv:2104.09864)"
)
ROPE_VIT = "Rotary Position Embedding for Vision Transformer (Heo et al., 2024, arXiv:2403.13298)"


def _positions(
    num_axes: int, length: int = 7, scale: float = 40.0
) -> Callable[[nn.Module, torch.Generator], tuple[Tensor]]:
    def sample(module: nn.Module, generator: torch.Generator) -> tuple[Tensor]:
        return (torch.rand(num_axes, 2, length, generator=generator) * scale,)

    return sample


@register_scheme(
    "rope",
    paper=ROFORMER,
    summary="1-D rotary cos/sin tables from float positions",
    tiny={"head_dim": 8},
    sample_inputs=_positions(1),
)
def rope(head_dim: int, *, base: float = 10000.0, layout: Layout = "half") -> RotaryEmbedding:
    return RotaryEmbedding(head_dim, base=base, layout=layout)


@register_scheme(
    "rope_linear",
    paper="Extending Context Window of Large Language Models via Positional Interpolation "
    "(Chen et al., 2023, arXiv:2306.15595)",
    summary="RoPE with positions divided by the extension factor (position interpolation)",
    tiny={"head_dim": 8, "factor": 4.0},
    sample_inputs=_positions(1),
)
def rope_linear(
    head_dim: int, *, factor: float, base: float = 10000.0, layout: Layout = "half"
) -> RotaryEmbedding:
    return RotaryEmbedding(
        head_dim, base=base, layout=layout, scaling={"kind": "linear", "factor": factor}
    )


@register_scheme(
    "rope_ntk",
    paper="NTK-aware scaled RoPE (bloc97, 2023), as analysed in YaRN (Peng et al., 2023, "
    "arXiv:2309.00071)",
    summary="RoPE with the base raised to base * factor^(d/(d-2))",
    tiny={"head_dim": 8, "factor": 4.0},
    sample_inputs=_positions(1),
)
def rope_ntk(
    head_dim: int, *, factor: float, base: float = 10000.0, layout: Layout = "half"
) -> RotaryEmbedding:
    return RotaryEmbedding(
        head_dim, base=base, layout=layout, scaling={"kind": "ntk", "factor": factor}
    )


@register_scheme(
    "rope_dynamic",
    paper="Dynamic NTK scaling (emozilla, 2023), as analysed in YaRN (Peng et al., 2023, "
    "arXiv:2309.00071)",
    summary="RoPE whose NTK base grows with the current length beyond original_length",
    tiny={"head_dim": 8, "factor": 2.0, "original_length": 16},
    sample_inputs=_positions(1),
)
def rope_dynamic(
    head_dim: int,
    *,
    factor: float,
    original_length: float,
    base: float = 10000.0,
    layout: Layout = "half",
) -> RotaryEmbedding:
    scaling = FrequencyScaling("dynamic", factor=factor, original_length=original_length)
    return RotaryEmbedding(head_dim, base=base, layout=layout, scaling=scaling)


@register_scheme(
    "rope_yarn",
    paper="YaRN: Efficient Context Window Extension of Large Language Models (Peng et al., "
    "2023, arXiv:2309.00071)",
    summary="RoPE with per-frequency interpolation ramp and attention temperature",
    tiny={"head_dim": 8, "factor": 4.0, "original_length": 16},
    sample_inputs=_positions(1),
)
def rope_yarn(
    head_dim: int,
    *,
    factor: float,
    original_length: float,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    base: float = 10000.0,
    layout: Layout = "half",
) -> RotaryEmbedding:
    scaling = FrequencyScaling(
        "yarn",
        factor=factor,
        original_length=original_length,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        attention_factor=attention_factor,
    )
    return RotaryEmbedding(head_dim, base=base, layout=layout, scaling=scaling)


@register_scheme(
    "rope_axial_2d",
    paper=ROPE_VIT,
    summary="2-D axial RoPE: half of the channel pairs per image axis, full spectrum each",
    tiny={"head_dim": 8},
    sample_inputs=_positions(2, scale=6.0),
)
def rope_axial_2d(
    head_dim: int,
    *,
    base: float = 100.0,
    layout: Layout = "interleaved",
    scaling: FrequencyScaling | Mapping[str, Any] | str | None = None,
) -> RotaryEmbedding:
    return RotaryEmbedding(head_dim, num_axes=2, base=base, layout=layout, scaling=scaling)


@register_scheme(
    "rope_axial_3d",
    paper=ROPE_VIT,
    summary="3-D axial RoPE for video (time, rows, cols), full spectrum per axis",
    tiny={"head_dim": 12},
    sample_inputs=_positions(3, scale=6.0),
)
def rope_axial_3d(
    head_dim: int,
    *,
    sections: Sequence[int] | None = None,
    base: float = 100.0,
    layout: Layout = "interleaved",
) -> RotaryEmbedding:
    return RotaryEmbedding(head_dim, num_axes=3, sections=sections, base=base, layout=layout)


@register_scheme(
    "rope_sectioned",
    paper="Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at Any "
    "Resolution (Wang et al., 2024, arXiv:2409.12191)",
    summary="multimodal RoPE: one spectrum split into contiguous sections, one per axis",
    tiny={"head_dim": 16, "sections": (2, 3, 3)},
    sample_inputs=_positions(3, scale=10.0),
)
def rope_sectioned(
    head_dim: int, *, sections: Sequence[int], base: float = 10000.0, layout: Layout = "half"
) -> RotaryEmbedding:
    return RotaryEmbedding(
        head_dim,
        num_axes=len(sections),
        sections=sections,
        spectrum="shared",
        base=base,
        layout=layout,
    )


register_scheme(
    "lff",
    LearnableFourierFeatures,
    paper="Learnable Fourier Features for Multi-Dimensional Spatial Positional Encoding "
    "(Li et al., 2021, arXiv:2106.02795)",
    summary="absolute PE: learnable Fourier features of continuous coordinates and an MLP",
    tiny={"num_axes": 2, "dim": 16, "num_features": 8, "hidden_dim": 8},
    sample_inputs=lambda module, g: (torch.rand(2, 2, 5, generator=g),),
)


def _irpe_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor, ...]:
    assert isinstance(module, IRPE)
    grid = build_grid_positions((3, 4), num_prefix_tokens=module.num_prefix_tokens)
    # Non-zero tables so the sample exercises every term (the module starts at zero).
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5, generator=generator)
    length = grid.num_tokens
    q, k, v = torch.randn(3, 2, module.num_heads, length, module.head_dim, generator=generator)
    return q, k, v, module.buckets(grid.patches)


register_scheme(
    "irpe",
    IRPE,
    paper="Rethinking and Improving Relative Position Encoding for Vision Transformer "
    "(Wu et al., 2021, arXiv:2107.14222)",
    summary="image relative position encoding: piecewise buckets, bias/contextual on q, k, v",
    tiny={"num_heads": 2, "head_dim": 8, "on": "qkv"},
    sample_inputs=_irpe_inputs,
)


def _gta_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor, ...]:
    assert isinstance(module, GeometricTransformAttention)
    length = 7
    q, k, v = torch.randn(3, 2, 2, length, module.head_dim, generator=generator)
    return q, k, v, torch.rand(module.num_axes, length, generator=generator) * 6.0


register_scheme(
    "gta",
    GeometricTransformAttention,
    paper="GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers (Miyato et al., "
    "2024, arXiv:2310.10375)",
    summary="geometric transform attention: SO(2) representations of grid coordinates act on "
    "q, k, v and the output (2-D RoPE when values are not transformed)",
    tiny={"head_dim": 8},
    sample_inputs=_gta_inputs,
)
