"""2-D GTA as a timm scheme (Miyato et al., 2024, arXiv:2310.10375): ``pos_scheme="gta"``."""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import torch  # noqa: E402

import multipos  # noqa: E402
import multipos.vision as mv  # noqa: E402

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _pair(**kwargs):
    """A GTA model without the value transform and an axial-RoPE model with its weights."""
    gta = timm.create_model(
        "vit_tiny_patch16_multipos_224",
        pos_scheme="gta",
        pos_cfg={"gta": {"transform_values": False}},
        **TINY,
        **kwargs,
    ).eval()
    rope = timm.create_model(
        "vit_tiny_patch16_multipos_224", pos_scheme="rope_axial_2d", **TINY, **kwargs
    ).eval()
    rope.load_state_dict(gta.state_dict())
    return gta, rope


@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_value_transform_off_equals_axial_rope_in_the_vit(size) -> None:
    gta, rope = _pair(dynamic_img_size=True, reg_tokens=2)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.equal(gta(x), rope(x))
        assert torch.equal(gta.forward_features(x), rope.forward_features(x))


def test_value_transform_on_is_gta_and_changes_the_output() -> None:
    gta, rope = _pair()
    full = timm.create_model("vit_tiny_patch16_multipos_gta_224", **TINY).eval()
    assert full.pos_schemes.names == ("gta",) and full.pos_embed is None
    full.load_state_dict(gta.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(full(x), rope(x), atol=1e-4)


def test_prefix_tokens_get_the_identity_and_patches_rope_frequencies() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_multipos_gta_224", reg_tokens=1, **TINY
    )  # class token + 1 register
    pos = model.position_context((4, 4), torch.device("cpu"))
    assert pos.gta is not None and pos.gta_values
    dense = pos.gta.dense()[0]  # (L, D, D)
    eye = torch.eye(16)
    assert torch.equal(dense[0], eye) and torch.equal(dense[1], eye)
    assert not torch.allclose(dense[5], eye)
    # Token 2 + 4 * row + col sits at (x, y) = (col, row): its first pair turns by col.
    row, col = 2, 3
    block = dense[2 + 4 * row + col, :2, :2]
    angle = torch.tensor(float(col))
    torch.testing.assert_close(
        block, torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()]).view(2, 2)
    )


def test_retrofit_gta_equals_retrofit_rope_without_the_value_transform() -> None:
    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    other = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    other.load_state_dict(base.state_dict())
    mv.apply_scheme(base, "gta", gta={"transform_values": False})
    mv.apply_scheme(other, "rope_axial_2d")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(base(x), other(x))


def test_gta_options_and_errors() -> None:
    assert mv.GTAConfig().base == multipos.scheme_defaults("gta")["base"] == 100.0
    with pytest.raises(TypeError, match="transform_values must be a bool"):
        mv.GTAConfig(transform_values="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not split into 2 axes"):
        timm.create_model(
            "vit_tiny_patch16_multipos_gta_224", **{**TINY, "embed_dim": 30, "num_heads": 3}
        )
    with pytest.raises(ValueError, match="choose one"):
        timm.create_model("vit_tiny_patch16_multipos_224", pos_scheme=["gta", "rope_mixed"], **TINY)


def test_multipos_list_shows_gta(capsys) -> None:
    from multipos.cli import main

    main(["list"])
    out = capsys.readouterr().out
    assert "gta" in out and "vit_<size>_patch16_multipos_gta_224" in out
