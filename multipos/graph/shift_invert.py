r"""The lowest eigenpairs of one sparse Hermitian Laplacian of a few hundred nodes, by
shift-invert Lanczos on a sparse factorisation, checked by Sylvester's law of inertia.

For 97 to 2,000 nodes the dense subset solver (``?heevr``) of
:func:`~multipos.graph.medium.medium_eigenpairs` spends almost all its time reducing the whole
complex matrix to tridiagonal form, :math:`O(N^3)`, although only ``K`` pairs are kept. This
module computes them from a Krylov space of the inverted, shifted operator instead:

1. factor :math:`A = L + \varepsilon I` (Hermitian positive definite for a Laplacian, so no
   pivoting is needed) with SuperLU;
2. run Lanczos with full reorthogonalisation on :math:`A^{-1}` from a fixed start vector
   (seed 0), whose largest eigenvalues :math:`1 / (\lambda + \varepsilon)` belong to the
   smallest :math:`\lambda` of :math:`L` and are well separated from the rest;
3. take the Ritz vectors of the ``count + 1`` largest Ritz values, their Rayleigh quotients on
   :math:`L`, and accept the first ``count`` only if every residual
   :math:`\lVert L u - \lambda u \rVert` is below :data:`RESIDUAL_TOL` (relative to the
   spectral scale); the last one only places the cut, so its residual need only be below a
   quarter of the gap before it;
4. accept the set only if it is *all* of the spectrum below the cut: with :math:`\tau` halfway
   between the ``count``-th and the next Ritz value, the number of negative pivots of an
   :math:`L D L^{H}` factorisation of :math:`L - \tau I` (Sylvester's law of inertia) must be
   ``count``.

A single-vector Krylov space holds one vector per eigenspace, so a repeated eigenvalue (graphs
with symmetries: disjoint copies of one graph, trees, cycles, stars) would silently lose its
other copies; step 4 catches exactly that, and a cut inside a cluster (gap below
:data:`GAP_TOL`) is refused as well. Whenever a check fails, or Lanczos does not converge in
:data:`MAX_STEPS` steps, :func:`lowest_eigenpairs` returns ``None`` and the caller uses the
dense solver: the result is then the dense one, never a partial spectrum.

Every step is deterministic for a given matrix (fixed start vector, SuperLU and BLAS on one
thread, which the caller holds), so a graph gives the same bits wherever it is computed.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["GAP_TOL", "MAX_STEPS", "RESIDUAL_TOL", "hermitian_csc", "lowest_eigenpairs"]

#: Largest Krylov dimension before giving up (then the dense solver runs).
MAX_STEPS = 120
#: Accepted residual :math:`\lVert L u - \lambda u \rVert`, relative to the largest diagonal
#: entry of ``L`` (the spectral scale): about float64's accuracy of the dense solver.
RESIDUAL_TOL = 1e-10
#: Relative gap under which the cut after the ``count``-th eigenvalue is treated as falling
#: inside a repeated eigenvalue (then the dense solver decides the basis).
GAP_TOL = 1e-7
#: Shift :math:`\varepsilon`, relative to the spectral scale.
_SHIFT = 1e-4
#: Steps between convergence checks (the first after ``2 (count + 1)`` more steps).
_CHECK_EVERY = 4


def _factor(matrix: sp.csc_matrix, symmetric: bool) -> spla.SuperLU | None:
    """SuperLU of ``matrix`` with the diagonal as pivots (an :math:`LDL^H`-shaped factorisation
    when ``symmetric``), or ``None`` when a pivot is exactly zero."""
    try:
        return spla.splu(
            matrix,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": symmetric, "Equil": False, "PanelSize": 4, "Relax": 1},
        )
    except RuntimeError:  # "Factor is exactly singular"
        return None


def _count_below(lap: sp.csc_matrix, tau: float) -> int | None:
    """Eigenvalues of Hermitian ``lap`` below ``tau``, by the inertia of ``lap - tau I``
    (negative pivots of a factorisation with symmetric permutation and diagonal pivots)."""
    lu = _factor(_shifted(lap, tau), symmetric=True)
    if lu is None or not np.array_equal(lu.perm_r, lu.perm_c):
        return None  # not a congruence: no inertia to read
    return int(np.count_nonzero(lu.U.diagonal().real < 0.0))


def hermitian_csc(
    row: np.ndarray, col: np.ndarray, values: np.ndarray, diag: np.ndarray
) -> sp.csc_matrix:
    """CSC of the Hermitian matrix with off-diagonal entries ``values`` at ``(row, col)``
    (row-major, both triangles, no diagonal) and diagonal ``diag``: column ``j`` of a
    Hermitian matrix is the conjugate of its row ``j``, so the row-major lists are the
    column-major ones, conjugated."""
    n = diag.size
    key = np.concatenate([row, np.arange(n)])
    order = np.argsort(key, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(key, minlength=n), out=indptr[1:])
    indices = np.concatenate([col, np.arange(n)])[order].astype(np.int32)
    data = np.concatenate([values.conj(), diag.astype(values.dtype)])[order]
    return sp.csc_matrix((data, indices, indptr), shape=(n, n))


def lowest_eigenpairs(
    lap: sp.csc_matrix, count: int, scale: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``count`` lowest eigenpairs of Hermitian positive semi-definite ``lap`` ``(n, n)``
    (complex128 or float64, CSC), ascending: values ``(count,)`` and orthonormal vectors
    ``(n, count)``; ``None`` when the checks of this module's steps 3-4 fail (use the dense
    solver). ``scale`` is the spectral scale (the largest diagonal entry).
    """
    n = lap.shape[0]
    if count < 1 or count + 2 > n // 2:
        return None
    eps = _SHIFT * scale
    lu = _factor(_shifted(lap, -eps), symmetric=True)
    if lu is None:
        return None
    basis = np.empty((MAX_STEPS + 1, n), dtype=lap.dtype)  # rows: Lanczos vectors
    conj = np.empty_like(basis)  # their conjugates, for the projections
    start = np.random.default_rng(0).standard_normal(n)
    basis[0] = start / np.linalg.norm(start)
    conj[0] = basis[0].conj()
    alpha = np.empty(MAX_STEPS)
    beta = np.empty(MAX_STEPS)
    want = count + 1
    for j in range(MAX_STEPS):
        w = lu.solve(basis[j])
        alpha[j] = float((conj[j] @ w).real)
        # Full reorthogonalisation by classical Gram-Schmidt, repeated when the norm drops by
        # more than 1/sqrt(2) (Daniel, Gragg, Kaufman and Stewart's criterion).
        before = _norm(w)
        for _ in range(2):
            w -= basis[: j + 1].T @ (conj[: j + 1] @ w)
            beta[j] = _norm(w)
            if beta[j] > 0.7071 * before:
                break
            before = beta[j]
        steps = j + 1
        if steps >= 2 * want + _CHECK_EVERY and steps % _CHECK_EVERY == 0:
            top = _converged(alpha[:steps], beta[:steps], want, eps, scale)
            if top is not None:
                found = _ritz(lap, basis[:steps], top, scale)
                if found is not None:
                    return _checked(lap, found, count, scale)
        if beta[j] <= 1e-14 * abs(alpha[j]):  # an invariant subspace: repeated eigenvalues
            return None
        basis[j + 1] = w / beta[j]
        conj[j + 1] = basis[j + 1].conj()
    return None


