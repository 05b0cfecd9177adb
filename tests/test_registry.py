"""Scheme registry."""

from __future__ import annotations

import pytest
from torch import nn

import multipos
from multipos import registry


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_list_and_pattern() -> None:
    names = multipos.list_schemes()
    assert names == sorted(names)
    assert {"rope", "rope_linear", "rope_ntk", "rope_yarn", "rope_axial_2d", "lff"} <= set(names)
    assert all(n.startswith("rope") for n in multipos.list_schemes("rope*"))
    assert multipos.list_schemes("nothing*") == []


def test_create_passes_kwargs() -> None:
    rope = multipos.create_scheme("rope_yarn", dim=16, factor=4.0, original_length=32)
    assert isinstance(rope, multipos.RotaryEmbedding)
    assert rope.scaling.kind == "yarn" and rope.scaling.factor == 4.0


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="Did you mean 'rope_yarn'") as info:
        multipos.create_scheme("rope_yarm", dim=8)
    assert "rope_axial_2d" in str(info.value)


def test_unknown_kwarg_lists_valid_ones() -> None:
    with pytest.raises(TypeError, match="valid keywords: base, dim, factor, layout") as info:
        multipos.create_scheme("rope_linear", dim=8, factor=2.0, theta=5.0)
    assert "theta" in str(info.value)


def test_register_decorator_duplicates_and_overwrite(clean_registry) -> None:
    @multipos.register_scheme("toy_scheme", paper="Toy (Nobody, 2020)", summary="toy")
    def toy(width: int = 2) -> nn.Module:
        return nn.Linear(width, width)

    assert "toy_scheme" in multipos.list_schemes()
    assert multipos.create_scheme("toy_scheme", width=3).in_features == 3
    with pytest.raises(ValueError, match="already registered"):
        multipos.register_scheme("toy_scheme", toy, paper="p 2020", summary="s")
    multipos.register_scheme("toy_scheme", toy, paper="p 2021", summary="s", overwrite=True)
    assert multipos.get_scheme("toy_scheme").paper == "p 2021"


@pytest.mark.parametrize("name", ["Rope", "rope-2d", "", "_hidden"])
def test_bad_names(name, clean_registry) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        multipos.register_scheme(name, nn.Identity, paper="p 2020", summary="s")
