import copy

import pytest
import torch

from multipos.llm import (
    HFRotaryEmbedding,
    apply_llama_positions,
    apply_qwen2_vl_positions,
    mrope_positions,
    packed_attention_mask,
    v2pe_continuation,
    v2pe_position_ids,
)

transformers = pytest.importorskip("transformers", reason="the adapters need extra 'hf'")

IMG, VID, START, END = 90, 91, 92, 93


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 100.0},
        initializer_range=0.3,  # sharp attention, so that positions change the tokens
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=None,
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def qwen():
    torch.manual_seed(0)
    config = transformers.Qwen2VLConfig(
        text_config={
            "vocab_size": 96,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 100.0,
                "mrope_section": [2, 3, 3],
            },
            "initializer_range": 0.3,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 16,
            "hidden_size": 64,
            "num_heads": 2,
            "patch_size": 2,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=IMG,
        video_token_id=VID,
        vision_start_token_id=START,
        vision_end_token_id=END,
        initializer_range=0.3,
    )
    config.text_config.eos_token_id = None
    config.eos_token_id = None
    return transformers.Qwen2VLForConditionalGeneration(config).eval()


def _llama_batch():
    # Row 0 is left-padded and its prompt ends inside an image (the ceiling rule decides
    # where generation continues); row 1 has two images and ends with text.
    a = [1, 5, 6, *[IMG] * 6, 7, 8, *[IMG] * 3]
    b = [1, 9, *[IMG] * 5, 10, 11, *[IMG] * 2, 12, 13, 14, 15]
    pad = len(b) - len(a)
    ids = torch.tensor([[0] * pad + a, b])
    mask = torch.tensor([[0] * pad + [1] * len(a), [1] * len(b)])
    return ids, mask


def _greedy_without_cache(model, ids, mask, positions, steps, continuation=v2pe_continuation):
    """Reference decoding: the full sequence recomputed at every step, no cache."""
    for _ in range(steps):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat((ids, token), dim=-1)
        mask = torch.cat((mask, torch.ones_like(token)), dim=-1)
        positions = torch.cat((positions, continuation(positions, 1)), dim=-1)
    return ids


