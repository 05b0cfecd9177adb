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
    rope = multipos.create_scheme("rope_yarn", head_dim=16, factor=4.0, original_length=32)
    assert isinstance(rope, multipos.RotaryEmbedding)
    assert rope.scaling.kind == "yarn" and rope.scaling.factor == 4.0


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="Did you mean 'rope_yarn'") as info:
        multipos.create_scheme("rope_yarm", head_dim=8)
    assert "rope_axial_2d" in str(info.value)


def test_unknown_kwarg_lists_valid_ones() -> None:
    with pytest.raises(TypeError, match="valid keywords: base, factor, head_dim, layout") as info:
        multipos.create_scheme("rope_linear", head_dim=8, factor=2.0, theta=5.0)
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


def test_lff_defaults_are_the_module_signature() -> None:
    defaults = multipos.scheme_defaults("lff")
    assert (defaults["num_features"], defaults["hidden_dim"], defaults["gamma"]) == (128, 256, 0.1)
    lff = multipos.create_scheme("lff", num_axes=2, dim=8)
    assert lff.mlp[0].out_features == 256 and lff.gamma == 0.1


def test_integrations_attach_to_registered_names(clean_registry) -> None:
    multipos.register_scheme("toy_scheme", nn.Identity, paper="Toy (Nobody, 2020)", summary="t")
    assert "toy_scheme" not in multipos.list_schemes(integration="toyframework")
    multipos.register_integration("toy_scheme", "toyframework", {"k": 1}, usage="toy: use it")
    assert multipos.list_schemes(integration="toyframework") == ["toy_scheme"]
    entry = multipos.get_scheme("toy_scheme").integrations["toyframework"]
    assert entry.metadata == {"k": 1} and entry.usage == "toy: use it"
    with pytest.raises(ValueError, match="already has"):
        multipos.register_integration("toy_scheme", "toyframework", None, usage="again")
    with pytest.raises(ValueError, match="unknown scheme"):
        multipos.register_integration("toy_schem", "toyframework", None, usage="typo")
