"""Which position schemes a vision transformer uses, and their options, validated once.

The valid names are the registry's: every scheme declared for timm in
:mod:`multipos.vision.schemes`, plus timm's own ``"ape"`` (learned absolute table) and
``"none"``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from multipos.registry import get_scheme, list_schemes
from multipos.vision.schemes import (
    GTAConfig,
    IRPEConfig,
    LFFConfig,
    PEGConfig,
    RopeAxialConfig,
    RopeMixedConfig,
    ViTScheme,
)

__all__ = [
    "TIMM_OWN",
    "GTAConfig",
    "IRPEConfig",
    "LFFConfig",
    "PEGConfig",
    "RopeAxialConfig",
    "RopeMixedConfig",
    "VisionSchemes",
    "vit_scheme",
    "vit_scheme_names",
]

# What timm's VisionTransformer provides itself: its learned absolute table, or nothing.
TIMM_OWN: tuple[str, ...] = ("ape", "none")


def vit_scheme_names() -> tuple[str, ...]:
    """Every valid ``pos_scheme`` name: ``"ape"``, ``"none"`` and the registered schemes
    with a ``"timm"`` integration (``multipos.list_schemes(integration="timm")``)."""
    return (*TIMM_OWN, *list_schemes(integration="timm"))


def vit_scheme(name: str) -> ViTScheme:
    """The :class:`~multipos.vision.schemes.ViTScheme` declared for registry name ``name``.

    Raises:
        ValueError: If ``name`` is not registered or has no timm integration.
    """
    integration = get_scheme(name).integrations.get("timm")
    if integration is None:
        raise ValueError(f"scheme {name!r} cannot go in a ViT; valid: {list(vit_scheme_names())}")
    meta: ViTScheme = integration.metadata
    return meta


def _check_names(names: list[str], valid: tuple[str, ...], what: str) -> None:
    unknown = [n for n in names if n not in valid]
    if not unknown:
        return
    hints = [
        f"{close[0]!r} for {n!r}"
        for n in unknown
        if (close := difflib.get_close_matches(n, valid, n=1, cutoff=0.6))
    ]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ValueError(f"unknown {what} {unknown}{hint}; valid schemes: {list(valid)}")


def _build(name: str, options: Any, retrofit: bool) -> Any:
    cls = vit_scheme(name).options
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
        names: The schemes in use (registry names, plus ``"ape"``), empty for ``"none"``.
        options: Options of each registered scheme in use, by name (e.g.
            ``options["irpe"]`` is an :class:`IRPEConfig`).
    """

    names: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

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
            ValueError: On an empty list (``"none"`` says it explicitly), unknown or
                conflicting scheme names (an unknown name close to a
                valid one, such as ``"rope_axial"`` for ``"rope_axial_2d"``, is named in the
                message), or options for a scheme that is not in use.
            TypeError: On unknown option names (the message lists the valid ones).
        """
        names = [pos_scheme] if isinstance(pos_scheme, str) else list(pos_scheme)
        if not names:
            raise ValueError(
                "pos_scheme is empty; pass 'none' for a ViT without position information"
            )
        _check_names(names, vit_scheme_names(), "pos_scheme")
        if len(set(names)) != len(names):
            raise ValueError(f"pos_scheme lists a scheme twice: {names}")
        if "none" in names:
            if len(names) > 1:
                raise ValueError(f"'none' cannot be combined with other schemes: {names}")
            names = []
        registered = [n for n in names if n not in TIMM_OWN]
        rotary = [n for n in registered if vit_scheme(n).rotary]
        if len(rotary) > 1:
            raise ValueError(f"choose one of the rotary schemes {rotary}")
        cfg = dict(pos_cfg or {})
        stray = sorted(set(cfg) - set(names))
        if stray:
            _check_names(stray, vit_scheme_names(), "pos_cfg key")
            raise ValueError(
                f"pos_cfg has options for {stray}, which pos_scheme {names} does not use"
            )
        if "ape" in cfg:
            raise ValueError("'ape' has no options")
        built = {n: _build(n, cfg.get(n), retrofit) for n in registered}
        return cls(names=tuple(names), options=built)

    def uses(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> Any:
        """Options of scheme ``name`` if it is in use, else ``None``."""
        return self.options.get(name)

    @property
    def relative(self) -> bool:
        """Whether a scheme needs every token's grid position inside the model."""
        return any(vit_scheme(n).relative for n in self.options)
