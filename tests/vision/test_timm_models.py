"""timm ViTs with position schemes: create_model, features, pretrained warm start, retrofit."""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm", reason="needs the [vision] extra (timm)")

import inspect  # noqa: E402

import torch  # noqa: E402
from timm.layers.attention import Attention  # noqa: E402

import multipos  # noqa: E402
import multipos.vision as mv  # noqa: E402
from multipos.vision.layers import MultiposAttention, MultiposBlock  # noqa: E402

TINY = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
    "num_classes": 5,
}
SCHEMES = [
    "ape",
    "none",
    ["ape", "irpe"],
    "irpe",
    "peg",
    "lff",
    "rope_axial_2d",
    "rope_mixed",
    ["ape", "irpe", "peg"],
    ["lff", "rope_axial_2d"],
    "gta",
    ["ape", "gta", "peg"],
]
IDS = ["+".join([s] if isinstance(s, str) else s) for s in SCHEMES]


def _model(scheme, **kwargs):
    cfg = {**TINY, **kwargs}
    return timm.create_model("vit_tiny_patch16_multipos_224", pos_scheme=scheme, **cfg)


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_forward_backward_two_resolutions_one_non_square(scheme) -> None:
    model = _model(scheme, dynamic_img_size=True)
    for size in ((32, 32), (48, 24)):
        x = torch.randn(2, 3, *size)
        out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        model.zero_grad()
        out.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_features_only_equals_forward_intermediates(scheme) -> None:
    model = _model(scheme).eval()
    feats = timm.create_model(
        "vit_tiny_patch16_multipos_224",
        pos_scheme=scheme,
        features_only=True,
        out_indices=(0, 2),
        **TINY,
    ).eval()
    # features_only wraps the model (keys prefixed "model.") and drops its head.
    loaded = feats.model.load_state_dict(model.state_dict(), strict=False)
    assert not loaded.missing_keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        got = feats(x)
    assert len(got) == 2
    for a, b in zip(got, expected, strict=True):
        assert a.shape == (2, 32, 4, 4)
        torch.testing.assert_close(a, b)


def test_forward_intermediates_final_features_match_forward_features() -> None:
    model = _model(["ape", "irpe", "peg"]).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NLC")
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.norm(inter[-1]), final[:, 1:])


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_state_dict_round_trip(scheme) -> None:
    a = _model(scheme).eval()
    torch.manual_seed(123)
    b = _model(scheme).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_scheme_parameters_are_where_expected() -> None:
    keys = set(_model(["ape", "irpe", "peg", "lff"], pos_cfg={"irpe": {"on": "qkv"}}).state_dict())
    assert "pos_embed" in keys
    assert {"blocks.0.attn.irpe.table_q", "blocks.0.attn.irpe.table_k"} <= keys
    assert "blocks.2.attn.irpe.table_v" in keys
    assert "blocks.0.peg.proj.weight" in keys and "blocks.1.peg.proj.weight" not in keys
    assert "lff.freqs" in keys
    assert "pos_embed" not in _model("rope_mixed").state_dict()
    mixed = _model("rope_mixed")
    f0, f1 = mixed.blocks[0].attn.rope_mixed.freqs, mixed.blocks[1].attn.rope_mixed.freqs
    assert not torch.equal(f0, f1), "RoPE-Mixed learns frequencies per layer"


def test_grid_comes_from_the_input_not_the_token_count() -> None:
    model = _model(["irpe", "peg"], dynamic_img_size=True, reg_tokens=2)
    seen = []
    model.blocks[0].register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["pos"]), with_kwargs=True
    )
    model(torch.randn(1, 3, 24, 48))
    pos = seen[0]
    assert pos.grid.shape == (3, 6) and pos.grid.num_prefix_tokens == 3
    assert pos.irpe_buckets.shape[-2:] == (21, 21)


