"""Which position schemes a vision transformer uses, and their options, validated once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from multipos.bias import IRPE_METHODS, IRPE_MODES, IRPEMethod, IRPEMode
from multipos.frequencies import FrequencyScaling
from multipos.vision.peg import PEG_INITS, PEGInit

__all__ = [
    "IRPEConfig",
    "LFFConfig",
    "PEGConfig",
    "RopeAxialConfig",
    "RopeMixedConfig",
    "SchemeName",
    "VisionSchemes",
]

SchemeName = Literal["ape", "irpe", "peg", "lff", "rope_axial", "rope_mixed", "none"]
SCHEME_NAMES: tuple[str, ...] = get_args(SchemeName)
# PEG and LFF offer the same two initialisations of their new parameters.
InitName = PEGInit


@dataclass(frozen=True)
class IRPEConfig:
    """iRPE options (Wu et al., 2021): see :class:`multipos.IRPE`."""

    method: IRPEMethod = "product"
    mode: IRPEMode = "contextual"
    on: str = "k"
    ratio: float = 1.9
    shared_heads: bool = True

    def __post_init__(self) -> None:
        if self.method not in IRPE_METHODS:
            raise ValueError(f"irpe method must be one of {IRPE_METHODS}, got {self.method!r}")
        if self.mode not in IRPE_MODES:
            raise ValueError(f"irpe mode must be one of {IRPE_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class PEGConfig:
    """PEG options (Chu et al., CPVT): after which blocks, kernel size, initialisation."""

    blocks: tuple[int, ...] = (0,)
    kernel_size: int = 3
    init: InitName = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))


@dataclass(frozen=True)
class LFFConfig:
    """Learnable Fourier feature options (Li et al., 2021).

    ``coords="unit"`` feeds patch centres normalised to (0, 1) per axis (a larger input
    interpolates); ``"reference"`` divides by the model's default grid instead, so a larger
    input extends the coordinates (extrapolates). ``gamma`` suits unit coordinates (the paper's
    ``W_r ~ N(0, gamma^-2)``). ``init="zero"`` zeroes the last MLP layer so the encoding starts
    at zero.
    """

    num_features: int = 128
    hidden_dim: int = 256
    gamma: float = 0.1
    coords: Literal["unit", "reference"] = "unit"
    init: InitName = "default"

    def __post_init__(self) -> None:
        if self.init not in PEG_INITS:
            raise ValueError(f"lff init must be one of {PEG_INITS}, got {self.init!r}")
        if self.coords not in ("unit", "reference"):
            raise ValueError(f"lff coords must be 'unit' or 'reference', got {self.coords!r}")


@dataclass(frozen=True)
class RopeAxialConfig:
    """Axial 2-D RoPE options: base and an optional resolution-extrapolation scaling.

    ``scaling`` is a :class:`multipos.FrequencyScaling` or a mapping, e.g.
    ``{"kind": "yarn", "factor": 2.0, "original_length": 14}`` (lengths in patches per axis).
    """

    base: float = 100.0
    scaling: FrequencyScaling | Mapping[str, Any] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scaling", FrequencyScaling.coerce(self.scaling))


@dataclass(frozen=True)
class RopeMixedConfig:
    """RoPE-Mixed options (Heo et al., 2024): frequency base of the initialisation."""

    base: float = 10.0


_CONFIGS: dict[str, type] = {
    "irpe": IRPEConfig,
    "peg": PEGConfig,
    "lff": LFFConfig,
    "rope_axial": RopeAxialConfig,
    "rope_mixed": RopeMixedConfig,
}


def _build(name: str, options: Any, retrofit: bool) -> Any:
    cls = _CONFIGS[name]
    if isinstance(options, cls):
        return options
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"pos_cfg[{name!r}] must be a mapping, got {type(options).__name__}")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"unknown {name} option(s) {unknown}; valid options: {sorted(valid)}")
    cfg = cls(**options)
    # New parameters of a retrofitted model start at zero, so its outputs are unchanged.
    if retrofit and "init" in valid and "init" not in options:
        cfg = replace(cfg, init="zero")
    return cfg


@dataclass(frozen=True)
class VisionSchemes:
    """Validated ``pos_scheme`` + ``pos_cfg`` of a vision transformer.

    Attributes:
        names: The schemes in use (``"ape"``, ``"irpe"``, ``"peg"``, ``"lff"``,
            ``"rope_axial"``, ``"rope_mixed"``), empty for ``"none"``.
        irpe, peg, lff, rope_axial, rope_mixed: Options of each scheme in use, else ``None``.
    """

    names: tuple[str, ...] = ()
    irpe: IRPEConfig | None = None
    peg: PEGConfig | None = None
    lff: LFFConfig | None = None
    rope_axial: RopeAxialConfig | None = None
    rope_mixed: RopeMixedConfig | None = None

    @classmethod
    def parse(
        cls,
        pos_scheme: str | Sequence[str],
        pos_cfg: Mapping[str, Any] | None = None,
        *,
        retrofit: bool = False,
    ) -> VisionSchemes:
        """Validate a scheme name or list and per-scheme options.

        Raises:
            ValueError: On unknown or conflicting scheme names, or options for a scheme that is
                not in use.
            TypeError: On unknown option names (the message lists the valid ones).
        """
        names = [pos_scheme] if isinstance(pos_scheme, str) else list(pos_scheme)
        unknown = [n for n in names if n not in SCHEME_NAMES]
        if unknown:
            raise ValueError(f"unknown pos_scheme {unknown}; valid schemes: {list(SCHEME_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"pos_scheme lists a scheme twice: {names}")
        if "none" in names:
            if len(names) > 1:
                raise ValueError(f"'none' cannot be combined with other schemes: {names}")
            names = []
        if "rope_axial" in names and "rope_mixed" in names:
            raise ValueError("choose one of 'rope_axial' and 'rope_mixed'")
        cfg = dict(pos_cfg or {})
        stray = sorted(set(cfg) - set(names))
        if stray:
            raise ValueError(
                f"pos_cfg has options for {stray}, which pos_scheme {names} does not use"
            )
        if "ape" in cfg:
            raise ValueError("'ape' has no options")
        built = {n: _build(n, cfg.get(n), retrofit) for n in names if n in _CONFIGS}
        return cls(names=tuple(names), **built)

    def uses(self, name: str) -> bool:
        return name in self.names

    @property
    def relative(self) -> bool:
        """Whether a scheme needs every token's grid position inside attention."""
        return any(n in self.names for n in ("irpe", "rope_axial", "rope_mixed", "peg"))
