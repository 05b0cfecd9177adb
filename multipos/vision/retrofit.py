"""Retrofitting position schemes onto an existing (possibly pretrained) timm ViT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from timm.models.vision_transformer import VisionTransformer

from multipos.vision.config import VisionSchemes
from multipos.vision.vit import MultiposVisionMixin, MultiposVisionTransformer

__all__ = ["apply_scheme"]

_MIXIN_CLASSES: dict[type, type] = {}


def _new_retrofitted(base: type) -> Any:
    """An empty instance of the retrofit class of ``base`` (unpickling fills its state)."""
    cls = _retrofit_class(base)
    return object.__new__(cls)


def _reduce_retrofitted(self: Any, protocol: int) -> tuple[Any, ...]:
    # The class is made at run time, so pickle cannot find it by name: rebuild it from the
    # importable class it extends.
    return _new_retrofitted, (type(self).retrofit_base,), self.__dict__.copy()


def _retrofit_class(cls: type) -> type:
    if issubclass(cls, MultiposVisionMixin):
        return cls
    if cls is VisionTransformer:
        return MultiposVisionTransformer
    if cls not in _MIXIN_CLASSES:
        # Subclasses of VisionTransformer get their own class: MultiposVisionMixin and ``cls``.
        _MIXIN_CLASSES[cls] = type(
            f"MultiposRetrofit{cls.__name__}",
            (MultiposVisionMixin, cls),
            {
                "retrofit_base": cls,
                "__reduce_ex__": _reduce_retrofitted,
                "__module__": __name__,
            },
        )
    return _MIXIN_CLASSES[cls]


def apply_scheme(
    model: VisionTransformer,
    scheme: str | Sequence[str],
    *,
    ape: Literal["keep", "drop"] = "keep",
    generator: torch.Generator | None = None,
    **cfg: Any,
) -> VisionTransformer:
    """Add position schemes to an existing timm ``VisionTransformer`` in place.

    Works on a model with loaded weights: every existing parameter keeps its name and value.
    New parameters of iRPE (tables), PEG (convolution) and LFF (last MLP layer) start at zero
    unless ``init`` is given, so the retrofitted model's outputs equal the original's until it
    is trained. RoPE and GTA change the outputs from the start (they transform q and k).

    Args:
        model: A timm ``VisionTransformer`` (or subclass) built with timm's ``Block`` and
            ``Attention``.
        scheme: A registry name declared for timm (``"irpe"``, ``"peg"``, ``"lff"``,
            ``"rope_axial_2d"``, ``"rope_mixed"``, ``"gta"``) or a list of them.
        ape: Keep (default) or drop the model's learned absolute position table.
        generator: Random generator for initialising RoPE-Mixed frequencies.
        **cfg: Options per scheme, e.g. ``irpe={"on": "qkv"}, peg={"blocks": [0]}``.

    Returns:
        The same model object, now a :class:`~multipos.vision.MultiposVisionTransformer` (a
        plain timm ``VisionTransformer``) or, for a subclass of it, an instance of both that
        subclass and :class:`~multipos.vision.vit.MultiposVisionMixin`, the type every model
        with schemes shares. Either saves and loads with ``torch.save`` / ``torch.load``.

    Raises:
        TypeError: If ``model`` is not a timm ``VisionTransformer`` with timm blocks.
        ValueError: If the model already carries schemes, or the options are invalid.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"apply_scheme needs a timm VisionTransformer, got {type(model).__name__}")
    if isinstance(model, MultiposVisionMixin) and model.pos_schemes.names:
        raise ValueError(f"model already uses {model.pos_schemes.names}; build a fresh model")
    if ape not in ("keep", "drop"):
        raise ValueError(f"ape must be 'keep' or 'drop', got {ape!r}")
    names = [scheme] if isinstance(scheme, str) else list(scheme)
    if "ape" in names:
        raise ValueError("'ape' cannot be retrofitted; the model's own table is kept (ape='keep')")
    schemes = VisionSchemes.parse(names, cfg, retrofit=True)
    # Everything that can fail happens before the model is changed.
    new = MultiposVisionMixin._build_schemes(model, schemes, generator)  # type: ignore[arg-type]
    if ape == "drop":
        model.pos_embed = None
    model.__class__ = _retrofit_class(type(model))
    assert isinstance(model, MultiposVisionMixin)
    model._install_schemes(new)
    return model
