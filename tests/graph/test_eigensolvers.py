"""The sign / phase convention of the eigenvector PEs, checked on the function itself."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
from hypothesis import given
from hypothesis import strategies as st

from multipos.graph.eigensolvers import TIE_TOL, canonicalize_phase

seeds = st.integers(0, 10_000)


def _complex_vectors(seed: int, n: int = 6, k: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(1, n, k, 2, generator=g, dtype=torch.float64)
    return torch.view_as_complex(v)  # (1, N, K)


@given(seeds, st.lists(st.floats(-math.pi, math.pi), min_size=3, max_size=3))
def test_phase_invariant_and_anchor_real_positive(seed, angles) -> None:
    v = _complex_vectors(seed)
    phase = torch.polar(
        torch.ones(3, dtype=torch.float64), torch.tensor(angles, dtype=torch.float64)
    )
    out = canonicalize_phase(v)
    torch.testing.assert_close(canonicalize_phase(v * phase), out)
    anchor = out.abs().argmax(dim=1, keepdim=True)
    a = out.gather(1, anchor)
    assert (a.real > 0).all()
    torch.testing.assert_close(a.imag, torch.zeros_like(a.imag), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.abs(), v.abs())  # a unit factor per column


@given(seeds)
def test_commutes_with_conjugation(seed) -> None:
    v = _complex_vectors(seed)
    torch.testing.assert_close(canonicalize_phase(v.conj()), canonicalize_phase(v).conj())


@given(seeds)
def test_real_vectors_only_flip_sign(seed) -> None:
    v = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = canonicalize_phase(v)
    torch.testing.assert_close(out, canonicalize_phase(-v))
    assert ((out == v) | (out == -v)).all(dim=1).all()


def test_ties_go_to_the_lowest_node_and_zero_columns_stay_zero() -> None:
    v = torch.tensor([[[-1.0, 0.0], [1.0 - TIE_TOL / 2, 0.0], [0.5, 0.0]]])  # (1, N=3, K=2)
    out = canonicalize_phase(v)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.0, -(1.0 - TIE_TOL / 2), -0.5]))
    assert torch.equal(out[0, :, 1], torch.zeros(3))
    # Outside the tolerance the larger magnitude wins, wherever it is.
    w = torch.tensor([[[-1.0], [1.0 + 10 * TIE_TOL]]])
    assert canonicalize_phase(w)[0, 1, 0] > 0
