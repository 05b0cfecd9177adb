"""multipos.clip: the three upgrade methods, variable lengths, save/load, refusals."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

open_clip = pytest.importorskip("open_clip", reason="the clip extra (open_clip_torch) is absent")

import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from multipos import apply_rotary  # noqa: E402
from multipos.clip import (  # noqa: E402
    RotaryAttention,
    TextContextSpec,
    kps_stretch,
    linear_stretch,
    load_upgraded,
    open_clip_registered,
    register_open_clip,
    save_upgraded,
    stretch_positional_table,
    trim_tokens,
    unregister_open_clip,
    upgrade_text_context,
)

SOT, EOT = 49406, 49407
N = 248
METHODS = ("linear", "kps", "rope")


def tiny_cfg(*, custom_text: bool = False, **text: object) -> dict:
    """A tiny open_clip config (random weights build in milliseconds)."""
    cfg: dict = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
            **text,
        },
    }
    if custom_text:
        cfg["custom_text"] = True
    return cfg


def build(cfg: dict, seed: int = 0) -> torch.nn.Module:
    cfg = copy.deepcopy(cfg)
    cls = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    torch.manual_seed(seed)
    model = cls(**cfg).eval()
    # Random positional rows of the size of a trained table (open_clip inits them at 0.01).
    with torch.no_grad():
        table = getattr(model, "positional_embedding", None)
        if table is None:
            table = model.text.positional_embedding
        table.normal_(0, 0.5)
    return model


def caption(length: int, generator: torch.Generator) -> torch.Tensor:
    """``(1, length)`` ids: SOT, random words, EOT last (length 1: just EOT)."""
    if length == 1:
        return torch.tensor([[EOT]])
    words = torch.randint(1, 49000, (length - 2,), generator=generator)
    return torch.cat([torch.tensor([SOT]), words, torch.tensor([EOT])]).unsqueeze(0)


def pad(tokens: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(tokens, (0, length - tokens.shape[1]))


@pytest.fixture(params=[False, True], ids=["CLIP", "CustomTextCLIP"])
def cfg(request: pytest.FixtureRequest) -> dict:
    return tiny_cfg(custom_text=request.param)


# ----------------------------------------------------------------------------- table functions


def test_kps_reproduces_long_clip_table() -> None:
    old = torch.randn(77, 8, generator=torch.Generator().manual_seed(1))
    new = kps_stretch(old, 248, keep=20)
    assert new.shape == (248, 8)
    assert torch.equal(new[:20], old[:20])
    # Rows 20 + 4k are old rows 20 + k, bit for bit; the others interpolate (Long-CLIP, r = 4).
    assert torch.equal(new[20:245:4], old[20:77])
    for r in range(1, 4):
        expected = old[20:76] + (r / 4) * (old[21:77] - old[20:76])
        torch.testing.assert_close(new[20 + r : 244 : 4], expected)
    # The last source positions 76.25, 76.5, 76.75 continue the last segment's slope.
    for r in range(1, 4):
        torch.testing.assert_close(new[244 + r], old[76] + (r / 4) * (old[76] - old[75]))


@given(
    rows=st.integers(3, 40),
    keep=st.integers(0, 20),
    extra=st.integers(0, 200),
    stretch=st.one_of(st.none(), st.sampled_from([1.0, 2.0, 3.0, 0.5, 2.5])),
)
def test_kps_keeps_rows_and_integer_sources(rows, keep, extra, stretch) -> None:
    keep = min(keep, rows - 2)
    old = torch.randn(rows, 4, generator=torch.Generator().manual_seed(rows))
    length = rows + extra
    new = kps_stretch(old, length, keep=keep, stretch=stretch)
    assert new.shape == (length, 4)
    assert torch.equal(new[:keep], old[:keep])
    r = stretch if stretch is not None else (length - keep) / (rows - keep)
    if float(r).is_integer():
        r = int(r)
        sources = range(keep, min(rows, keep + (length - 1 - keep) // r + 1))
        for j in sources:
            assert torch.equal(new[keep + (j - keep) * r], old[j])
    assert torch.isfinite(new).all()


def test_linear_matches_open_clip_resize_and_keeps_only_row_zero() -> None:
    from open_clip.model import resize_text_pos_embed

    old = torch.randn(77, 32, generator=torch.Generator().manual_seed(2))
    new = linear_stretch(old, 248)
    model = build(tiny_cfg(context_length=248))
    state = {"positional_embedding": old.clone()}
    resize_text_pos_embed(state, model)
    assert torch.equal(new, state["positional_embedding"])
    assert torch.equal(new[0], old[0])
    # Every new row past the clamped start differs from the old row of the same index.
    assert not torch.isclose(new[2:77], old[2:77]).all(dim=-1).any()


def test_stretch_errors_name_the_options() -> None:
    table = torch.zeros(77, 4)
    with pytest.raises(ValueError, match="linear"):
        stretch_positional_table(table, 248, "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"keep must be"):
        kps_stretch(table, 248, keep=76)
    with pytest.raises(ValueError, match="stretch"):
        kps_stretch(table, 248, stretch=0.0)
    with pytest.raises(ValueError, match=r"\(L0, D\)"):
        kps_stretch(torch.zeros(77), 248)
    with pytest.raises(TypeError, match="floating"):
        linear_stretch(torch.zeros(77, 4, dtype=torch.long), 248)


# ------------------------------------------------------------------------------ upgraded towers


def _sweep_lengths(model: torch.nn.Module) -> None:
    assert model.context_length == N
    g = torch.Generator().manual_seed(3)
    checks = {1, 2, 20, 76, 77, 78, 150, N}
    with torch.inference_mode():
        for length in range(1, N + 1):
            tokens = caption(length, g)
            out = model.encode_text(tokens)
            assert out.shape == (1, 32) and torch.isfinite(out).all(), length
            if length in checks:
                padded = model.encode_text(pad(tokens, N))
                torch.testing.assert_close(out, padded, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[1, 248\]"):
        model.encode_text(torch.zeros(1, N + 1, dtype=torch.long))


@pytest.mark.parametrize("method", METHODS)
def test_every_length_encodes_and_padding_is_invisible(method: str) -> None:
    """Every length 1..N runs (one text layer to keep it fast); padding never matters."""
    _sweep_lengths(upgrade_text_context(build(tiny_cfg(layers=1)), method, N))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_length_encodes_full_towers(cfg: dict, method: str) -> None:
    _sweep_lengths(upgrade_text_context(build(cfg), method, N))


@pytest.mark.parametrize("method", ["linear", "kps"])
def test_kept_rows_are_bit_identical(cfg: dict, method: str) -> None:
    original = build(cfg)
    model = upgrade_text_context(copy.deepcopy(original), method, N, keep=20)

    def table(m: torch.nn.Module) -> torch.Tensor:
        return (
            m.positional_embedding
            if hasattr(m, "visual") and not hasattr(m, "text")
            else m.text.positional_embedding
        )

    kept = 20 if method == "kps" else 1
    assert table(model).shape[0] == N
    assert torch.equal(table(model)[:kept], table(original)[:kept])
    assert not torch.equal(table(model)[kept:77], table(original)[kept:77])


def test_kps_is_prefix_preserving_and_linear_is_not(cfg: dict) -> None:
    """Captions of at most ``keep`` tokens keep their embedding exactly under kps; linear moves
    every row but the first, so it changes them."""
    original = build(cfg)
    kps = upgrade_text_context(copy.deepcopy(original), "kps", N, keep=20)
    linear = upgrade_text_context(copy.deepcopy(original), "linear", N)
    g = torch.Generator().manual_seed(4)
    tokens = torch.cat([pad(caption(n, g), 77) for n in (2, 5, 12, 20)])
    long_tokens = torch.cat([pad(caption(n, g), 77) for n in (40, 77)])
    with torch.no_grad():
        ref = original.encode_text(tokens)
        assert torch.equal(kps.encode_text(tokens), ref)
        # Shorter inputs run other matmul shapes: equal up to rounding.
        torch.testing.assert_close(kps.encode_text(trim_tokens(tokens)), ref)
        assert not torch.allclose(linear.encode_text(tokens), ref, atol=1e-4)
        # Past ``keep`` tokens kps reads stretched rows: embeddings move.
        assert not torch.allclose(kps.encode_text(long_tokens), original.encode_text(long_tokens))


def test_rope_keeps_weight_names_and_loads_teacher_strictly(cfg: dict) -> None:
    original = build(cfg)
    model = upgrade_text_context(copy.deepcopy(original), "rope", N)
    table = {"positional_embedding", "text.positional_embedding"}
    assert set(original.state_dict()) - set(model.state_dict()) == table & set(
        original.state_dict()
    )
    assert set(model.state_dict()) <= set(original.state_dict())
    teacher_state = {k: v for k, v in original.state_dict().items() if k not in table}
    model.load_state_dict(teacher_state, strict=True)
    blocks = (
        model.transformer.resblocks
        if not hasattr(model, "text")
        else model.text.transformer.resblocks
    )
    assert all(isinstance(b.attn, RotaryAttention) for b in blocks)


def test_rotary_attention_matches_source_at_position_zero() -> None:
    """Position 0 is the identity rotation and the mask is causal, so the first token's output
    equals that of the original attention; later tokens differ."""
    from multipos.rotary import RotaryEmbedding

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 2, batch_first=True).eval()
    rot = RotaryAttention.from_module(mha, RotaryEmbedding(16), context_length=20).eval()
    x = torch.randn(3, 10, 32)
    mask = torch.full((10, 10), float("-inf")).triu(1)
    with torch.no_grad():
        ref = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        out = rot(x)
    torch.testing.assert_close(out[:, 0], ref[:, 0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[:, 1:], ref[:, 1:], atol=1e-4)


def test_rope_scores_depend_on_relative_position_only() -> None:
    """The installed rotation makes the score of query i and key j a function of i - j only
    (fixed q and k at every position give a Toeplitz score matrix); and, with the causal mask,
    a position's output does not depend on how long the sequence is."""
    model = upgrade_text_context(build(tiny_cfg()), "rope", N)
    attn = model.transformer.resblocks[0].attn
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 1, attn.head_dim, generator=g)
    cos, sin = attn.rotary(torch.arange(40.0), length=N, dtype=torch.float32)
    scores = (
        apply_rotary(q.expand(40, -1), cos, sin, attn.rotary.layout)
        @ apply_rotary(k.expand(40, -1), cos, sin, attn.rotary.layout).T
    )
    for shift in (1, 7, 25):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift])
    assert not torch.allclose(scores[0, 1], scores[0, 2])  # and it does depend on i - j
    tokens = torch.full((1, 60), 320)
    with torch.no_grad():
        x = model.token_embedding(tokens)
        full = model.transformer(x)
        short = model.transformer(x[:, :30])
    torch.testing.assert_close(full[:, :30], short, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("method", METHODS)
def test_save_load_identical_embeddings(cfg: dict, method: str, tmp_path) -> None:
    model = upgrade_text_context(
        build(cfg),
        method,
        N,
        layout="half",
        base=500.0,
        scaling={"kind": "yarn", "factor": 4.0, "original_length": 77.0},
    )
    g = torch.Generator().manual_seed(5)
    tokens = torch.cat([pad(caption(n, g), N) for n in (3, 77, 200, N)])
    image = torch.randn(2, 3, 32, 32, generator=g)
    save_upgraded(model, tmp_path, cfg)
    loaded = load_upgraded(tmp_path)
    with torch.no_grad():
        expected = model.encode_text(tokens)
        assert torch.equal(loaded.encode_text(tokens), expected)
        torch.testing.assert_close(loaded.encode_text(trim_tokens(tokens[:1])), expected[:1])
        assert torch.equal(loaded.encode_image(image), model.encode_image(image))
    stored = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert stored["model_cfg"]["text_cfg"]["context_length"] == N
    spec = TextContextSpec.from_dict(stored["multipos"]["text_context"])
    assert spec == model.text_context_spec
    assert open_clip.get_tokenizer(f"local-dir:{tmp_path}").context_length == N
    if method == "rope":
        assert spec.scaling.kind == "yarn" and spec.layout == "half" and spec.base == 500.0
    # open_clip's own factory, with the multipos hook that importing multipos.clip installs
    assert open_clip_registered()
    via_open_clip = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    assert type(via_open_clip) is type(model)
    with torch.no_grad():
        assert torch.equal(via_open_clip.encode_text(tokens), expected)
        short = trim_tokens(tokens[:1])
        torch.testing.assert_close(via_open_clip.encode_text(short), expected[:1])
        assert torch.equal(via_open_clip.encode_image(image), model.encode_image(image))


@pytest.mark.parametrize("method", METHODS)
def test_plain_open_clip_without_hook(cfg: dict, method: str, tmp_path) -> None:
    """Without the hook, open_clip alone loads stretched tables (inputs padded to N) and
    refuses a rotary tower loudly rather than building a wrong one."""
    model = upgrade_text_context(build(cfg), method, N)
    save_upgraded(model, tmp_path, cfg)
    tokens = pad(caption(90, torch.Generator().manual_seed(8)), N)
    unregister_open_clip()
    try:
        assert not open_clip_registered()
        if method == "rope":
            with pytest.raises(RuntimeError, match="positional_embedding"):
                open_clip.create_model(f"local-dir:{tmp_path}")
        else:
            plain = open_clip.create_model(f"local-dir:{tmp_path}").eval()
            with torch.no_grad():
                assert torch.equal(plain.encode_text(tokens), model.encode_text(tokens))
        # load_upgraded does not depend on the hook.
        with torch.no_grad():
            expected = model.encode_text(tokens)
            assert torch.equal(load_upgraded(tmp_path).encode_text(tokens), expected)
    finally:
        register_open_clip()
    assert open_clip_registered()


def test_hook_covers_open_clip_entry_points(tmp_path) -> None:
    cfg = tiny_cfg()
    model = upgrade_text_context(build(cfg), "rope", N)
    save_upgraded(model, tmp_path, cfg)
    name = f"local-dir:{tmp_path}"
    tokens = caption(120, torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = model.encode_text(tokens)
        built, _, _ = open_clip.create_model_and_transforms(name)
        assert torch.equal(built.eval().encode_text(tokens), expected)
        loaded, _ = open_clip.create_model_from_pretrained(name)
        assert torch.equal(loaded.eval().encode_text(tokens), expected)
        # The factory module's name (used by open_clip internally) is wrapped too.
        assert open_clip.factory.create_model is open_clip.create_model
        assert hasattr(open_clip.factory.create_model, "__multipos_original__")
        # positional arguments bind like open_clip's own signature
        assert torch.equal(
            open_clip.create_model(name, None, True, "fp32", "cpu").eval().encode_text(tokens),
            expected,
        )
        # open_clip's precision handling applies to the upgraded tower (angles stay fp32)
        half = open_clip.create_model(name, precision="pure_bf16").eval()
        assert half.token_embedding.weight.dtype == torch.bfloat16
        cosine = torch.nn.functional.cosine_similarity(half.encode_text(tokens).float(), expected)
        assert cosine.min() > 0.999
    # load_weights=False: the upgraded architecture, random weights
    fresh = open_clip.create_model(name, load_weights=False)
    assert fresh.text_context_spec == model.text_context_spec
    assert fresh.positional_embedding is None
    with torch.no_grad():
        assert not torch.allclose(fresh.eval().encode_text(tokens), expected)
    same_length = open_clip.create_model(name, force_context_length=N)
    assert same_length.text_context_spec.context_length == N
    with pytest.raises(ValueError, match="force_context_length=100"):
        open_clip.create_model(name, force_context_length=100)
    with pytest.raises(ValueError, match="jit=True"):
        open_clip.create_model(name, jit=True)
    with pytest.raises(ValueError, match="pretrained_text_path"):
        open_clip.create_model(name, pretrained_text_path=str(tmp_path / "x.bin"))
    with pytest.raises(RuntimeError, match="require_pretrained"):
        open_clip.create_model(name, load_weights=False, require_pretrained=True)
    (tmp_path / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file"):
        open_clip.create_model(name)


@pytest.mark.parametrize("method", METHODS)
def test_weights_file_given_as_pretrained(method: str, tmp_path) -> None:
    """pretrained=DIR/<weights> with a model name: refused where open_clip would build another
    model (no rotary tower; a stretched table resized back to 77), accepted with
    force_context_length=N for the stretched tables."""
    cfg = tiny_cfg()
    named = tmp_path / "configs" / f"multipos-test-{method}.json"
    named.parent.mkdir()
    named.write_text(json.dumps(cfg))
    open_clip.add_model_config(named)
    model = upgrade_text_context(build(cfg), method, N)
    save_upgraded(model, tmp_path / "up", cfg)
    weights = str(tmp_path / "up" / "open_clip_pytorch_model.bin")
    with pytest.raises(ValueError, match="local-dir:"):
        open_clip.create_model(f"multipos-test-{method}", pretrained=weights)
    if method == "rope":
        with pytest.raises(ValueError, match="local-dir:"):
            open_clip.create_model(
                f"multipos-test-{method}", pretrained=weights, force_context_length=N
            )
        return
    plain = open_clip.create_model(
        f"multipos-test-{method}", pretrained=weights, force_context_length=N
    ).eval()
    tokens = pad(caption(100, torch.Generator().manual_seed(3)), N)
    with torch.no_grad():
        assert torch.equal(plain.encode_text(tokens), model.encode_text(tokens))


def test_hook_passes_other_models_through(tmp_path) -> None:
    """Directories without a multipos spec and built-in names reach open_clip unchanged."""
    cfg = tiny_cfg()
    original = build(cfg)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(original.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    plain = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    assert type(plain) is open_clip.CLIP
    tokens = pad(caption(30, torch.Generator().manual_seed(2)), 77)
    with torch.no_grad():
        assert torch.equal(plain.encode_text(tokens), original.encode_text(tokens))
    named = tmp_path / "configs" / "multipos-test-tiny.json"
    named.parent.mkdir()
    named.write_text(json.dumps(cfg))
    open_clip.add_model_config(named)
    assert type(open_clip.create_model("multipos-test-tiny")) is open_clip.CLIP
    weights = str(tmp_path / "open_clip_pytorch_model.bin")
    same = open_clip.create_model("multipos-test-tiny", pretrained=weights).eval()
    with torch.no_grad():
        assert torch.equal(same.encode_text(tokens), original.encode_text(tokens))
    with pytest.raises(FileNotFoundError):
        open_clip.create_model(f"local-dir:{tmp_path / 'missing'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="Could not load valid config"):  # open_clip's message
        open_clip.create_model(f"local-dir:{broken}")
    register_open_clip()  # idempotent: still one wrapper around open_clip's function
    inner = open_clip.create_model.__multipos_original__
    assert not hasattr(inner, "__multipos_original__")


def test_hook_installed_on_import(tmp_path) -> None:
    """A fresh interpreter: importing multipos.clip is all open_clip needs, and it neither
    imports the vision domain nor registers timm models."""
    cfg = tiny_cfg()
    model = upgrade_text_context(build(cfg), "rope", N, scaling="ntk")
    save_upgraded(model, tmp_path, cfg)
    tokens = caption(200, torch.Generator().manual_seed(4))
    torch.save(tokens, tmp_path / "tokens.pt")
    with torch.no_grad():
        torch.save(model.encode_text(tokens), tmp_path / "expected.pt")
    script = (
        "import sys, torch, open_clip\n"
        "import multipos.clip\n"
        "d = sys.argv[1]\n"
        "m = open_clip.create_model('local-dir:' + d).eval()\n"
        "with torch.no_grad():\n"
        "    out = m.encode_text(torch.load(d + '/tokens.pt'))\n"
        "assert torch.equal(out, torch.load(d + '/expected.pt'))\n"
        "print(m.text_context_spec.scaling.kind)\n"
        "assert 'multipos.vision' not in sys.modules, 'multipos.vision imported'\n"
        "if 'timm' in sys.modules:\n"
        "    import timm\n"
        "    assert not timm.list_models('*multipos*'), 'timm models registered'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ntk"


def test_rope_spec_changes_embeddings() -> None:
    """The persisted spec matters: another base gives other embeddings (so losing it, as the
    released TULIP evaluation does with its NTK table, is visible)."""
    base = build(tiny_cfg())
    a = upgrade_text_context(copy.deepcopy(base), "rope", N, base=10000.0)
    b = upgrade_text_context(copy.deepcopy(base), "rope", N, base=100.0)
    tokens = caption(50, torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert not torch.allclose(a.encode_text(tokens), b.encode_text(tokens), atol=1e-5)


# ------------------------------------------------------------------------------------ refusals


def test_siglip_style_tower_refused() -> None:
    siglip = build(tiny_cfg(custom_text=True, no_causal_mask=True, pool_type="last"))
    with pytest.raises(ValueError, match="SigLIP"):
        upgrade_text_context(siglip, "rope")
    last = build(tiny_cfg(pool_type="last"))
    with pytest.raises(ValueError, match="pool_type='last'"):
        upgrade_text_context(last, "kps")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="linear"):
        upgrade_text_context(build(tiny_cfg()), "alibi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least the original"):
        upgrade_text_context(build(tiny_cfg()), "kps", 50)
    with pytest.raises(ValueError, match="layout"):
        upgrade_text_context(build(tiny_cfg()), "rope", layout="zigzag")  # type: ignore[arg-type]
    model = upgrade_text_context(build(tiny_cfg()), "kps")
    with pytest.raises(ValueError, match="already upgraded"):
        upgrade_text_context(model, "kps")
    with pytest.raises(TypeError, match="CLIP"):
        upgrade_text_context(torch.nn.Linear(2, 2), "kps")
    with pytest.raises(ValueError, match="not upgraded"):
        save_upgraded(build(tiny_cfg()), "/nonexistent", tiny_cfg())


@pytest.mark.parametrize("method", METHODS)
def test_forward_intermediates_on_short_inputs(method: str) -> None:
    model = upgrade_text_context(build(tiny_cfg()), method, N)
    tokens = caption(30, torch.Generator().manual_seed(7))
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_intermediates(image=image, text=tokens, output_logits=True)
        assert len(out["text_intermediates"]) == 2
        assert out["text_intermediates"][0].shape == (1, 30, 32)
        torch.testing.assert_close(out["text_features"], model.encode_text(tokens, normalize=True))
        assert out["image_logits"].shape == (1, 1)
