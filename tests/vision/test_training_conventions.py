"""Weight decay and PEG init as the official codes do them; retrofitted models pickle."""

from __future__ import annotations

import io
import math

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import torch  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import multipos.vision as mv  # noqa: E402

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


class _TaggedViT(VisionTransformer):
    """A user's own ViT subclass (importable, so its instances pickle by reference)."""

    tag = "mine"


def _model(scheme, **kwargs):
    return timm.create_model(
        "vit_tiny_patch16_multipos_224", pos_scheme=scheme, **{**TINY, **kwargs}
    )


def test_no_weight_decay_names_mixed_frequencies_and_peg_like_the_official_codes() -> None:
    model = _model(["rope_mixed", "peg", "lff"], pos_cfg={"peg": {"blocks": [0, 2]}})
    names = model.no_weight_decay()
    assert {"blocks.0.attn.rope_mixed.freqs", "blocks.2.attn.rope_mixed.freqs"} <= names
    assert {"blocks.0.peg.proj.weight", "blocks.0.peg.proj.bias", "blocks.2.peg.proj.bias"} <= names
    assert "cls_token" in names  # timm's own entries are kept
    assert not any(n.startswith("lff.") for n in names)  # LFF decays, as nothing says otherwise
    irpe = _model(["ape", "irpe"], pos_cfg={"irpe": {"on": "qkv"}})
    assert not any(".irpe." in n for n in irpe.no_weight_decay())  # official iRPE decays tables


def test_timms_optimizer_factory_keeps_them_out_of_decay() -> None:
    from timm.optim import create_optimizer_v2

    model = _model(["rope_mixed", "peg"])
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    params = dict(model.named_parameters())
    assert id(params["blocks.1.attn.rope_mixed.freqs"]) not in decayed
    assert id(params["blocks.0.peg.proj.weight"]) not in decayed
    assert id(params["blocks.0.attn.qkv.weight"]) in decayed


def test_peg_twins_init_is_the_default_and_draws_n_0_2_over_fan_out() -> None:
    g = torch.Generator().manual_seed(0)
    peg = mv.PositionalEncodingGenerator(256, generator=g)
    weight = peg.proj.weight
    # Depthwise 3x3: fan_out = 3 * 3 * C / C = 9.
    assert abs(weight.std().item() - math.sqrt(2 / 9)) < 0.02
    assert abs(weight.mean().item()) < 0.02
    assert torch.equal(peg.proj.bias, torch.zeros(256))
    default = mv.PositionalEncodingGenerator(256, init="default", generator=g).proj.weight
    assert default.abs().max() <= 1 / 3 + 1e-6  # PyTorch's bound 1 / sqrt(fan_in = 9)
    assert _model("peg").pos_schemes.get("peg").init == "twins"
    with pytest.raises(ValueError, match="peg init"):
        _model("peg", pos_cfg={"peg": {"init": "kaiming"}})
    with pytest.raises(ValueError, match="lff init"):
        _model("lff", pos_cfg={"lff": {"init": "twins"}})


def test_peg_init_follows_the_generator() -> None:
    a = mv.PositionalEncodingGenerator(8, generator=torch.Generator().manual_seed(3))
    b = mv.PositionalEncodingGenerator(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.proj.weight, b.proj.weight)


def _round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("rotary", ["rope_axial_2d", "gta"])
@pytest.mark.parametrize("base", [VisionTransformer, _TaggedViT], ids=["timm_vit", "subclass"])
def test_retrofitted_models_save_load_and_have_the_multipos_type(base, rotary) -> None:
    model = base(**TINY, num_classes=4).eval()
    mv.apply_scheme(model, ["irpe", "peg", rotary])
    assert isinstance(model, mv.MultiposVisionMixin) and isinstance(model, base)
    if base is VisionTransformer:
        assert type(model) is mv.MultiposVisionTransformer
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    loaded = _round_trip(model).eval()
    assert type(loaded) is type(model)
    assert loaded.pos_schemes == model.pos_schemes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
