"""The compiled one-pass GTA transform (multipos.group_native) against the torch operations it
replaces and against the dense block-diagonal product, on every section kind, mode, dtype and
memory layout it accepts; and the cases it must leave to the torch path."""

from __future__ import annotations

import pytest
import torch

import multipos
from multipos import GTARepresentation, group_native
from tests.test_group_sections import _blocks, _reference
from tests.test_groups import _block_diag

pytestmark = pytest.mark.skipif(
    not group_native.available(), reason="the C kernel is not built (no compiler at install)"
)

MODES = ["rho", "inverse", "transpose", "inverse_transpose"]
APPLY = {
    "rho": "apply",
    "inverse": "apply_inverse",
    "transpose": "apply_transpose",
    "inverse_transpose": "apply_inverse_transpose",
}


def _torch_path(monkeypatch: pytest.MonkeyPatch, fn):
    with monkeypatch.context() as m:
        m.setattr(group_native, "_ENABLED", False)
        return fn()


def _general(count: int, size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Well-conditioned general blocks ``(1, L, count, size, size)``, distinct per block."""
    noise = torch.randn(1, length, count, size, size, generator=generator, dtype=torch.float64)
    return torch.eye(size, dtype=torch.float64) + 0.3 * noise


def _so2(pairs: int, length: int, generator: torch.Generator, batch: int = 1) -> torch.Tensor:
    coords = torch.rand(batch, length, 1, generator=generator, dtype=torch.float64) * 7
    return multipos.so2_blocks(coords, pairs)


def _cases(length: int, generator: torch.Generator):
    """(name, blocks, kinds, head_dim): every section kind the kernel has a loop for."""
    se3_so2 = _blocks(length // 2, 2, 8, generator)
    return [
        ("se3_so2_identity", se3_so2, ["rigid", "rotation"], 32 + 8 + 6),
        ("odd_4x4_general", [_general(3, 4, length, generator)], ["general"], 12),
        (
            "3x3_then_so2",
            [_general(2, 3, length, generator), _so2(5, length, generator)],
            ["general", "rotation"],
            6 + 10 + 1,
        ),
        (
            "so2_odd_pairs",
            [_so2(3, length, generator), _so2(1, length, generator)],
            ["rotation", "rotation"],
            9,
        ),
        (
            "per_batch_so2_then_se3",
            [_so2(4, length, generator, batch=2), _blocks(length // 2, 2, 1, generator)[0]],
            ["rotation", "rigid"],
            8 + 4,
        ),
    ]


def _input(shape, layout: str, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    bsz, heads, length, dim = shape
    if layout == "token_major":
        x = torch.randn(bsz, length, heads, dim, generator=generator, dtype=dtype)
        return x.transpose(1, 2)
    if layout == "strided_rows":  # rows farther apart than D (a slice of a wider tensor)
        return torch.randn(bsz, heads, length, dim + 3, generator=generator, dtype=dtype)[..., :dim]
    return torch.randn(shape, generator=generator, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "token_major", "strided_rows"])
def test_kernel_equals_the_torch_path_and_the_dense_product(monkeypatch, dtype, layout) -> None:
    g = torch.Generator().manual_seed(1)
    length = 6
    for name, blocks, kinds, head_dim in _cases(length, g):
        blocks = [b.to(dtype) for b in blocks]
        rep = GTARepresentation.from_blocks(blocks, head_dim, kinds=kinds)
        x = _input((2, 3, length, head_dim), layout, dtype, g)
        dense = _block_diag([b.double() for b in blocks], head_dim)
        for mode in MODES:
            calls = []
            real_write = group_native.write

            def spy(*args, _calls=calls, _write=real_write):
                _calls.append(_write(*args))
                return _calls[-1]

            monkeypatch.setattr(group_native, "write", spy)
            got = getattr(rep, APPLY[mode])(x)
            monkeypatch.setattr(group_native, "write", real_write)
            assert calls == [True], (name, mode)
            want = _torch_path(
                monkeypatch, lambda rep=rep, mode=mode, x=x: getattr(rep, APPLY[mode])(x)
            )
            tol = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {}
            torch.testing.assert_close(got, want, **tol, msg=f"{name} {mode}")
            ref = _reference(dense, x.double(), mode).to(dtype)
            torch.testing.assert_close(got, ref, msg=f"{name} {mode} dense")


def test_in_place_on_an_owned_output_and_inputs_untouched() -> None:
    g = torch.Generator().manual_seed(2)
    _, blocks, kinds, head_dim = _cases(6, g)[0]
    rep = GTARepresentation.from_blocks(blocks, head_dim, kinds=kinds)
    x = torch.randn(2, 3, 6, head_dim, generator=g)
    kept = x.clone()
    out = rep.apply_inverse(x)
    assert torch.equal(x, kept)
    owned = x.clone()
    result = rep._act(owned, "inverse", "output", owned=True)
    assert result.data_ptr() == owned.data_ptr()
    assert torch.equal(result, out)


def test_attention_matches_the_torch_path(monkeypatch) -> None:
    g = torch.Generator().manual_seed(3)
    _, blocks, kinds, head_dim = _cases(64, g)[0]
    rep = GTARepresentation.from_blocks(blocks, head_dim, kinds=kinds)
    q, k, v = (torch.randn(2, 4, 64, head_dim, generator=g) for _ in range(3))
    with torch.no_grad():
        got = multipos.attention(q, k, v, gta=rep)
        fresh = GTARepresentation.from_blocks(blocks, head_dim, kinds=kinds)
        want = _torch_path(monkeypatch, lambda: multipos.attention(q, k, v, gta=fresh))
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-6)


def test_autograd_goes_through_the_kernel_in_its_action(monkeypatch) -> None:
    g = torch.Generator().manual_seed(4)
    _, blocks, kinds, head_dim = _cases(6, g)[0]
    rep = GTARepresentation.from_blocks([b.double() for b in blocks], head_dim, kinds=kinds)
    x = torch.randn(2, 3, 6, head_dim, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rep.apply_inverse_transpose, (x,))
    got = torch.autograd.grad(rep.apply(x).square().sum(), x)[0]
    want = _torch_path(monkeypatch, lambda: torch.autograd.grad(rep.apply(x).square().sum(), x)[0])
    torch.testing.assert_close(got, want)


def test_what_the_kernel_leaves_to_torch() -> None:
    g = torch.Generator().manual_seed(5)
    _, blocks, kinds, head_dim = _cases(6, g)[0]
    rep = GTARepresentation.from_blocks([b.float() for b in blocks], head_dim, kinds=kinds)
    tables = rep._kernel_tables
    x = torch.randn(2, 3, 6, head_dim, generator=g)
    dest = torch.empty_like(x)
    sections = rep.sections
    assert group_native.write(tables, sections, "rho", x, dest)
    # other dtypes, tables in another dtype, channels not contiguous, autograd recording
    assert not group_native.write(tables, sections, "rho", x.bfloat16(), dest.bfloat16())
    assert not group_native.write(tables, sections, "rho", x.double(), dest.double())
    strided = torch.randn(2, 3, 6, 2 * head_dim, generator=g)[..., ::2]
    assert not group_native.write(tables, sections, "rho", strided, dest)
    leaf = x.clone().requires_grad_()
    assert not group_native.write(tables, sections, "rho", leaf, dest)
    # one SO(2) section over the whole head stays RoPE's complex product
    whole = GTARepresentation.from_angles(torch.rand(1, 6, 4, generator=g), 8)
    assert whole._whole()


@pytest.mark.parametrize("heads", [1, 3])
def test_shares_on_several_threads_give_the_same_bits(monkeypatch, heads) -> None:
    # heads 1 < 2 threads: the batch is split (each share reads its own batch rows of the
    # tables); heads 3: the heads are split.
    g = torch.Generator().manual_seed(6)
    _, blocks, kinds, head_dim = _cases(6, g)[-1]  # per-batch tables
    rep = GTARepresentation.from_blocks([b.float() for b in blocks], head_dim, kinds=kinds)
    x = torch.randn(2, heads, 6, head_dim, generator=g)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = rep.apply_inverse(x)
        torch.set_num_threads(2)
        monkeypatch.setattr(group_native, "_PARALLEL_MIN", 1)
        assert len(group_native._parts(x)) == 2
        shared = rep.apply_inverse(x)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(whole, shared)
    want = _torch_path(monkeypatch, lambda: rep.apply_inverse(x))
    torch.testing.assert_close(shared, want)
