"""Learnable Fourier features (Li et al., 2021)."""

from __future__ import annotations

import math

import pytest
import torch

from multipos import LearnableFourierFeatures


def test_frequency_init_has_std_one_over_gamma() -> None:
    g = torch.Generator().manual_seed(0)
    lff = LearnableFourierFeatures(2, 32, num_features=4096, gamma=10.0, generator=g)
    assert lff.freqs.std().item() == pytest.approx(0.1, rel=0.05)
    assert lff.freqs.mean().abs().item() < 0.01


def test_generator_makes_init_reproducible() -> None:
    a = LearnableFourierFeatures(2, 16, generator=torch.Generator().manual_seed(3))
    b = LearnableFourierFeatures(2, 16, generator=torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_features_follow_equation() -> None:
    lff = LearnableFourierFeatures(2, 8, num_features=6, hidden_dim=5)
    pos = torch.rand(2, 4)
    x = pos.t()
    proj = x @ lff.freqs.t()
    feats = torch.cat((proj.cos(), proj.sin()), -1) / math.sqrt(6)
    torch.testing.assert_close(lff(pos), lff.mlp(feats))


def test_any_resolution_and_same_position_same_code() -> None:
    lff = LearnableFourierFeatures(2, 16)
    coarse = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    fine = torch.tensor([[0.25, 0.3, 0.75], [0.5, 0.1, 0.5]])
    a, b = lff(coarse), lff(fine)
    assert a.shape == (2, 16) and b.shape == (3, 16)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[2])


def test_groups_concatenate_shared_mlp_outputs() -> None:
    lff = LearnableFourierFeatures(3, 12, groups=2, num_features=8, hidden_dim=4)
    pos = torch.rand(2, 3, 5, 7)  # (G, M, batch, L)
    out = lff(pos)
    assert out.shape == (5, 7, 12)
    single = LearnableFourierFeatures(3, 6, num_features=8, hidden_dim=4)
    single.load_state_dict(lff.state_dict())
    torch.testing.assert_close(out[..., 6:], single(pos[1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_features": 7}, "even"),
        ({"groups": 3}, "divisible"),
        ({"gamma": 0.0}, "gamma"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LearnableFourierFeatures(2, 16, **kwargs)


def test_bad_positions() -> None:
    with pytest.raises(ValueError, match=r"\(M=2, \.\.\., L\)"):
        LearnableFourierFeatures(2, 16)(torch.zeros(3, 5))
