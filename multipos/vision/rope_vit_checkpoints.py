"""Load RoPE-ViT checkpoints (naver-ai/rope-vit, as published by timm's ``Eva`` models).

timm ships the official RoPE-ViT weights as ``Eva`` models,
``vit_{small,base,large}_patch16_rope{,_mixed}{,_ape}_224.naver_in1k``. Their blocks are
timm's ViT blocks under other names (``gamma_1`` for ``ls1.gamma``), RoPE-Mixed keeps every
layer's frequencies in one ``rope.freqs`` of shape ``(2, depth, H, D / 2)``, and the rotary
tables put the column (``x``) on the first half of the channel pairs, which is the order
:class:`~multipos.vision.VisionPositionContext` feeds the rotary schemes. Conversion is
therefore a renaming and a split of ``rope.freqs`` per block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["convert_rope_vit_checkpoint"]

_RENAMES = ((".gamma_1", ".ls1.gamma"), (".gamma_2", ".ls2.gamma"))


def convert_rope_vit_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename a timm ``Eva`` RoPE-ViT state dict to a :class:`MultiposVisionTransformer`'s.

    Accepts the state dict or a training checkpoint wrapping it under ``"model"``. A state
    dict that is already in this library's names passes through unchanged. The result loads
    into the ``vit_*_patch16_multipos_ropevit_*_224`` model of the same size and variant
    (which is what ``pretrained=True`` on those names does).

    Returns:
        A new state dict.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping (e.g. a file path: ``torch.load`` it
            first).
        ValueError: If it holds neither RoPE-ViT (``Eva``) nor multipos ViT keys, or
            ``rope.freqs`` is not ``(2, depth, H, D / 2)``.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            "checkpoint must be a state dict (a mapping of names to tensors), got "
            f"{type(checkpoint).__name__}; load a file with torch.load first"
        )
    state = checkpoint.get("model", checkpoint)
    if not any(k.startswith("blocks.0.") for k in state):
        raise ValueError(
            "not a ViT state dict: no 'blocks.0.*' keys; expected a timm Eva RoPE-ViT "
            "checkpoint (e.g. vit_small_patch16_rope_224.naver_in1k)"
        )
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "rope.freqs":
            if value.dim() != 4 or value.shape[0] != 2:
                raise ValueError(f"rope.freqs must be (2, depth, H, D/2), got {tuple(value.shape)}")
            for i in range(value.shape[1]):
                # (2, depth, H, D/2) -> per block (2, H, D/2); index 0 multiplies x (column).
                out[f"blocks.{i}.attn.rope_mixed.freqs"] = value[:, i].clone()
            continue
        if key.startswith("rope."):
            continue  # fixed axial tables are rebuilt from the configuration
        for old, new in _RENAMES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out
