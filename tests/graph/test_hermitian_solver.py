"""The compiled solver of small complex Hermitian problems (small_kernels.hermitian_eigh):
the eigenvalues of LAPACK to rounding, residuals and orthonormality at machine precision on
the matrices it meets (magnetic Laplacians, with repeated eigenvalues and isolated nodes), the
same bits whatever the memory address or the number of columns asked for."""

from __future__ import annotations

import numpy as np
import pytest

from multipos.graph import small_kernels
from multipos.graph.small_kernels import hermitian_eigh

pytestmark = pytest.mark.skipif(
    not small_kernels.available(), reason="the C module is not built (no compiler at install)"
)


def _magnetic(adj: np.ndarray, q: float) -> np.ndarray:
    """I - D^-1/2 (A_s * exp(i 2 pi q S)) D^-1/2 of a directed 0/1 adjacency."""
    sym = np.maximum(adj, adj.T)
    deg = sym.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    phase = np.exp(2j * np.pi * q * (adj - adj.T))
    lap = -(dinv[:, None] * sym * phase) * dinv
    lap[np.diag_indices_from(lap)] = np.where(deg > 0, 1.0, 3.0)
    return lap


def _matrices() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    mats = []
    for n in [1, 2, 3, 5, 17, 40, 96]:
        adj = np.triu(rng.random((n, n)) < 3.0 / max(n, 2), 1).astype(float)
        flip = rng.random((n, n)) < 0.5
        adj = np.where(flip, adj, 0) + np.where(flip, 0, adj).T
        mats.append(_magnetic(adj, 0.25))
    for n in [9, 15, 21]:  # directed odd cycles: repeated eigenvalues
        ring = np.zeros((n, n))
        ring[np.arange(n), (np.arange(n) + 1) % n] = 1.0
        mats.append(_magnetic(ring, 0.1))
        mats.append(_magnetic(ring + ring.T, 0.1))  # undirected: real, doubly degenerate
    block = mats[4]
    mats.append(np.kron(np.eye(3), block))  # three copies: every eigenvalue three times
    noise = rng.standard_normal((30, 30)) + 1j * rng.standard_normal((30, 30))
    mats.append(noise + noise.conj().T)  # a dense Hermitian matrix
    return mats


def test_eigenpairs_to_machine_precision() -> None:
    for mat in _matrices():
        n = mat.shape[0]
        for count in sorted({1, min(8, n), n}):
            vals, vecs = hermitian_eigh(mat, count)
            ref = np.linalg.eigvalsh(mat)
            scale = max(1.0, np.abs(ref).max())
            assert vecs.shape == (n, count)
            assert np.abs(vals - ref).max() <= 1e-13 * scale
            residual = mat @ vecs - vecs * vals[:count]
            assert np.abs(residual).max() <= 1e-13 * scale, (n, count)
            gram = vecs.conj().T @ vecs
            assert np.abs(gram - np.eye(count)).max() <= 1e-13, (n, count)


def _hard_matrices() -> list[np.ndarray]:
    """Spectra that defeat plain inverse iteration: an eigenvalue of multiplicity N - 1
    (complete graph), a star, twelve copies of one graph, and sparse random graphs with
    isolated nodes and components that the reduction couples only by rounding (tiny, not
    zero, off-diagonals)."""
    rng = np.random.default_rng(2)
    mats = []
    for q in (0.0, 0.25):
        mats.append(_magnetic(np.ones((40, 40)) - np.eye(40), q))
        star = np.zeros((50, 50))
        star[0, 1:] = 1.0
        mats.append(_magnetic(star, q))
        small = np.triu(rng.random((8, 8)) < 0.4, 1).astype(float)
        mats.append(np.kron(np.eye(12), _magnetic(small, q)))
    for _ in range(150):
        n = int(rng.integers(10, 97))
        adj = (rng.random((n, n)) < 0.02).astype(float)
        np.fill_diagonal(adj, 0.0)
        mats.append(_magnetic(adj, float(rng.choice([0.0, 0.05, 0.5]))))
    return mats


def test_repeated_and_nearly_repeated_eigenvalues() -> None:
    for mat in _hard_matrices():
        n = mat.shape[0]
        for count in (min(8, n), n):
            vals, vecs = hermitian_eigh(mat, count)
            assert np.abs(vals - np.linalg.eigvalsh(mat)).max() <= 1e-13 * 3
            assert np.abs(mat @ vecs - vecs * vals[:count]).max() <= 1e-13 * 3, n
            assert np.abs(vecs.conj().T @ vecs - np.eye(count)).max() <= 1e-12, n


def test_same_bits_at_any_address_and_for_any_column_count() -> None:
    for mat in _matrices()[3:]:
        n = mat.shape[0]
        vals, vecs = hermitian_eigh(mat, n)
        storage = np.zeros(n * n * 2 + 1, dtype=np.complex128)
        moved = storage[1 : 1 + n * n].reshape(n, n)  # another address
        moved[:] = mat
        again_vals, again = hermitian_eigh(moved, 3)
        assert np.array_equal(vals, again_vals)
        assert np.array_equal(vecs[:, :3], again)


def test_non_finite_input_goes_to_lapack() -> None:
    mat = _matrices()[4].copy()
    mat[0, 0] = np.nan
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.eigh(mat)
    with pytest.raises(np.linalg.LinAlgError):
        hermitian_eigh(mat, 2)


def test_larger_or_real_problems_go_to_lapack() -> None:
    rng = np.random.default_rng(1)
    big = rng.standard_normal((97, 97)) + 0j
    big = big + big.T
    vals, vecs = hermitian_eigh(big, 4)
    ref_vals, ref_vecs = np.linalg.eigh(big)
    assert np.array_equal(vals, ref_vals) and np.array_equal(vecs, ref_vecs[:, :4])
