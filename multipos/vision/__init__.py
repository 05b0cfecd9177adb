"""Vision position schemes for timm ViTs.

Importing this module registers the ``vit_*_patch16_multipos_224`` family (and scheme-named
aliases such as ``vit_small_patch16_irpe_224``) with timm and the ``peg`` and ``rope_mixed``
schemes with the multipos registry.
"""

import timm  # noqa: F401  (fail early with ImportError when the [vision] extra is missing)

from multipos.vision import schemes as _schemes  # noqa: F401
from multipos.vision.config import (
    IRPEConfig,
    LFFConfig,
    PEGConfig,
    RopeAxialConfig,
    RopeMixedConfig,
    VisionSchemes,
)
from multipos.vision.irpe_checkpoints import convert_irpe_checkpoint
from multipos.vision.layers import MultiposAttention, MultiposBlock, VisionPositionContext
from multipos.vision.peg import PositionalEncodingGenerator
from multipos.vision.rope_mixed import MixedRotaryEmbedding
from multipos.vision.timm_models import MultiposVisionTransformer, apply_scheme

__all__ = [
    "IRPEConfig",
    "LFFConfig",
    "MixedRotaryEmbedding",
    "MultiposAttention",
    "MultiposBlock",
    "MultiposVisionTransformer",
    "PEGConfig",
    "PositionalEncodingGenerator",
    "RopeAxialConfig",
    "RopeMixedConfig",
    "VisionPositionContext",
    "VisionSchemes",
    "apply_scheme",
    "convert_irpe_checkpoint",
]
