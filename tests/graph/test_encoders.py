from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch

import multipos
import multipos.graph
from multipos.graph import (
    DirectionalRandomWalkBias,
    LaplacianPEEncoder,
    MagneticLaplacianPEEncoder,
)

GRAPH_SCHEMES = {
    "laplacian_pe_encoder": LaplacianPEEncoder,
    "magnetic_laplacian_pe_encoder": MagneticLaplacianPEEncoder,
    "directional_random_walk_bias": DirectionalRandomWalkBias,
}


def test_registered() -> None:
    assert set(GRAPH_SCHEMES) <= set(multipos.list_schemes())


def test_registry_names_are_the_module_names_and_clash_with_no_function() -> None:
    graph_names = {n for n in multipos.list_schemes() if multipos.get_scheme(n).domain == "graph"}
    assert graph_names == set(GRAPH_SCHEMES)
    # ``laplacian_pe`` is the function that computes the PE, never a registered encoder.
    assert not graph_names & set(multipos.graph.__all__)
    for name, cls in GRAPH_SCHEMES.items():
        assert multipos.get_scheme(name).factory is cls


@pytest.mark.parametrize("name", sorted(GRAPH_SCHEMES))
def test_create_scheme_uses_the_module_defaults(name: str) -> None:
    cls = GRAPH_SCHEMES[name]
    sizes = {"num_features": 4, "num_heads": 2} if name.endswith("bias") else {"k": 3, "out_dim": 5}
    built = multipos.create_scheme(name, **sizes)
    assert type(built) is cls
    assert built.hidden_dim == cls(**sizes).hidden_dim == 32
    with pytest.raises(TypeError, match="hidden_dim"):
        multipos.create_scheme(name, hidden=8, **sizes)


def test_laplacian_encoder_sign_invariant_and_masked() -> None:
    torch.manual_seed(0)
    enc = LaplacianPEEncoder(k=4, out_dim=8)
    v = torch.randn(6, 4)
    lam = torch.rand(4).expand(6, 4)
    mask = torch.tensor([True, True, True, False]).expand(6, 4)
    out = enc(v, lam, mask)
    flips = torch.tensor([1.0, -1.0, -1.0, 1.0])
    torch.testing.assert_close(enc(v * flips, lam, mask), out)
    v2 = v.clone()
    v2[:, 3] = 123.0  # masked column: ignored
    torch.testing.assert_close(enc(v2, lam, mask), out)
    assert out.shape == (6, 8)
    with pytest.raises(ValueError, match="K=4"):
        enc(torch.randn(6, 5), lam, mask)


def test_magnetic_encoder_sign_invariant() -> None:
    torch.manual_seed(0)
    enc = MagneticLaplacianPEEncoder(k=3, out_dim=5, num_q=2)
    re, im = torch.randn(7, 2, 3), torch.randn(7, 2, 3)
    lam = torch.rand(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = enc(re, im, lam, mask)
    flips = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    torch.testing.assert_close(enc(re * flips, im * flips, lam, mask), out)
    assert out.shape == (7, 5)
    with pytest.raises(ValueError, match="Q=2"):
        enc(re[:, :1], im[:, :1], lam, mask)


def test_random_walk_bias_shape() -> None:
    bias = DirectionalRandomWalkBias(num_features=4, num_heads=3)
    x = torch.rand(2, 5, 5, 4)
    assert bias(x).shape == (2, 3, 5, 5)
    # pair (u, v) = (1, 2) of graph 0 lands at [0, :, 1, 2] (not transposed)
    torch.testing.assert_close(bias(x)[0, :, 1, 2], bias.mlp(x[0, 1, 2]))
    with pytest.raises(ValueError, match="F=4"):
        bias(torch.rand(2, 5, 5, 3))
    with pytest.raises(ValueError, match="positive"):
        DirectionalRandomWalkBias(0, 2)
