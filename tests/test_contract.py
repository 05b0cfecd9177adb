"""Contract tests run on every registered scheme (core and every installed domain)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import multipos
from tests.conftest import import_domains

import_domains()
SCHEMES = multipos.list_schemes()


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    raise TypeError(f"scheme returned {type(out).__name__}, expected tensors")


def _build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[Any, ...]]:
    spec = multipos.get_scheme(name)
    torch.manual_seed(seed)
    module = multipos.create_scheme(name, **spec.tiny)
    assert spec.sample_inputs is not None, f"{name} registered without sample_inputs"
    args = spec.sample_inputs(module, torch.Generator().manual_seed(seed))
    return module, args


def _float_args(args: tuple[Any, ...], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(
        a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    )


def test_core_schemes_registered() -> None:
    expected = {"rope", "rope_linear", "rope_ntk", "rope_yarn", "rope_axial_2d", "lff"}
    assert expected <= set(SCHEMES)


@pytest.mark.parametrize("name", SCHEMES)
def test_metadata(name: str) -> None:
    spec = multipos.get_scheme(name)
    assert spec.paper and "20" in spec.paper, "paper must name at least a year"
    assert spec.summary
    assert spec.sample_inputs is not None


@pytest.mark.parametrize("name", SCHEMES)
def test_forward_backward(name: str) -> None:
    module, args = _build(name)
    args = tuple(
        a.detach().requires_grad_(True)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    )
    outs = _tensors(module(*args))
    assert outs and all(torch.isfinite(o).all() for o in outs)
    loss = sum(o.float().sum() for o in outs if o.is_floating_point())
    trainable = [p for p in module.parameters() if p.requires_grad]
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if not (trainable or leaves) or not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        pytest.skip(f"{name} has no differentiable path from its sample inputs")
    loss.backward()
    grads = [p.grad for p in trainable] + [a.grad for a in leaves]
    assert any(g is not None and torch.isfinite(g).all() for g in grads)


def _differ(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(x.shape != y.shape or not torch.allclose(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", SCHEMES)
def test_state_dict_round_trip(name: str) -> None:
    module, args = _build(name, seed=0)
    state = module.state_dict()
    if not state:
        pytest.skip(
            f"{name} has no parameters or persistent buffers: its state_dict is empty, so a "
            "round trip cannot show anything"
        )
    other, _ = _build(name, seed=1)
    # Another seed alone can leave a deterministic initialisation equal; move every float entry.
    noise = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in other.state_dict().values():
            if t.is_floating_point():
                t.add_(0.5 * torch.randn(t.shape, generator=noise).to(t.dtype))
    module.eval()
    other.eval()
    with torch.no_grad():
        expected = _tensors(module(*args))
        assert _differ(expected, _tensors(other(*args))), (
            f"{name}: outputs equal before loading, so the round trip would prove nothing"
        )
        other.load_state_dict(copy.deepcopy(state))
        loaded = _tensors(other(*args))
    for a, b in zip(expected, loaded, strict=True):
        torch.testing.assert_close(a, b)


# torch's default bfloat16 tolerance, relative to each output's largest entry: outputs pass
# through several bf16 roundings, so small entries carry errors of the large ones' size.
BF16_TOL = 1.6e-2


@pytest.mark.parametrize("name", SCHEMES)
def test_bfloat16(name: str) -> None:
    module, args = _build(name)
    module.eval()
    args16 = _float_args(args, torch.bfloat16)
    with torch.no_grad():
        # The float32 reference sees the same bf16-rounded inputs: only the module's arithmetic
        # and its bf16 parameters differ.
        reference = _tensors(module(*_float_args(args16, torch.float32)))
        outs = _tensors(module.to(torch.bfloat16)(*args16))
    assert all(torch.isfinite(o.float()).all() for o in outs)
    for out, ref in zip(outs, reference, strict=True):
        assert out.shape == ref.shape
        if not ref.is_floating_point():
            assert torch.equal(out, ref)
            continue
        scale = ref.abs().max().item()
        torch.testing.assert_close(
            out.to(ref.dtype), ref, rtol=0.0, atol=BF16_TOL * max(scale, 1e-6)
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", SCHEMES)
def test_compile_matches_eager(name: str) -> None:
    module, args = _build(name)
    module.eval()
    with torch.no_grad():
        eager = _tensors(module(*args))
        compiled = _tensors(torch.compile(module, fullgraph=True)(*args))
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
