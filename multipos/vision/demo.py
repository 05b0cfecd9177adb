"""Vision section of ``multipos demo``: every scheme in a tiny timm ViT, retrofit identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from multipos._png import colorize, write_png
from multipos.bias import irpe_buckets
from multipos.positions import build_grid_positions
from multipos.vision.timm_models import apply_scheme

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
    "rope_axial",
    "rope_mixed",
]


def run_demo(out: Path) -> None:
    """Print what each scheme does in a tiny ViT and write the iRPE bucket map."""
    torch.manual_seed(0)
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
        print(
            f"  {name:<12} 48x80 input -> logits {tuple(logits.shape)}, "
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
    grid = build_grid_positions((14, 14))
    ids = irpe_buckets(grid.patches, method="product")[0]
    centre = 7 * 14 + 7
    path = write_png(
        out / "irpe_product_buckets.png", colorize(ids[centre].view(14, 14).float()), 16
    )
    print(f"  iRPE product buckets seen from the centre of a 14x14 grid: {path}")
