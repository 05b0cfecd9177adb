"""GTA attention outside autograd writes its transformed q, k, v into buffers kept on the
representation (reused by every call and layer that shares it); nothing a caller sees may
change because of that, and autograd never sees a reused buffer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import multipos
from multipos import GTARepresentation
from multipos.group_sections import _IN_PLACE_RUN
from tests.test_group_sections import _block_diag, _blocks

HEAD_DIM = 4 * 2 + 8 + 2  # SE(3), SO(2), identity


def _rep(dtype: torch.dtype = torch.float32) -> GTARepresentation:
    g = torch.Generator().manual_seed(0)
    blocks = [b.to(dtype) for b in _blocks(_IN_PLACE_RUN, 2, 2, g)]
    return GTARepresentation.from_blocks(blocks, HEAD_DIM, kinds=["rigid", "rotation"])


def _qkv(seed: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 2 * _IN_PLACE_RUN, HEAD_DIM)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]


def _reference(rep: GTARepresentation, q, k, v) -> torch.Tensor:
    """GTA Eq. (5) with dense matrices: rho^-1 SDPA(rho^-T q, rho k, rho v)."""
    dense = _block_diag(_blocks(_IN_PLACE_RUN, 2, 2, torch.Generator().manual_seed(0)), HEAD_DIM)
    inv = torch.linalg.inv(dense)

    def act(mats, x):
        return torch.einsum("blij,bhlj->bhli", mats.to(x.dtype), x)

    out = torch.nn.functional.scaled_dot_product_attention(
        act(inv.mT, q), act(dense, k), act(dense, v)
    )
    return act(inv, out)


def test_reused_buffers_leave_earlier_outputs_alone() -> None:
    rep = _rep()
    first_in, second_in = _qkv(1), _qkv(2)
    with torch.no_grad():
        first = multipos.attention(*first_in, gta=rep)
        kept = first.clone()
        buffers = {k: b.data_ptr() for k, b in rep._workspace.items()}
        second = multipos.attention(*second_in, gta=rep)
    assert len(buffers) == 2  # q, and k with v side by side
    assert {k: b.data_ptr() for k, b in rep._workspace.items()} == buffers  # reused
    assert torch.equal(first, kept)
    for out, inputs in ((first, first_in), (second, second_in)):
        torch.testing.assert_close(out, _reference(rep, *inputs), atol=2e-5, rtol=1e-5)
        assert all(b.data_ptr() != out.data_ptr() for b in rep._workspace.values())


def test_inputs_are_never_written() -> None:
    rep, inputs = _rep(), _qkv(3)
    copies = [t.clone() for t in inputs]
    with torch.no_grad():
        multipos.attention(*inputs, gta=rep)
    assert all(torch.equal(a, b) for a, b in zip(inputs, copies, strict=True))


def test_autograd_gets_fresh_tensors() -> None:
    rep = _rep(torch.float64)
    q, k, v = (t.requires_grad_() for t in _qkv(4, torch.float64))
    out = multipos.attention(q, k, v, gta=rep)
    assert not rep._workspace
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    refs = torch.autograd.grad(_reference(rep, q, k, v).square().sum(), (q, k, v))
    for got, ref in zip(grads, refs, strict=True):
        torch.testing.assert_close(got, ref)
    with torch.no_grad():
        torch.testing.assert_close(multipos.attention(q, k, v, gta=rep), out)


def test_inference_mode_and_no_grad_keep_separate_buffers() -> None:
    rep, inputs = _rep(), _qkv(5)
    with torch.inference_mode():
        a = multipos.attention(*inputs, gta=rep)
    with torch.no_grad():
        b = multipos.attention(*inputs, gta=rep)  # would raise if it wrote an inference tensor
    assert torch.equal(a, b)
    assert len(rep._workspace) == 4


@pytest.mark.parametrize("entry", ["attention", "gta_attention"])
def test_threads_sharing_a_representation_get_their_own_buffers(entry) -> None:
    rep = _rep()
    inputs = [_qkv(10 + i) for i in range(8)]

    def run(qkv):
        with torch.no_grad():
            if entry == "attention":
                return multipos.attention(*qkv, gta=rep)
            return multipos.gta_attention(*qkv, rep)

    serial = [run(qkv) for qkv in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            together = list(pool.map(run, inputs))
            assert all(torch.equal(a, b) for a, b in zip(serial, together, strict=True))


def test_odd_offsets_and_odd_strides_take_the_general_path() -> None:
    rep = _rep(torch.float64)
    q, k, v = _qkv(6, torch.float64)
    wide = torch.randn(*q.shape[:-1], HEAD_DIM + 1, dtype=torch.float64)
    wide[..., 1:] = q
    shifted = wide[..., 1:]  # storage offset 1, row stride D + 1: no complex view
    assert shifted.storage_offset() % 2 == 1
    with torch.no_grad():
        torch.testing.assert_close(
            multipos.attention(shifted, k, v, gta=rep), multipos.attention(q, k, v, gta=rep)
        )
        torch.testing.assert_close(
            rep.apply_inverse_transpose(shifted), rep.apply_inverse_transpose(q)
        )


def _grid_rep() -> GTARepresentation:
    coords = torch.rand(1, 2 * _IN_PLACE_RUN, 2, generator=torch.Generator().manual_seed(7))
    return GTARepresentation.from_angles(multipos.so2_angles(coords, HEAD_DIM // 4), HEAD_DIM)


@pytest.mark.parametrize("kind", ["se3_so2", "so2_whole"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "token_major"])
def test_keys_and_values_in_one_buffer_equal_apart(kind, dtype, layout) -> None:
    rep = _rep(dtype) if kind == "se3_so2" else _grid_rep()
    _, k, v = _qkv(20, dtype)
    if layout == "token_major":  # as a ViT's qkv projection lays them out
        k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (k, v))
    apart = rep.apply(k), rep.apply(v)  # grad enabled: fresh tensors, one each
    copies = k.clone(), v.clone()
    with torch.no_grad():
        together = rep._act_keys_values(k, v)
        ptr = together[0].data_ptr()
        again = rep._act_keys_values(k, v)
    for got, ref in zip(together, apart, strict=True):
        assert torch.equal(got, ref)
    # one buffer, the halves side by side, reused by the next call; inputs untouched
    assert together[1].data_ptr() == ptr + k.shape[1] * k[0, 0].numel() * k.element_size()
    assert again[0].data_ptr() == ptr
    assert torch.equal(k, copies[0]) and torch.equal(v, copies[1])


def test_keys_and_values_that_differ_go_apart() -> None:
    rep = _rep(torch.float64)
    _, k, v = _qkv(21, torch.float64)
    with torch.no_grad():
        got_k, got_v = rep._act_keys_values(k, v.float())
    assert got_v.dtype == torch.float32
    assert torch.equal(got_k, rep.apply(k))
    torch.testing.assert_close(got_v, rep.apply(v).float())
    assert not any(key[0] == "kv" for key in rep._workspace)
