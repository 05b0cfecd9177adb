"""HiRoPE in a tiny random Hugging Face Llama: training-free, exact where it must be."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="needs the hf extra")

from multipos.llm import (  # noqa: E402
    apply_hirope,
    code_hierarchy,
    hirope_continuation,
    hirope_positions,
)

B, L, VOCAB = 2, 14, 61


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, L), generator=torch.Generator().manual_seed(1))


def levels(token: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    return torch.stack((token.expand(B, L), block.expand(B, L)))


def split_positions() -> torch.Tensor:
    flat = torch.arange(L)
    return levels(flat % 5, flat // 5)


@torch.no_grad()
def test_block_zero_and_token_only_split_equal_the_model(model) -> None:
    reference = model(ids()).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_hirope(model, sections=(4, 0))
    pos = levels(torch.arange(L), torch.zeros(L, dtype=torch.long))
    torch.testing.assert_close(model(ids(), position_ids=pos).logits, reference, atol=0, rtol=0)
    # no parameter added, none changed
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    handle.remove()


@torch.no_grad()
def test_hierarchical_positions_change_outputs_and_remove_restores(model) -> None:
    reference = model(ids()).logits
    handle = apply_hirope(model)
    hier = model(ids(), position_ids=split_positions()).logits
    assert not torch.allclose(hier, reference, atol=1e-5)
    # 2-D (or no) position_ids still run the unmodified model
    torch.testing.assert_close(model(ids()).logits, reference, atol=0, rtol=0)
    handle.remove()
    torch.testing.assert_close(model(ids()).logits, reference, atol=0, rtol=0)


@torch.no_grad()
def test_kv_cache_steps_match_the_full_forward(model) -> None:
    handle = apply_hirope(model)
    pos = split_positions()
    full = model(ids(), position_ids=pos).logits
    head = model(ids()[:, :9], position_ids=pos[..., :9], use_cache=True)
    tail = model(ids()[:, 9:], position_ids=pos[..., 9:], past_key_values=head.past_key_values)
    torch.testing.assert_close(tail.logits, full[:, 9:], atol=1e-4, rtol=1e-4)
    handle.remove()


@torch.no_grad()
def test_window_path(model) -> None:
    reference = model(ids()).logits
    pos = split_positions()
    handle = apply_hirope(model)
    hier = model(ids(), position_ids=pos).logits
    handle.remove()
    # a window covering the whole sequence is flat RoPE: the unmodified model
    handle = apply_hirope(model, window=L)
    torch.testing.assert_close(
        model(ids(), position_ids=pos).logits, reference, atol=1e-5, rtol=1e-5
    )
    handle.remove()
    # window 1 keeps only i == j flat, where both schemes agree: plain HiRoPE
    handle = apply_hirope(model, window=1)
    torch.testing.assert_close(model(ids(), position_ids=pos).logits, hier, atol=1e-5, rtol=1e-5)
    handle.remove()
    handle = apply_hirope(model, window=4)
    mixed = model(ids(), position_ids=pos).logits
    assert not torch.allclose(mixed, hier, atol=1e-5)
    assert not torch.allclose(mixed, reference, atol=1e-5)
    # tokens before any far pair exists see flat RoPE only
    torch.testing.assert_close(mixed[:, :4], reference[:, :4], atol=1e-5, rtol=1e-5)
    out = model(ids()[:, :5], position_ids=pos[..., :5], use_cache=True)
    with pytest.raises(ValueError, match="no KV cache"):
        model(ids()[:, 5:], position_ids=pos[..., 5:], past_key_values=out.past_key_values)
    handle.remove()
    assert model.config._attn_implementation != "multipos_hirope_window"


@torch.no_grad()
def test_positions_from_source_code(model) -> None:
    source = "def f(x):\n    return x\n\nclass A:\n    y = 1\n"
    n = len(source)
    offsets = torch.stack((torch.arange(n), torch.arange(1, n + 1)), dim=1)
    pos = hirope_positions(code_hierarchy(source), offsets)
    handle = apply_hirope(model)
    tokens = torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(2))
    logits = model(tokens, position_ids=pos.unsqueeze(1)).logits
    assert logits.shape == (1, n, VOCAB) and bool(torch.isfinite(logits).all())
    handle.remove()


def test_bad_inputs_raise(model) -> None:
    with pytest.raises(TypeError, match="Llama"):
        apply_hirope(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sections"):
        apply_hirope(model, sections=(3, 3))
    with pytest.raises(ValueError, match="levels"):
        apply_hirope(model, levels=1)
    with pytest.raises(ValueError, match="window"):
        apply_hirope(model, window=-2)
    handle = apply_hirope(model)
    with pytest.raises(ValueError, match="levels=2"):
        model(ids(), position_ids=torch.zeros(3, B, L, dtype=torch.long))
    handle.remove()


@torch.no_grad()
def test_generate_continues_the_last_block(model) -> None:
    handle = apply_hirope(model)
    pos = split_positions()
    out = model.generate(
        ids(),
        attention_mask=torch.ones(B, L, dtype=torch.long),
        position_ids=pos,
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=0,
    )
    # reference: full forwards without cache, generated tokens extend the last block
    seq, p = ids(), pos
    for _ in range(3):
        nxt = model(seq, position_ids=p).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat((seq, nxt), dim=1)
        p = torch.cat((p, hirope_continuation(p, 1)), dim=-1)
    assert torch.equal(out, seq)
    assert p[1, 0, -3:].tolist() == [pos[1, 0, -1].item()] * 3
    assert p[0, 0, -3:].tolist() == [pos[0, 0, -1].item() + k for k in (1, 2, 3)]
    handle.remove()
    assert "_update_model_kwargs_for_generation" not in vars(model)


@torch.no_grad()
def test_three_levels(model) -> None:
    source = "def f(x):\n    y = x\n    return y\n\nclass A:\n    z = 1\n"
    n = len(source)
    offsets = torch.stack((torch.arange(n), torch.arange(1, n + 1)), dim=1)
    pos = hirope_positions(code_hierarchy(source), offsets, levels=3).unsqueeze(1)
    tokens = torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(3))
    reference = model(tokens).logits
    handle = apply_hirope(model, levels=3, sections=(2, 1, 1))
    out = model(tokens, position_ids=pos).logits
    assert bool(torch.isfinite(out).all()) and not torch.allclose(out, reference, atol=1e-5)
    handle.remove()