def test_llama_delta_one_is_the_unmodified_model(llama):
    ids, mask = _llama_batch()
    adapted = apply_llama_positions(copy.deepcopy(llama))
    pos = v2pe_position_ids(ids, IMG, mask, delta=1.0)
    assert pos.dtype == torch.float32
    hf_pos = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() builds for left padding
    with torch.no_grad():
        want = llama(input_ids=ids, attention_mask=mask, position_ids=hf_pos).logits
        got = adapted(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        plain = adapted(input_ids=ids).logits
        assert torch.equal(got, want)
        assert torch.equal(plain, llama(input_ids=ids).logits)
        want_tokens = llama.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        got_tokens = adapted.generate(
            ids, attention_mask=mask, position_ids=pos, max_new_tokens=6, do_sample=False
        )
    assert torch.equal(got_tokens, want_tokens)


@pytest.mark.parametrize("delta", [1.0, 0.25, 1 / 3])
def test_llama_generate_with_cache_equals_recomputation(llama, delta):
    ids, mask = _llama_batch()
    adapted = apply_llama_positions(copy.deepcopy(llama))
    pos = v2pe_position_ids(ids, IMG, mask, delta=delta)
    with torch.no_grad():
        got = adapted.generate(
            ids, attention_mask=mask, position_ids=pos, max_new_tokens=8, do_sample=False
        )
    want = _greedy_without_cache(adapted, ids, mask, pos, 8)
    assert torch.equal(got, want)
    if delta != 1.0:
        # The positions matter: integer positions decode differently on this model.
        ones = v2pe_position_ids(ids, IMG, mask, delta=1.0)
        assert not torch.equal(_greedy_without_cache(adapted, ids, mask, ones, 8), want)


def test_adapted_model_survives_deepcopy(llama):
    ids, mask = _llama_batch()
    pos = v2pe_position_ids(ids, IMG, mask, delta=0.25)
    adapted = apply_llama_positions(copy.deepcopy(llama))
    twin = copy.deepcopy(adapted)
    assert twin._update_model_kwargs_for_generation.__self__ is twin
    with torch.no_grad():
        got = twin.generate(ids, attention_mask=mask, position_ids=pos, max_new_tokens=5)
    assert torch.equal(got, _greedy_without_cache(adapted, ids, mask, pos, 5))


def test_continuation_rounds_up_after_a_trailing_image():
    pos = torch.tensor([[0.0, 1.0, 1.25, 1.5, 1.75], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert v2pe_continuation(pos, 2).tolist() == [[3.0, 4.0], [5.0, 6.0]]
    three = torch.stack((pos, pos + 0.5, pos))  # (A, B, L): the largest axis sets the pace
    assert v2pe_continuation(three, 1)[:, 0].tolist() == [[4.0], [4.0], [4.0]]  # ceil(2.25) + 1
    assert v2pe_continuation(pos.long(), 1).tolist() == [[2], [5]]


def test_llama_float_positions_are_not_read_as_packed_samples(llama):
    ids, _ = _llama_batch()
    pos = v2pe_position_ids(ids, IMG, delta=0.25)
    adapted = apply_llama_positions(copy.deepcopy(llama))
    with torch.no_grad():
        ones = torch.ones_like(ids)
        want = adapted(input_ids=ids, attention_mask=ones, position_ids=pos).logits
        got = adapted(input_ids=ids, position_ids=pos, use_cache=False).logits
        # Unadapted, transformers reads every fractional step as a new sample.
        broken = llama(input_ids=ids, position_ids=pos, use_cache=False).logits
        fixed = llama(input_ids=ids, attention_mask=ones, position_ids=pos, use_cache=False).logits
    assert torch.equal(got, want)
    assert not torch.allclose(broken, fixed, atol=1e-3)


def test_llama_packed_rows_equal_separate_samples(llama):
    adapted = apply_llama_positions(copy.deepcopy(llama))
    a = torch.tensor([[1, 5, *[IMG] * 4, 6, 7]])
    b = torch.tensor([[1, *[IMG] * 3, 8, 9]])
    ids = torch.cat((a, b, torch.zeros(1, 2, dtype=torch.long)), dim=-1)
    seq = torch.tensor([[0] * a.shape[1] + [1] * b.shape[1] + [1, 1]])
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    pos = v2pe_position_ids(ids, IMG, mask, delta=0.5, sequence_ids=seq)
    with torch.no_grad():
        packed = adapted(
            input_ids=ids,
            position_ids=pos,
            attention_mask=packed_attention_mask(seq, mask, dtype=torch.float32),
        ).logits
        alone_a = adapted(input_ids=a, position_ids=v2pe_position_ids(a, IMG, delta=0.5)).logits
        alone_b = adapted(input_ids=b, position_ids=v2pe_position_ids(b, IMG, delta=0.5)).logits
    torch.testing.assert_close(packed[:, : a.shape[1]], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, a.shape[1] : -2], alone_b, atol=1e-5, rtol=1e-5)


def test_bf16_model_keeps_float32_positions_and_angles(llama):
    adapted = apply_llama_positions(copy.deepcopy(llama)).to(torch.bfloat16)
    rotary = adapted.model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32
    pos = torch.tensor([[1000.25, 1000.5, 4096.75]])
    x = torch.zeros(1, 3, 64, dtype=torch.bfloat16)
    cos, _ = rotary(x, pos)
    assert cos.dtype == torch.bfloat16
    exact = (pos.double()[..., None] * llama.model.rotary_emb.inv_freq.double()).cos()
    exact = torch.cat((exact, exact), dim=-1)
    torch.testing.assert_close(cos.double(), exact, atol=1e-2, rtol=0)  # bf16 rounding only
    # transformers' own module, cast with the model, rounds the frequencies to bf16.
    hf = copy.deepcopy(llama).to(torch.bfloat16).model.rotary_emb
    hf_cos, _ = hf(x, pos)
    assert (hf_cos.double() - exact).abs().max() > 0.1
    # Applied after the cast: the float32 frequencies are recomputed from the config.
    late = apply_llama_positions(copy.deepcopy(llama).to(torch.bfloat16)).model.rotary_emb
    assert torch.equal(late.inv_freq, llama.model.rotary_emb.inv_freq)
    # Positions reach the rotary module as float32 during generate() of a bf16 model.
    seen = []
    handle = rotary.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["position_ids"].dtype), with_kwargs=True
    )
    ids, mask = _llama_batch()
    with torch.no_grad():
        adapted.generate(
            ids,
            attention_mask=mask,
            position_ids=v2pe_position_ids(ids, IMG, mask, delta=0.25),
            max_new_tokens=3,
            do_sample=False,
        )
    handle.remove()
    assert seen and set(seen) == {torch.float32}


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
)
def test_llama_scaled_rotary_types_are_kept(rope):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        rope_parameters={"rope_theta": 100.0, **rope},
    )
    model = transformers.LlamaForCausalLM(config).eval()
    ids, mask = _llama_batch()
    pos = v2pe_position_ids(ids, IMG, mask, delta=1.0)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, position_ids=pos.long()).logits
        adapted = apply_llama_positions(copy.deepcopy(model))
        assert torch.equal(
            adapted(input_ids=ids, attention_mask=mask, position_ids=pos).logits, want
        )
        late = apply_llama_positions(copy.deepcopy(model).to(torch.bfloat16)).model.rotary_emb
    assert torch.equal(late.inv_freq, model.model.rotary_emb.inv_freq)
    assert late.attention_scaling == model.model.rotary_emb.attention_scaling


