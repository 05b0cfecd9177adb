"""torch.fx: every registered model traces, and timm's FX feature extraction works on it."""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import torch  # noqa: E402
from timm.models import create_feature_extractor  # noqa: E402

import multipos.vision  # noqa: E402, F401  (registers the models)

SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
NAMES = sorted(timm.list_models("vit_*_patch16_multipos_*"))
IRPE_CFGS = [
    {"method": "product", "mode": "contextual", "on": "qkv"},
    {"method": "cross", "mode": "bias", "on": "qk", "shared_heads": False},
    {"method": "euclidean", "mode": "contextual", "on": "k"},
]


def test_every_size_and_scheme_is_covered() -> None:
    assert len(NAMES) >= 3 * 6 + 12


@pytest.mark.parametrize("name", NAMES)
def test_registered_model_traces_and_computes_the_same(name) -> None:
    model = timm.create_model(name, **SMALL).eval()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


@pytest.mark.parametrize("cfg", IRPE_CFGS, ids=lambda c: f"{c['method']}_{c['mode']}_{c['on']}")
def test_irpe_variants_trace(cfg) -> None:
    model = timm.create_model(
        "vit_tiny_patch16_multipos_224",
        pos_scheme=["ape", "irpe", "peg"],
        pos_cfg={"irpe": cfg},
        **SMALL,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02)  # non-zero iRPE tables, so the terms count
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


@pytest.mark.parametrize(
    "scheme", [["ape", "irpe"], "peg", "rope_mixed", ["lff", "rope_axial_2d"], ["gta", "peg"]]
)
def test_timm_fx_feature_extraction(scheme) -> None:
    model = timm.create_model("vit_tiny_patch16_multipos_224", pos_scheme=scheme, **SMALL).eval()
    extractor = create_feature_extractor(model, return_nodes={"blocks.1": "out", "norm": "final"})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = extractor(x)
        torch.testing.assert_close(got["final"], model.forward_features(x))
        _, inter = model.forward_intermediates(x, indices=[1], output_fmt="NLC")
    torch.testing.assert_close(got["out"][:, model.num_prefix_tokens :], inter[0])
