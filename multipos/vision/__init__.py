"""Vision position schemes for timm ViTs.

Importing this module registers the ``peg`` and ``rope_mixed`` schemes, declares which
registered schemes a ViT can use (:mod:`multipos.vision.schemes`; their registry names are the
``pos_scheme`` values) and registers with timm ``vit_{tiny,small,base}_patch16_multipos_224``
plus one model per scheme, e.g. ``vit_small_patch16_multipos_irpe_224``.
"""

import timm  # noqa: F401  (fail early with ImportError when the [vision] extra is missing)

from multipos.vision import timm_models as _timm_models  # noqa: F401  (registers timm models)
from multipos.vision.config import VisionSchemes, vit_scheme_names
from multipos.vision.irpe_checkpoints import convert_irpe_checkpoint
from multipos.vision.layers import MultiposAttention, MultiposBlock, VisionPositionContext
from multipos.vision.multiview import GTALayout, MultiViewEncoder
from multipos.vision.peg import PositionalEncodingGenerator
from multipos.vision.retrofit import apply_scheme
from multipos.vision.rope_mixed import MixedRotaryEmbedding
from multipos.vision.rope_vit_checkpoints import convert_rope_vit_checkpoint
from multipos.vision.schemes import (
    GTAConfig,
    IRPEConfig,
    LFFConfig,
    PEGConfig,
    RopeAxialConfig,
    RopeMixedConfig,
    ViTScheme,
)
from multipos.vision.vit import MultiposVisionMixin, MultiposVisionTransformer

__all__ = [
    "GTAConfig",
    "GTALayout",
    "IRPEConfig",
    "LFFConfig",
    "MixedRotaryEmbedding",
    "MultiViewEncoder",
    "MultiposAttention",
    "MultiposBlock",
    "MultiposVisionMixin",
    "MultiposVisionTransformer",
    "PEGConfig",
    "PositionalEncodingGenerator",
    "RopeAxialConfig",
    "RopeMixedConfig",
    "ViTScheme",
    "VisionPositionContext",
    "VisionSchemes",
    "apply_scheme",
    "convert_irpe_checkpoint",
    "convert_rope_vit_checkpoint",
    "vit_scheme_names",
]
