"""multipos: position schemes for structured and multimodal data.

The core imports only torch. Domain adapters live in ``multipos.vision`` (timm),
``multipos.clip`` (open_clip), ``multipos.graph`` (PyTorch Geometric), ``multipos.documents``
(scanned forms) and ``multipos.llm`` (Hugging Face language models); importing one registers
its schemes.
"""

from multipos import positions
from multipos import schemes as _schemes  # noqa: F401  (registers the core schemes)
from multipos._version import __version__
from multipos.attention import attention
from multipos.bias import (
    ContextualBias,
    ValueBias,
    contextual_bias,
    irpe_buckets,
    irpe_num_buckets,
    irpe_piecewise_index,
    value_bias,
)
from multipos.fourier import LearnableFourierFeatures
from multipos.frequencies import FrequencyScaling, rotary_inv_freq, scaled_inv_freq
from multipos.groups import GTARepresentation, gta_attention, se3_blocks, so2_angles, so2_blocks
from multipos.gta import GeometricTransformAttention
from multipos.irpe import IRPE, RelativePositionBias
from multipos.positions import GridPositions, build_grid_positions, build_sequence_positions
from multipos.registry import (
    Integration,
    SchemeSpec,
    create_scheme,
    get_scheme,
    list_schemes,
    register_integration,
    register_scheme,
    scheme_defaults,
)
from multipos.rotary import RotaryEmbedding, RotaryTables, apply_rotary, rotate_pairs

__all__ = [
    "IRPE",
    "ContextualBias",
    "FrequencyScaling",
    "GTARepresentation",
    "GeometricTransformAttention",
    "GridPositions",
    "Integration",
    "LearnableFourierFeatures",
    "RelativePositionBias",
    "RotaryEmbedding",
    "RotaryTables",
    "SchemeSpec",
    "ValueBias",
    "__version__",
    "apply_rotary",
    "attention",
    "build_grid_positions",
    "build_sequence_positions",
    "contextual_bias",
    "create_scheme",
    "get_scheme",
    "gta_attention",
    "irpe_buckets",
    "irpe_num_buckets",
    "irpe_piecewise_index",
    "list_schemes",
    "positions",
    "register_integration",
    "register_scheme",
    "rotary_inv_freq",
    "rotate_pairs",
    "scaled_inv_freq",
    "scheme_defaults",
    "se3_blocks",
    "so2_angles",
    "so2_blocks",
    "value_bias",
]
