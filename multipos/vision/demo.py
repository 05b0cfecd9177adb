"""Vision section of ``multipos demo``: every scheme in a tiny timm ViT, retrofit identity.

The iRPE bucket picture is drawn by the core demo (:func:`multipos.plot.irpe_buckets_figure`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch

from multipos.vision.retrofit import apply_scheme

TINY: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 48,
    "depth": 3,
    "num_heads": 3,
}
SCHEMES: list[str | list[str]] = [
    "ape",
    ["ape", "irpe"],
    "peg",
    "lff",
    "rope_axial_2d",
    "rope_mixed",
]


def run_demo(out: Path) -> None:
    """Print what each scheme does in a tiny ViT; write the numbers as JSON.

    Writes ``out / "vision" / "vision_demo.json"``.
    """
    torch.manual_seed(0)
    summary: dict[str, Any] = {"schemes": {}}
    x = torch.randn(2, 3, 48, 80)  # non-square: a 6 x 10 patch grid
    for scheme in SCHEMES:
        model = timm.create_model(
            "vit_tiny_patch16_multipos_224",
            pos_scheme=scheme,
            dynamic_img_size=True,
            num_classes=10,
            **TINY,
        ).eval()
        extra = sum(
            p.numel()
            for n, p in model.named_parameters()
            if any(s in n for s in ("irpe", "peg", "lff", "rope", "pos_embed"))
        )
        with torch.no_grad():
            logits = model(x)
        name = "+".join([scheme] if isinstance(scheme, str) else scheme)
        summary["schemes"][name] = {"logits_shape": list(logits.shape), "parameters": extra}
        print(
            f"  {name:<14} 48x80 input -> logits {tuple(logits.shape)}, "
            f"{extra:>6} position parameters"
        )
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=10, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = plain(x)
        apply_scheme(plain, ["irpe", "peg", "lff"], irpe={"on": "qkv"})  # type: ignore[arg-type]
        after = plain(x)
    change = (after - before).abs().max().item()
    print(
        "  retrofit iRPE(q,k,v) + PEG + LFF onto an existing ViT: "
        f"max |output change| = {change:.1e} (new parameters start at 0)"
    )
    summary["retrofit_output_change"] = change
    target = out / "vision"
    target.mkdir(parents=True, exist_ok=True)
    (target / "vision_demo.json").write_text(json.dumps(summary, indent=2))
