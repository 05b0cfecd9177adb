"""timm registration: ``vit_{tiny,small,base}_patch16_multipos_224`` and one model per scheme.

``import multipos.vision`` registers, for every registered scheme with a timm integration,
``vit_<size>_patch16_multipos_<name>_224`` (default ``pos_scheme=[name]``, or ``["ape", name]``
where the paper keeps the absolute table), plus ``vit_<size>_patch16_multipos_224``
(``pos_scheme="ape"``), so that::

    timm.create_model("vit_small_patch16_multipos_224", pos_scheme=["ape", "irpe"],
                      pos_cfg={"irpe": {"on": "qkv"}})

builds a :class:`~multipos.vision.vit.MultiposVisionTransformer`. The ``multipos`` infix keeps
the names apart from timm's own (timm has ``vit_small_patch16_rope_mixed_224``, an Eva model).

The official RoPE-ViT weights load through
``vit_{small,base,large}_patch16_multipos_ropevit_{axial,mixed}{,_ape}_224.naver_in1k``: their
pretrained cfg points at timm's Eva checkpoint and their filter converts it
(:func:`~multipos.vision.convert_rope_vit_checkpoint`), so ``pretrained=True`` or
``pretrained_cfg_overlay={"file": ...}`` gives the official model, to which ``pos_cfg`` can add
a rotary scaling and ``pos_scheme`` a PEG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _cfg, checkpoint_filter_fn
from torch import Tensor

from multipos.registry import list_schemes
from multipos.vision.config import vit_scheme
from multipos.vision.rope_vit_checkpoints import convert_rope_vit_checkpoint
from multipos.vision.vit import MultiposVisionTransformer

__all__: list[str] = []


def _filter_checkpoint(
    state_dict: dict[str, Tensor], model: VisionTransformer
) -> dict[str, Tensor]:
    # A scheme without the absolute table warm-starts from everything else.
    if model.pos_embed is None:
        state_dict = {k: v for k, v in state_dict.items() if k != "pos_embed"}
    result: dict[str, Tensor] = checkpoint_filter_fn(state_dict, model)
    return result


# Submodules a checkpoint may lack: position schemes added on top of pretrained weights.
_NEW_POSITION_MODULES = (".irpe.", ".peg.", "lff.")


def _filter_rope_vit(state_dict: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    converted = convert_rope_vit_checkpoint(state_dict)
    missing = sorted(
        k
        for k in model.state_dict()
        if k not in converted and not any(m in k for m in _NEW_POSITION_MODULES)
    )
    if missing:
        # Loading is non-strict so that PEG/iRPE/LFF can be added; everything else must load.
        raise ValueError(f"RoPE-ViT checkpoint lacks {missing[:5]} ({len(missing)} keys)")
    return _filter_checkpoint(converted, model)


def _create(
    variant: str,
    pretrained: bool,
    filter_fn: Callable[..., dict[str, Tensor]] = _filter_checkpoint,
    **kwargs: Any,
) -> MultiposVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    model: MultiposVisionTransformer = build_model_with_cfg(
        MultiposVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        # New position parameters are absent from the timm checkpoint and start fresh.
        pretrained_strict=False,
        feature_cfg={"out_indices": out_indices, "feature_cls": "getter"},
        **kwargs,
    )
    return model


_SIZES = {
    "tiny": ({"embed_dim": 192, "depth": 12, "num_heads": 3}, "augreg_in21k_ft_in1k"),
    "small": ({"embed_dim": 384, "depth": 12, "num_heads": 6}, "augreg_in21k_ft_in1k"),
    "base": ({"embed_dim": 768, "depth": 12, "num_heads": 12}, "augreg2_in21k_ft_in1k"),
}


def _model_defaults() -> dict[str, list[str]]:
    """Model-name infix -> default ``pos_scheme``, one per scheme with a timm integration."""
    out = {"multipos": ["ape"]}
    for name in list_schemes(integration="timm"):
        out[f"multipos_{name}"] = ["ape", name] if vit_scheme(name).with_ape else [name]
    return out


# Read once at import: schemes declared for timm later get no model name of their own (any
# vit_*_patch16_multipos_224 takes them as pos_scheme).
_ALIASES = _model_defaults()

# The official RoPE-ViT weights (Heo et al., 2024), as timm publishes them for its Eva models:
# model-name infix -> (timm's name infix, pos_scheme, extra model arguments).
_ROPE_VIT: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "ropevit_axial": ("rope", ["rope_axial_2d"], {}),
    "ropevit_mixed": ("rope_mixed", ["rope_mixed"], {}),
    "ropevit_axial_ape": ("rope_ape", ["ape", "rope_axial_2d"], {"no_embed_class": True}),
    "ropevit_mixed_ape": ("rope_mixed_ape", ["ape", "rope_mixed"], {"no_embed_class": True}),
}
_ROPE_VIT_SIZES = {
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}
# As the official models: layer scale 1e-5, class-token pooling.
_ROPE_VIT_ARGS = {"init_values": 1e-5, "global_pool": "token", "class_token": True}

default_cfgs = generate_default_cfgs(
    {
        **{
            f"vit_{size}_patch16_{alias}_224.{tag}": _cfg(
                hf_hub_id=f"timm/vit_{size}_patch16_224.{tag}",
                # Warm-starts from the plain ViT: position parameters are new.
                notes=("position parameters start fresh; other weights from the timm ViT",),
            )
            for size, (_, tag) in _SIZES.items()
            for alias in _ALIASES
        },
        **{
            f"vit_{size}_patch16_multipos_{alias}_224.naver_in1k": _cfg(
                hf_hub_id=f"timm/vit_{size}_patch16_{theirs}_224.naver_in1k",
                mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225),
                license="apache-2.0",
                notes=("official RoPE-ViT weights (naver-ai/rope-vit) converted from timm's Eva",),
            )
            for size in _ROPE_VIT_SIZES
            for alias, (theirs, _, _) in _ROPE_VIT.items()
        },
    }
)


def _make_entry(size: str, alias: str) -> Callable[..., MultiposVisionTransformer]:
    arch, _ = _SIZES[size]
    name = f"vit_{size}_patch16_{alias}_224"

    def entry(pretrained: bool = False, **kwargs: Any) -> MultiposVisionTransformer:
        kwargs.setdefault("pos_scheme", list(_ALIASES[alias]))
        return _create(name, pretrained, **{"patch_size": 16, **arch, **kwargs})

    return _named(
        entry,
        name,
        f"ViT-{size[0].upper()}/16 at 224 with pos_scheme={_ALIASES[alias]} by default; any "
        "pos_scheme/pos_cfg can be passed.",
    )


def _named(entry: Callable[..., Any], name: str, doc: str) -> Callable[..., Any]:
    """Give a model entry point the name timm registers it under, and its docstring."""
    entry.__name__ = name
    entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = doc
    return entry


def _register_all(
    make: Callable[[str, str], Callable[..., Any]], sizes: Iterable[str], aliases: Iterable[str]
) -> list[str]:
    """Register ``make(size, alias)`` with timm for every pair; return the model names."""
    names = []
    for size in sizes:
        for alias in aliases:
            fn = make(size, alias)
            globals()[fn.__name__] = register_model(fn)
            names.append(fn.__name__)
    return names


__all__ += _register_all(_make_entry, _SIZES, _ALIASES)


def _make_rope_vit_entry(size: str, alias: str) -> Callable[..., MultiposVisionTransformer]:
    _, scheme, extra = _ROPE_VIT[alias]
    name = f"vit_{size}_patch16_multipos_{alias}_224"

    def entry(pretrained: bool = False, **kwargs: Any) -> MultiposVisionTransformer:
        # The registered defaults are the paper's (axial base 100, mixed base 10).
        kwargs.setdefault("pos_scheme", list(scheme))
        args = {"patch_size": 16, **_ROPE_VIT_SIZES[size], **_ROPE_VIT_ARGS, **extra, **kwargs}
        return _create(name, pretrained, _filter_rope_vit, **args)

    return _named(
        entry,
        name,
        f"RoPE-ViT-{size[0].upper()}/16 ({alias.removeprefix('ropevit_')}) with the official "
        "weights (naver-ai/rope-vit, via timm's Eva checkpoint) on pretrained=True; pos_scheme "
        "and pos_cfg may add schemes (PEG) or a rotary scaling (YaRN, NTK).",
    )


__all__ += _register_all(_make_rope_vit_entry, _ROPE_VIT_SIZES, _ROPE_VIT)