def _norm(x: np.ndarray) -> float:
    """Euclidean norm of a vector (one BLAS dot product)."""
    return math.sqrt(float(np.vdot(x, x).real))


def _shifted(lap: sp.csc_matrix, shift: float) -> sp.csc_matrix:
    """``lap - shift I`` in CSC."""
    out = lap.copy()
    out.setdiag(lap.diagonal() - shift)
    return out


def _converged(
    alpha: np.ndarray, beta: np.ndarray, want: int, eps: float, scale: float
) -> np.ndarray | None:
    r"""Tridiagonal eigenvectors of the ``want`` dominant Ritz values once the first
    ``want - 1`` have residuals on ``L``, estimated from the Lanczos relation, below
    tolerance and the last (needed only to place the cut) one below a quarter of the gap
    before it; else ``None``.

    For :math:`A^{-1} u \approx \theta u` with residual :math:`\beta_m |s_{m}|`, the residual
    of :math:`A u \approx u / \theta` is at most :math:`\lVert A\rVert \beta_m |s_m| / \theta`,
    with :math:`\lVert A\rVert \le 2\,\mathrm{scale} + \varepsilon` for a Laplacian whose
    diagonal bounds its Gershgorin discs.
    """
    theta, s = scipy.linalg.eigh_tridiagonal(alpha, beta[:-1], check_finite=False)
    top = s[:, ::-1][:, :want]  # largest 1 / (lambda + eps) first: lowest lambda first
    dominant = theta[::-1][:want]
    bound = (2.0 * scale + eps) * beta[-1] * np.abs(top[-1]) / dominant
    values = 1.0 / dominant - eps
    if bound[:-1].max() > 0.1 * RESIDUAL_TOL * scale:
        return None
    return top if bound[-1] <= 0.25 * (values[-1] - values[-2]) else None


def _ritz(
    lap: sp.csc_matrix, basis: np.ndarray, top: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The Ritz pairs of tridiagonal eigenvectors ``top`` as eigenpairs of ``lap``
    (ascending), or ``None`` when a residual of all but the last is above tolerance."""
    vecs = basis.T @ top
    lv = lap @ vecs
    values = np.einsum("ij,ij->j", vecs.conj(), lv).real
    residual = np.linalg.norm(lv - vecs * values, axis=0)
    if residual[:-1].max() > RESIDUAL_TOL * scale or values[-1] < values[:-1].max():
        return None
    order = np.append(np.argsort(values[:-1], kind="stable"), values.size - 1)
    return values[order], vecs[:, order]


def _checked(
    lap: sp.csc_matrix, found: tuple[np.ndarray, np.ndarray], count: int, scale: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Step 4: the pairs are every eigenpair below the cut, or ``None``."""
    values, vecs = found
    gap = values[count] - values[count - 1]
    if gap <= GAP_TOL * scale:
        return None
    if _count_below(lap, 0.5 * (values[count - 1] + values[count])) != count:
        return None
    return values[:count], vecs[:, :count]
