"""The registered schemes a timm ViT can use, declared once each.

Each declaration attaches a :class:`ViTScheme` to a registry name as its ``"timm"``
integration (:func:`multipos.register_integration`). From there everything else follows: the
name is what users pass as ``pos_scheme`` and as the ``pos_cfg`` key, ``pos_cfg`` is validated
against the scheme's options class, the ``vit_*_patch16_multipos_<name>_224`` models are
registered with timm, and ``multipos list`` says how to reach the scheme. The options' defaults
are read from the registered factory's signature, so ``create_scheme(name)`` and
``pos_cfg={name: {}}`` build the same module.

Adding a ViT scheme: register its module (:func:`multipos.register_scheme`), add its options
class and one ``_declare`` call below, and apply it in :mod:`multipos.vision.vit` (model-level
modules) or :mod:`multipos.vision.layers` (per-block modules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from multipos.bias import IRPE_METHODS, IRPE_MODES, IRPEMethod, IRPEMode
from multipos.frequencies import FrequencyScaling
from multipos.registry import register_integration, scheme_defaults
from multipos.vision import rope_mixed as _rope_mixed  # noqa: F401  (registers "rope_mixed")
from multipos.vision.peg import PEG_INITS, PEGInit

__all__ = [
    "GTAConfig",
    "IRPEConfig",
    "LFFConfig",
    "PEGConfig",
    "RopeAxialConfig",
    "RopeMixedConfig",
    "ViTScheme",
]

# LFF's new parameters: the module's own init, or a zero last layer (encoding starts at zero).
LFFInit = Literal["default", "zero"]
LFF_INITS: tuple[str, ...] = get_args(LFFInit)

_IRPE = scheme_defaults("irpe")
_PEG = scheme_defaults("peg")
_LFF = scheme_defaults("lff")
_ROPE_AXIAL = scheme_defaults("rope_axial_2d")
_ROPE_MIXED = scheme_defaults("rope_mixed")
_GTA = scheme_defaults("gta")


@dataclass(frozen=True)
class IRPEConfig:
    """iRPE options (Wu et al., 2021); defaults are :class:`multipos.IRPE`'s."""

    method: IRPEMethod = _IRPE["method"]
    mode: IRPEMode = _IRPE["mode"]
    on: str = _IRPE["on"]
    ratio: float = _IRPE["ratio"]
    shared_heads: bool = _IRPE["shared_heads"]

    def __post_init__(self) -> None:
        if self.method not in IRPE_METHODS:
            raise ValueError(f"irpe method must be one of {IRPE_METHODS}, got {self.method!r}")
        if self.mode not in IRPE_MODES:
            raise ValueError(f"irpe mode must be one of {IRPE_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class PEGConfig:
    """PEG options (Chu et al., CPVT): after which blocks, kernel size, initialisation."""

    blocks: tuple[int, ...] = (0,)
    kernel_size: int = _PEG["kernel_size"]
    init: PEGInit = _PEG["init"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.init not in PEG_INITS:
            raise ValueError(f"peg init must be one of {PEG_INITS}, got {self.init!r}")


@dataclass(frozen=True)
class LFFConfig:
    """Learnable Fourier feature options (Li et al., 2021); defaults are
    :class:`multipos.LearnableFourierFeatures`'s.

    ``coords="unit"`` feeds patch centres normalised to (0, 1) per axis (a larger input
    interpolates); ``"reference"`` divides by the model's default grid instead, so a larger
    input extends the coordinates (extrapolates). ``gamma`` suits unit coordinates (the paper's
    ``W_r ~ N(0, gamma^-2)``). ``init="zero"`` zeroes the last MLP layer so the encoding starts
    at zero.
    """

    num_features: int = _LFF["num_features"]
    hidden_dim: int = _LFF["hidden_dim"]
    gamma: float = _LFF["gamma"]
    coords: Literal["unit", "reference"] = "unit"
    init: LFFInit = "default"

    def __post_init__(self) -> None:
        if self.init not in LFF_INITS:
            raise ValueError(f"lff init must be one of {LFF_INITS}, got {self.init!r}")
        if self.coords not in ("unit", "reference"):
            raise ValueError(f"lff coords must be 'unit' or 'reference', got {self.coords!r}")


@dataclass(frozen=True)
class RopeAxialConfig:
    """Axial 2-D RoPE options (``rope_axial_2d``): base and an optional
    resolution-extrapolation scaling; defaults are the registered scheme's.

    ``scaling`` is a :class:`multipos.FrequencyScaling` or a mapping, e.g.
    ``{"kind": "yarn", "factor": 2.0, "original_length": 14}`` (lengths in patches per axis).
    """

    base: float = _ROPE_AXIAL["base"]
    scaling: FrequencyScaling | Mapping[str, Any] | str | None = _ROPE_AXIAL["scaling"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "scaling", FrequencyScaling.coerce(self.scaling))


@dataclass(frozen=True)
class RopeMixedConfig:
    """RoPE-Mixed options (Heo et al., 2024): frequency base of the initialisation; default
    is :class:`multipos.vision.MixedRotaryEmbedding`'s."""

    base: float = _ROPE_MIXED["base"]


@dataclass(frozen=True)
class GTAConfig:
    """2-D GTA options (Miyato et al., 2024, ``gta``): frequency base of the SO(2) blocks
    (frequencies and layout as ``rope_axial_2d``) and whether values and outputs are
    transformed (``False`` is 2-D RoPE); defaults are the registered scheme's."""

    base: float = _GTA["base"]
    transform_values: bool = _GTA["transform_values"]

    def __post_init__(self) -> None:
        if not isinstance(self.transform_values, bool):
            raise TypeError(f"gta transform_values must be a bool, got {self.transform_values!r}")


@dataclass(frozen=True)
class ViTScheme:
    """What a timm ViT needs to know about a registered scheme.

    Attributes:
        options: Dataclass of the scheme's ``pos_cfg`` entry.
        relative: Needs every token's grid position inside the model (so no patch dropout).
        rotary: Rotates (or otherwise transforms) q and k; a model uses at most one such
            scheme.
        with_ape: The paper's models keep the learned absolute table, so the scheme's timm
            model defaults to ``pos_scheme=["ape", name]``.
    """

    options: type
    relative: bool
    rotary: bool = False
    with_ape: bool = False


def _declare(name: str, scheme: ViTScheme) -> None:
    register_integration(
        name,
        "timm",
        scheme,
        usage=f"timm: pos_scheme={name!r} (multipos.vision), "
        f"model vit_<size>_patch16_multipos_{name}_224",
    )


_declare("irpe", ViTScheme(IRPEConfig, relative=True, with_ape=True))
_declare("peg", ViTScheme(PEGConfig, relative=True))
_declare("lff", ViTScheme(LFFConfig, relative=False))
_declare("rope_axial_2d", ViTScheme(RopeAxialConfig, relative=True, rotary=True))
_declare("rope_mixed", ViTScheme(RopeMixedConfig, relative=True, rotary=True))
_declare("gta", ViTScheme(GTAConfig, relative=True, rotary=True))