def test_pretrained_warm_start_from_a_plain_vit_checkpoint(tmp_path) -> None:
    plain = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    path = tmp_path / "vit.pth"
    torch.save(plain.state_dict(), path)
    for scheme in (["ape", "irpe"], ["ape", "peg"], "rope_axial_2d"):
        model = timm.create_model(
            "vit_tiny_patch16_multipos_224",
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path)},
            pos_scheme=scheme,
            **TINY,
        ).eval()
        for name, value in plain.state_dict().items():
            # The classifier is re-initialised: the checkpoint's cfg has 1000 classes, ours 5.
            if name in model.state_dict() and not name.startswith("head."):
                torch.testing.assert_close(model.state_dict()[name], value, msg=name)
        assert ("pos_embed" in model.state_dict()) == ("ape" in scheme)
    # iRPE tables start at zero: the warm-started model computes what the plain ViT computes.
    irpe = timm.create_model(
        "vit_tiny_patch16_multipos_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        pos_scheme=["ape", "irpe"],
        pos_cfg={"irpe": {"on": "qkv"}},
        **TINY,
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(irpe.forward_features(x), plain.forward_features(x))


@pytest.mark.parametrize(
    ("scheme", "cfg"),
    [
        ("irpe", {"irpe": {"mode": "contextual", "on": "qkv"}}),
        ("irpe", {"irpe": {"mode": "bias", "on": "qk", "method": "cross"}}),
        ("irpe", {"irpe": {"method": "euclidean", "shared_heads": False}}),
        ("peg", {"peg": {"blocks": [0, 1, 2]}}),
        ("lff", {}),
        (["irpe", "peg", "lff"], {}),
    ],
)
def test_retrofit_starts_as_identity(scheme, cfg) -> None:
    model = timm.create_model("vit_tiny_patch16_224", reg_tokens=1, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        state = {k: v.clone() for k, v in model.state_dict().items()}
    same = mv.apply_scheme(model, scheme, **cfg)
    assert same is model
    assert isinstance(model, timm.models.VisionTransformer)
    assert isinstance(model.blocks[0], MultiposBlock)
    assert isinstance(model.blocks[0].attn, MultiposAttention)
    for name, value in state.items():
        torch.testing.assert_close(model.state_dict()[name], value)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    # ...and the new parameters train.
    model.train()
    model(x).sum().backward()
    new = [n for n, p in model.named_parameters() if n not in state]
    assert new and all(model.get_parameter(n).grad is not None for n in new)


def test_retrofit_rope_changes_outputs_and_can_drop_ape() -> None:
    model = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    mv.apply_scheme(model, "rope_axial_2d", ape="drop")
    assert model.pos_embed is None
    with torch.no_grad():
        assert not torch.allclose(model(x), before)


def test_retrofit_errors() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        mv.apply_scheme(torch.nn.Linear(2, 2), "peg")
    model = timm.create_model("vit_tiny_patch16_224", **TINY)
    with pytest.raises(ValueError, match="cannot be retrofitted"):
        mv.apply_scheme(model, ["ape", "irpe"])
    mv.apply_scheme(model, "peg")
    with pytest.raises(ValueError, match="already uses"):
        mv.apply_scheme(model, "irpe")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pos_scheme": "sincos"}, ValueError, "valid schemes"),
        ({"pos_scheme": ["rope_axial_2d", "rope_mixed"]}, ValueError, "choose one"),
        ({"pos_scheme": ["gta", "rope_axial_2d"]}, ValueError, "choose one"),
        ({"pos_scheme": ["none", "peg"]}, ValueError, "cannot be combined"),
        ({"pos_scheme": "peg", "pos_cfg": {"irpe": {}}}, ValueError, "does not use"),
        ({"pos_scheme": "irpe", "pos_cfg": {"irpe": {"buckets": 5}}}, TypeError, "valid options"),
        ({"pos_scheme": "irpe", "pos_cfg": {"irpe": {"mode": "ctx"}}}, ValueError, "mode"),
        ({"pos_scheme": "peg", "pos_cfg": {"peg": {"blocks": [7]}}}, ValueError, "out of range"),
        ({"pos_scheme": "rope_axial_2d", "pos_embed": "learn"}, ValueError, "contradicts"),
        ({"pos_scheme": "irpe", "patch_drop_rate": 0.5}, ValueError, "patch dropout"),
        ({"pos_scheme": "lff", "pos_cfg": {"lff": {"init": "zeros"}}}, ValueError, "lff init"),
        ({"pos_scheme": "lff", "pos_cfg": {"lff": {"coords": "abs"}}}, ValueError, "coords"),
    ],
)
def test_bad_configurations(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        timm.create_model("vit_tiny_patch16_multipos_224", **{**TINY, **kwargs})


def test_aliases_choose_the_default_scheme() -> None:
    model = timm.create_model("vit_tiny_patch16_multipos_irpe_224", **TINY)
    assert model.pos_schemes.names == ("ape", "irpe")
    model = timm.create_model("vit_tiny_patch16_multipos_peg_224", pos_scheme="lff", **TINY)
    assert model.pos_schemes.names == ("lff",)


def test_rope_axial_2d_yarn_scaling_changes_only_low_frequencies() -> None:
    scaling = {"kind": "yarn", "factor": 2.0, "original_length": 4}
    model = _model("rope_axial_2d", pos_cfg={"rope_axial_2d": {"scaling": scaling}})
    plain = _model("rope_axial_2d")
    assert model.rope.scaling.kind == "yarn"
    assert torch.equal(model.rope.inv_freq[:1], plain.rope.inv_freq[:1])
    assert not torch.equal(model.rope.inv_freq, plain.rope.inv_freq)


def _compile_case(scheme):
    # Compiled frames are shared between models of one class: start each case afresh.
    torch._dynamo.reset()
    return _model(scheme, dynamic_img_size=True).eval()


def _compiled_matches_eager(model, batch: int) -> None:
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for size in ((32, 32), (48, 24)):
            x = torch.randn(batch, 3, *size)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def _exported_matches_eager(model, batch: int) -> None:
    h = torch.export.Dim("h", min=2, max=16)
    w = torch.export.Dim("w", min=2, max=16)
    x = torch.randn(batch, 3, 32, 48)
    program = torch.export.export(model, (x,), dynamic_shapes=({2: 8 * h, 3: 8 * w},))
    y = torch.randn(batch, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(y), model(y), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_compile_fullgraph_matches_eager(scheme) -> None:
    _compiled_matches_eager(_compile_case(scheme), 1)


def _value_terms_model():
    # iRPE on values: eager runs them block by block outside autograd; compiled and exported
    # graphs the whole tensor.
    torch._dynamo.reset()
    model = _model("irpe", pos_cfg={"irpe": {"on": "qkv"}}, dynamic_img_size=True).eval()
    for table in (t for n, t in model.named_parameters() if "table" in n):
        torch.nn.init.normal_(table, std=0.1, generator=torch.Generator().manual_seed(0))
    return model


@pytest.mark.slow
def test_compile_fullgraph_with_irpe_value_terms_matches_eager() -> None:
    _compiled_matches_eager(_value_terms_model(), 2)


@pytest.mark.slow
def test_export_with_irpe_value_terms_and_dynamic_size() -> None:
    _exported_matches_eager(_value_terms_model(), 3)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_export_with_dynamic_height_and_width(scheme) -> None:
    _exported_matches_eager(_compile_case(scheme), 1)


def test_failed_retrofit_leaves_the_model_untouched() -> None:
    model = timm.create_model("vit_tiny_patch16_224", patch_drop_rate=0.5, **TINY)
    cls, keys = type(model), set(model.state_dict())
    with pytest.raises(ValueError, match="patch dropout"):
        mv.apply_scheme(model, "irpe", ape="drop")
    assert type(model) is cls and set(model.state_dict()) == keys
    assert model.pos_embed is not None
    model = timm.create_model("vit_tiny_patch16_224", **TINY)
    with pytest.raises(ValueError, match="out of range"):
        mv.apply_scheme(model, "peg", peg={"blocks": [9]})
    assert type(model) is cls and not any("peg" in k for k in model.state_dict())
    # Errors raised by the new modules' own checks also come before any change.
    with pytest.raises(ValueError, match="subset of 'qkv'"):
        mv.apply_scheme(model, ["irpe", "lff"], ape="drop", irpe={"on": "kx"})
    assert type(model) is cls and set(model.state_dict()) == keys
    assert model.pos_embed is not None and type(model.blocks[0].attn) is Attention
    odd = timm.create_model("vit_tiny_patch16_224", **{**TINY, "embed_dim": 36, "num_heads": 2})
    odd_keys = set(odd.state_dict())
    with pytest.raises(ValueError, match="divisible by 4"):
        mv.apply_scheme(odd, "rope_mixed", ape="drop")
    assert type(odd) is cls and set(odd.state_dict()) == odd_keys and odd.pos_embed is not None


def test_lff_coordinates() -> None:
    unit = _model("lff", dynamic_img_size=True)
    ref = _model("lff", dynamic_img_size=True, pos_cfg={"lff": {"coords": "reference"}})
    ref.load_state_dict(unit.state_dict())
    seen = {}
    for name, model in (("unit", unit), ("reference", ref)):
        model.lff.register_forward_hook(lambda m, args, out, n=name: seen.__setitem__(n, args[0]))
        model(torch.randn(1, 3, 64, 32))  # an 8 x 4 grid; the default grid is 4 x 4
    assert seen["unit"][:, 0].tolist() == [1 / 16, 1 / 8]
    assert seen["reference"][:, -1].tolist() == [7.5 / 4, 3.5 / 4]


def test_pos_scheme_names_are_the_registry_names() -> None:
    declared = multipos.list_schemes(integration="timm")
    assert set(declared) == {"irpe", "peg", "lff", "rope_axial_2d", "rope_mixed", "gta"}
    assert mv.vit_scheme_names() == ("ape", "none", *declared)
    for name in declared:
        assert multipos.get_scheme(name).factory is not None  # a registered scheme
        model = timm.create_model(f"vit_tiny_patch16_multipos_{name}_224", **TINY)
        assert name in model.pos_schemes.names
    # The old spelling is refused with the registry name in the message.
    with pytest.raises(ValueError, match="did you mean 'rope_axial_2d' for 'rope_axial'"):
        _model("rope_axial")
    with pytest.raises(ValueError, match="did you mean 'rope_axial_2d'"):
        _model("rope_axial_2d", pos_cfg={"rope_axial": {}})


def test_model_names_do_not_clash_with_timm() -> None:
    ours = set(timm.list_models("*multipos*"))
    assert "vit_small_patch16_multipos_rope_mixed_224" in ours
    # timm's own RoPE-Mixed ViT is still timm's (an Eva model).
    eva = timm.models.model_entrypoint("vit_small_patch16_rope_mixed_224")
    assert not eva.__module__.startswith("multipos")


def test_create_scheme_and_pos_cfg_build_the_same_defaults() -> None:
    model = _model("lff")
    lff = multipos.create_scheme("lff", num_axes=2, dim=TINY["embed_dim"])
    assert model.lff.gamma == lff.gamma and model.lff.num_features == lff.num_features
    assert model.lff.mlp[0].out_features == lff.mlp[0].out_features
    irpe_defaults = {
        name: p.default
        for name, p in inspect.signature(multipos.IRPE).parameters.items()
        if name in {"method", "mode", "on", "ratio", "shared_heads"}
    }
    assert vars(mv.IRPEConfig()) == irpe_defaults
    built = _model("irpe").blocks[0].attn.irpe
    assert {k: getattr(built, k) for k in irpe_defaults} == irpe_defaults
    axial = multipos.scheme_defaults("rope_axial_2d")
    assert _model("rope_axial_2d").rope.base == axial["base"] == mv.RopeAxialConfig().base
    mixed = multipos.create_scheme("rope_mixed", num_heads=2, head_dim=16)
    assert _model("rope_mixed").blocks[0].attn.rope_mixed.base == mixed.base


def test_rope_mixed_takes_heads_first_and_returns_interleaved_tables() -> None:
    mixed = mv.MixedRotaryEmbedding(3, 8)
    assert (mixed.num_heads, mixed.head_dim) == (3, 8)
    tables = mixed(torch.rand(2, 5))
    assert tables.layout == "interleaved" and tables.cos.shape == (3, 5, 8)
    q, k, v = torch.randn(3, 1, 3, 5, 8)
    with pytest.raises(ValueError, match="layout"):
        multipos.attention(q, k, v, rotary=tables, layout="half")


def test_multipos_list_says_how_to_use_a_scheme_in_a_vit(capsys) -> None:
    from multipos.cli import main

    assert main(["list", "rope_axial_*"]) == 0
    out = capsys.readouterr().out
    assert (
        "pos_scheme='rope_axial_2d'" in out and "vit_<size>_patch16_multipos_rope_axial_2d" in out
    )
    assert "pos_scheme='rope_axial_3d'" not in out  # no ViT integration for video RoPE
