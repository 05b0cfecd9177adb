"""Converting official DeiT+iRPE checkpoints."""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import torch  # noqa: E402

import multipos.vision  # noqa: E402, F401
from multipos.vision.irpe_checkpoints import convert_irpe_checkpoint  # noqa: E402

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _official_names(state: dict, cross: bool) -> dict:
    """Write our state dict with the official key names (the inverse of the converter)."""
    out = {}
    for key, value in state.items():
        if ".irpe.table_" not in key:
            out[key] = value
            continue
        prefix, side = key.split(".irpe.table_")
        kind = "weight" if value.dim() == 3 else "bias"
        if not cross:
            out[f"{prefix}.rpe_{side}.lookup_table_{kind}"] = value
            continue
        axis = 1 if side == "v" else -1
        rows, cols = value.chunk(2, dim=axis)
        out[f"{prefix}.rpe_{side}.rp_rows.lookup_table_{kind}"] = rows
        out[f"{prefix}.rpe_{side}.rp_cols.lookup_table_{kind}"] = cols
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        {"method": "product", "mode": "contextual", "on": "qkv"},
        {"method": "cross", "mode": "contextual", "on": "qkv"},
        {"method": "cross", "mode": "bias", "on": "qk", "shared_heads": False},
    ],
)
def test_official_names_load_back(cfg) -> None:
    model = timm.create_model(
        "vit_tiny_patch16_multipos_irpe_224", pos_cfg={"irpe": cfg}, num_classes=3, **TINY
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "irpe" in name:
                p.normal_()
    official = {"model": _official_names(model.state_dict(), cfg["method"] == "cross")}
    assert not any(".irpe." in k for k in official["model"])
    fresh = timm.create_model(
        "vit_tiny_patch16_multipos_irpe_224", pos_cfg={"irpe": cfg}, num_classes=3, **TINY
    )
    fresh.load_state_dict(convert_irpe_checkpoint(official))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_half_a_cross_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="rp_rows/rp_cols"):
        convert_irpe_checkpoint({"blocks.0.attn.rpe_k.rp_rows.lookup_table_weight": torch.zeros(1)})