def test_rotary_sections_take_each_axis(llama):
    inv_freq = llama.model.rotary_emb.inv_freq
    one = HFRotaryEmbedding(inv_freq)
    two = HFRotaryEmbedding(inv_freq, sections=(3, 5))
    pos = torch.tensor([[0.0, 2.5, 7.0]])
    x = torch.zeros(1, 3, 16)
    # Equal axes give plain RoPE; a second axis moves only its own slots.
    assert torch.equal(two(x, torch.stack((pos, pos)))[0], one(x, pos)[0])
    cos = two(x, torch.stack((pos, pos + 1)))[0]
    assert torch.equal(cos[..., :3], one(x, pos)[0][..., :3])
    assert torch.equal(cos[..., 3:8], one(x, pos + 1)[0][..., 3:8])


def test_llama_takes_multi_axis_positions(llama):
    # The plug-in path of another scheme: (A, B, L) positions on channel sections.
    ids, mask = _llama_batch()
    one = apply_llama_positions(copy.deepcopy(llama))
    rotary = HFRotaryEmbedding(llama.model.rotary_emb.inv_freq, sections=(3, 5))
    two = apply_llama_positions(copy.deepcopy(llama), rotary=rotary)
    pos = v2pe_position_ids(ids, IMG, mask, delta=0.25)
    both = torch.stack((pos, pos))
    with torch.no_grad():
        want = one(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert torch.equal(two(input_ids=ids, attention_mask=mask, position_ids=both).logits, want)
        other = torch.stack((pos, (pos / 4).floor()))
        moved = two(input_ids=ids, attention_mask=mask, position_ids=other).logits
        assert not torch.allclose(moved, want, atol=1e-3)
        # No mask and no cache: the multi-axis tensor is not read as packed samples either.
        no_mask = two(input_ids=ids[1:], position_ids=other[:, 1:], use_cache=False).logits
        torch.testing.assert_close(no_mask, moved[1:], atol=1e-5, rtol=1e-5)
        got = two.generate(
            ids, attention_mask=mask, position_ids=both, max_new_tokens=5, do_sample=False
        )
        ref = one.generate(
            ids, attention_mask=mask, position_ids=pos, max_new_tokens=5, do_sample=False
        )
    assert torch.equal(got, ref)


def test_llama_bad_input_raises(llama):
    with pytest.raises(TypeError, match="rotary_emb"):
        apply_llama_positions(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="rotary"):
        apply_llama_positions(copy.deepcopy(llama), rotary="half")
    with pytest.raises(ValueError, match="sections"):
        HFRotaryEmbedding(torch.ones(8), sections=(3, 3))
    with pytest.raises(ValueError, match="position_ids"):
        HFRotaryEmbedding(torch.ones(8), sections=(4, 4))(torch.zeros(1), torch.zeros(3, 1, 2))
    dynamic = copy.deepcopy(llama.model.rotary_emb)
    dynamic.rope_type = "dynamic"
    with pytest.raises(ValueError, match="dynamic"):
        HFRotaryEmbedding.from_module(dynamic)


def _qwen_batch():
    a = [1, START, *[IMG] * 4, END, 5, START, *[VID] * 8, END, 6]
    b = [1, 2, 3, START, *[IMG] * 8, END, 4, START, *[VID] * 4, END, 7, 8]
    pad = len(b) - len(a)
    ids = torch.tensor([[0] * pad + a, b])
    mask = torch.tensor([[0] * pad + [1] * len(a), [1] * len(b)])
    types = (ids == IMG).long() + 2 * (ids == VID).long()
    grids = {
        "image_grid_thw": torch.tensor([[1, 4, 4], [1, 4, 8]]),
        "video_grid_thw": torch.tensor([[2, 4, 4], [1, 4, 4]]),
    }
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types, **grids}


def test_qwen2_vl_delta_one_is_the_unmodified_model(qwen):
    batch = _qwen_batch()
    adapted = apply_qwen2_vl_positions(copy.deepcopy(qwen))
    with torch.no_grad():
        assert torch.equal(adapted(**batch).logits, qwen(**batch).logits)
        want = qwen.generate(**batch, max_new_tokens=6, do_sample=False)
        got = adapted.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


