"""Official RoPE-ViT weights (timm's Eva ``naver_in1k`` models) load into multipos ViTs."""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import torch  # noqa: E402

import multipos.vision as mv  # noqa: E402

SMALL = {"depth": 2, "img_size": 64, "num_classes": 7}
VARIANTS = [
    ("rope", "ropevit_axial"),
    ("rope_ape", "ropevit_axial_ape"),
    ("rope_mixed", "ropevit_mixed"),
    ("rope_mixed_ape", "ropevit_mixed_ape"),
]


def _random_eva(theirs: str, path) -> torch.nn.Module:
    eva = timm.create_model(f"vit_small_patch16_{theirs}_224", **SMALL).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Every parameter moved (layer scale, biases, frequencies) so that a missed key shows.
        for p in eva.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    torch.save(eva.state_dict(), path)
    return eva


@pytest.mark.parametrize(("theirs", "ours"), VARIANTS, ids=[v[1] for v in VARIANTS])
def test_pretrained_file_gives_the_logits_of_timms_eva(theirs, ours, tmp_path) -> None:
    path = tmp_path / "eva.pth"
    eva = _random_eva(theirs, path)
    model = timm.create_model(
        f"vit_small_patch16_multipos_{ours}_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 7},
        **SMALL,
    ).eval()
    assert isinstance(model, mv.MultiposVisionTransformer)
    # Non-square input: the column/row order of the rotary sections matters here.
    x = torch.randn(2, 3, 64, 64)
    x2 = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), eva(x), rtol=1e-4, atol=1e-4)
        if "ape" not in ours:
            torch.testing.assert_close(
                model.set_input_size((48, 80)) or model(x2),
                eva.set_input_size((48, 80)) or eva(x2),
                rtol=1e-4,
                atol=1e-4,
            )


def test_scaling_and_peg_go_on_top_of_the_official_weights(tmp_path) -> None:
    path = tmp_path / "eva.pth"
    eva = _random_eva("rope", path)
    model = timm.create_model(
        "vit_small_patch16_multipos_ropevit_axial_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 7},
        pos_scheme=["rope_axial_2d", "peg"],
        pos_cfg={
            "rope_axial_2d": {"scaling": {"kind": "ntk", "factor": 1.0}},
            "peg": {"init": "zero"},
        },
        **SMALL,
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # Factor 1 and a zero PEG: still the official model.
        torch.testing.assert_close(model(x), eva(x), rtol=1e-4, atol=1e-4)


def test_converter_refuses_what_is_not_a_rope_vit_checkpoint() -> None:
    with pytest.raises(TypeError, match=r"torch\.load"):
        mv.convert_rope_vit_checkpoint("weights.pth")
    with pytest.raises(ValueError, match=r"blocks\.0"):
        mv.convert_rope_vit_checkpoint({"head.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"rope\.freqs"):
        mv.convert_rope_vit_checkpoint({"blocks.0.x": torch.zeros(1), "rope.freqs": torch.zeros(2)})


def test_registered_names_point_at_timms_naver_checkpoints() -> None:
    for size in ("small", "base", "large"):
        for theirs, ours in VARIANTS:
            name = f"vit_{size}_patch16_multipos_{ours}_224.naver_in1k"
            cfg = timm.models.get_pretrained_cfg(name)
            assert cfg.hf_hub_id == f"timm/vit_{size}_patch16_{theirs}_224.naver_in1k"
            assert f"vit_{size}_patch16_{theirs}_224.naver_in1k" in timm.list_pretrained()
