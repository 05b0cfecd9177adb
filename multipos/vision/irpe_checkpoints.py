"""Load the official DeiT+iRPE checkpoints (microsoft/Cream ``iRPE/DeiT-with-iRPE``).

Those checkpoints are DeiT (timm-style) state dicts whose attention layers carry
``rpe_q``/``rpe_k``/``rpe_v`` lookup tables. Our tables have the same shapes and bucket ids, so
conversion is a renaming; the cross method's row and column tables are concatenated along the
bucket axis (rows first), which is how :func:`multipos.irpe_buckets` numbers them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["convert_irpe_checkpoint"]

_KEY = re.compile(
    r"^(?P<prefix>.*\.attn)\.rpe_(?P<side>[qkv])\.(?P<cross>rp_rows\.|rp_cols\.)?"
    r"lookup_table_(?P<kind>bias|weight)$"
)


def convert_irpe_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename an official DeiT+iRPE state dict to this library's names.

    Accepts the raw state dict or the training checkpoint that wraps it under ``"model"``.
    Load the result into a model built with the matching ``pos_cfg`` (e.g.
    ``timm.create_model("vit_small_patch16_multipos_irpe_224", pos_cfg={"irpe": {"on": "k"}})``),
    e.g. through ``pretrained_cfg_overlay=dict(state_dict=...)`` or ``load_state_dict``.

    Returns:
        A new state dict; every non-iRPE entry is passed through unchanged.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping (e.g. a file path).
        ValueError: If it holds no iRPE table, or a cross-method table has only its row or
            only its column half.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            "checkpoint must be a state dict (a mapping of names to tensors), got "
            f"{type(checkpoint).__name__}; load a file with torch.load first"
        )
    state = checkpoint.get("model", checkpoint)
    if not any(_KEY.match(key) for key in state):
        raise ValueError(
            "no iRPE tables (keys like 'blocks.0.attn.rpe_k.lookup_table_weight') in the "
            "checkpoint; is it an official DeiT+iRPE checkpoint?"
        )
    out: dict[str, Tensor] = {}
    halves: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match is None:
            out[key] = value
            continue
        target = f"{match['prefix']}.irpe.table_{match['side']}"
        if match["cross"]:
            halves.setdefault(target, {})[match["cross"].rstrip(".")] = value
        else:
            out[target] = value
    for target, parts in halves.items():
        if set(parts) != {"rp_rows", "rp_cols"}:
            raise ValueError(f"cross-method table {target} lacks one of rp_rows/rp_cols")
        # Tables are (H, K) for bias, (H, D, K) on q/k and (H, K, D) on v: K is axis -1 except v.
        axis = 1 if target.endswith("table_v") else -1
        out[target] = torch.cat((parts["rp_rows"], parts["rp_cols"]), dim=axis)
    return out