def test_qwen2_vl_bf16_keeps_float32_frequencies(qwen):
    adapted = apply_qwen2_vl_positions(copy.deepcopy(qwen), delta=0.25).to(torch.bfloat16)
    rotary = adapted.model.language_model.rotary_emb
    assert isinstance(rotary, HFRotaryEmbedding) and rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, qwen.model.language_model.rotary_emb.inv_freq)
    with torch.no_grad():
        logits = adapted(**_qwen_batch()).logits
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("delta", [1.0, 0.25])
def test_qwen2_vl_generate_with_cache_equals_recomputation(qwen, delta):
    batch = _qwen_batch()
    adapted = apply_qwen2_vl_positions(copy.deepcopy(qwen), delta=delta)
    with torch.no_grad():
        got = adapted.generate(**batch, max_new_tokens=6, do_sample=False)
    pos = mrope_positions(
        batch["input_ids"],
        image_grid_thw=batch["image_grid_thw"],
        video_grid_thw=batch["video_grid_thw"],
        attention_mask=batch["attention_mask"],
        image_token_id=IMG,
        video_token_id=VID,
        delta=delta,
    ).position_ids
    want = _greedy_without_cache(adapted, batch["input_ids"], batch["attention_mask"], pos, 6)
    assert torch.equal(got, want)
    if delta != 1.0:
        ones = mrope_positions(
            batch["input_ids"],
            image_grid_thw=batch["image_grid_thw"],
            video_grid_thw=batch["video_grid_thw"],
            attention_mask=batch["attention_mask"],
            image_token_id=IMG,
            video_token_id=VID,
        ).position_ids
        assert not torch.equal(
            _greedy_without_cache(adapted, batch["input_ids"], batch["attention_mask"], ones, 6),
            want,
        )


def test_qwen2_vl_manual_decoding_uses_rope_deltas(qwen):
    # A forward with a cache and no position_ids: the new token sits at
    # cumsum(attention_mask) - 1 + rope_deltas, with the rope_deltas our ids returned
    # (transformers 5.23 alone fails here: it builds positions for the cached tokens too).
    batch = _qwen_batch()
    adapted = apply_qwen2_vl_positions(copy.deepcopy(qwen), delta=0.25)
    token = torch.tensor([[11], [12]])
    mask = torch.cat((batch["attention_mask"], torch.ones_like(token)), dim=-1)
    with torch.no_grad():
        prompt = adapted(**batch, use_cache=True)
        step = adapted(
            input_ids=token, attention_mask=mask, past_key_values=prompt.past_key_values
        ).logits[:, -1]
        pos = mrope_positions(
            batch["input_ids"],
            image_grid_thw=batch["image_grid_thw"],
            video_grid_thw=batch["video_grid_thw"],
            attention_mask=batch["attention_mask"],
            image_token_id=IMG,
            video_token_id=VID,
            delta=0.25,
        ).position_ids
        pos = torch.cat((pos, v2pe_continuation(pos, 1)), dim=-1)
        ids = torch.cat((batch["input_ids"], token), dim=-1)
        full = adapted(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_qwen2_vl_packed_rows_equal_separate_samples(qwen):
    adapted = apply_qwen2_vl_positions(copy.deepcopy(qwen), delta=0.5)
    a = [1, START, *[IMG] * 4, END, 5]
    b = [2, START, *[IMG] * 8, END, 6, 7]
    grid = torch.tensor([[1, 4, 4], [1, 4, 8]])
    ids = torch.tensor([a + b])
    seq = torch.tensor([[0] * len(a) + [1] * len(b)])
    pos = mrope_positions(
        ids, image_grid_thw=grid, image_token_id=IMG, sequence_ids=seq, delta=0.5
    ).position_ids
    with torch.no_grad():
        packed = adapted(
            input_ids=ids,
            position_ids=pos,
            attention_mask=packed_attention_mask(seq, dtype=torch.float32),
        ).logits
        alone = [
            adapted(
                input_ids=torch.tensor([s]),
                mm_token_type_ids=(torch.tensor([s]) == IMG).long(),
                image_grid_thw=g,
            ).logits
            for s, g in ((a, grid[:1]), (b, grid[1:]))
        ]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), atol=1e-5, rtol=1e-5)


def test_qwen2_vl_bad_input_raises(qwen, llama):
    with pytest.raises(TypeError, match="Qwen2-VL"):
        apply_qwen2_vl_positions(llama)
    with pytest.raises(ValueError, match="generator"):
        apply_qwen2_vl_positions(copy.deepcopy(qwen), delta=(0.5, 0.25))
    timed = copy.deepcopy(qwen)
    timed.config.vision_config.tokens_per_second = 2  # Qwen2.5-VL's absolute-time video ids
    apply_qwen2_vl_positions(timed)
    with torch.no_grad(), pytest.raises(ValueError, match="video_grid_thw"):
        timed(**_qwen_batch())
