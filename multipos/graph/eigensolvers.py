r"""Eigensolvers of the (magnetic) Laplacian PEs, the column selection and the sign / phase
convention.

Graphs up to :data:`DENSE_MAX_NODES` nodes (``solver="auto"``) take the dense path of
:mod:`multipos.graph.dense`; larger ones are solved here one by one with a sparse solver
(ARPACK / LOBPCG from scipy, fixed start vectors). All math is float64 (complex128 for the
magnetic Laplacian).

Conventions (documented in the public functions):

* ``trivial="drop"`` removes the ``c`` lowest eigenpairs of a graph with ``c`` non-isolated
  connected components (for the ordinary Laplacian: exactly its null space); with
  ``canonical_null`` the null space is replaced by the canonical component vectors;
* fewer than ``K`` available eigenpairs are padded with zero columns, ``mask`` false;
* sign / phase: each eigenvector is multiplied by the unit scalar that makes its anchor entry
  real and positive, the anchor being its entry of largest magnitude (ties within
  :data:`TIE_TOL` broken by the lowest node index); see :func:`canonicalize_phase`.

Every step after the solver is elementwise IEEE arithmetic (no fused or vectorised complex
kernels, no reductions whose order could depend on where a graph sits in a batch), so one
graph's result does not depend on the other graphs it is computed with.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from multipos.graph.union import GraphUnion

__all__ = [
    "DENSE_MAX_NODES",
    "LOBPCG_MAXITER",
    "TIE_TOL",
    "Components",
    "Eigenpairs",
    "UseDense",
    "canonical_phase",
    "canonicalize_phase",
    "select_columns",
    "sparse_eigenpairs",
]

#: ``solver="auto"`` uses the dense path up to this many nodes and ARPACK above (a chosen
#: threshold; no script here measures the crossover).
DENSE_MAX_NODES = 2000
#: Iteration limit of LOBPCG; stopping there without the tolerance raises.
LOBPCG_MAXITER = 2000
#: Absolute tolerance (eigenvectors have unit norm) under which two magnitudes tie.
TIE_TOL = 1e-8


def canonical_phase(vecs: np.ndarray) -> np.ndarray:
    """:func:`canonicalize_phase` on numpy ``(B, N, K)`` arrays (the library's own path)."""
    if vecs.shape[1] == 0:
        return vecs
    b, _, k = vecs.shape
    rows, cols = np.arange(b)[:, None], np.arange(k)[None, :]
    if not np.iscomplexobj(vecs):
        mag = np.abs(vecs)
        anchor = (mag >= mag.max(axis=1, keepdims=True) - TIE_TOL).argmax(axis=1)  # first True
        sign = np.where(vecs[rows, anchor, cols] < 0, -1.0, 1.0).astype(vecs.dtype)
        out: np.ndarray = vecs * sign[:, None, :]
        return out
    re, im = vecs.real, vecs.imag
    mag = np.sqrt(re * re + im * im)
    anchor = (mag >= mag.max(axis=1, keepdims=True) - TIE_TOL).argmax(axis=1)  # first True
    a_re, a_im, a_abs = re[rows, anchor, cols], im[rows, anchor, cols], mag[rows, anchor, cols]
    nonzero = a_abs > 0
    safe = np.where(nonzero, a_abs, 1.0)
    u_re = np.where(nonzero, a_re / safe, 1.0)[:, None, :]
    u_im = np.where(nonzero, a_im / safe, 0.0)[:, None, :]
    # v * conj(u) = (re u_re + im u_im) + i (im u_re - re u_im), without a complex kernel
    out = np.empty_like(vecs)
    out.real = re * u_re + im * u_im
    out.imag = im * u_re - re * u_im
    return out


def canonicalize_phase(vecs: Tensor) -> Tensor:
    r"""Sign / phase convention on ``(B, N, K)`` eigenvectors (real or complex).

    .. math::
        v_{:, j} \leftarrow v_{:, j} \, \bar v_{a j} / |v_{a j}|, \qquad
        a = \min \{u : |v_{u j}| \ge \max_w |v_{w j}| - \epsilon\}, \ \epsilon = 10^{-8}

    so the anchor entry :math:`v_{a j}` becomes real and positive (a sign flip for real
    vectors). The anchor is chosen by magnitude, so the convention commutes with complex
    conjugation and with node permutations that keep the anchor unique. Zero columns stay
    zero. Complex products are written out on real and imaginary parts (IEEE-exact
    element-wise steps), so every entry is rounded the same way wherever it sits.
    """
    return torch.from_numpy(canonical_phase(vecs.detach().cpu().resolve_conj().numpy()))


class Eigenpairs(NamedTuple):
    """The kept eigenpairs of one graph (or, with a leading ``B``, of a batch), padded to
    ``K`` columns."""

    vectors: np.ndarray  # (N_g, K) float64 or complex128
    values: np.ndarray  # (K,) float64
    mask: np.ndarray  # (K,) bool


class Components(NamedTuple):
    """Connected-component facts of ``B`` graphs of ``n`` nodes each (one row per graph)."""

    isolated: np.ndarray  # (B, n) bool: no edge other than self-loops
    comp_rank: np.ndarray  # (B, n) rank of the node's component by lowest node; -1 if isolated
    comp_value: np.ndarray  # (B, n) entry of the canonical unit null vector of its component
    num_comp: np.ndarray  # (B,) non-isolated components
    num_isolated: np.ndarray  # (B,)


def union_components(u: GraphUnion, gid: int) -> Components:
    """The :class:`Components` of graph ``gid`` of a union, as a batch of one."""
    lo, hi = int(u.ptr[gid]), int(u.ptr[gid + 1])
    return Components(
        u.isolated[None, lo:hi],
        u.comp_rank[None, lo:hi],
        u.comp_value[None, lo:hi],
        u.num_comp[gid : gid + 1],
        u.num_isolated[gid : gid + 1],
    )


def select_columns(
    comps: Components,
    evals: np.ndarray,
    evecs: np.ndarray,
    k: int,
    trivial: str,
    canonical_null: bool,
) -> Eigenpairs:
    """Pick ``k`` columns per graph from ascending ``(B, n, m)`` eigenpairs, pad and mask.

    Returns batched :class:`Eigenpairs`: ``vectors (B, n, K)``, ``values (B, K)``,
    ``mask (B, K)``.
    """
    b, n, m = evecs.shape
    c = comps.num_comp  # (B,)
    drop = trivial == "drop"
    offset = c if drop else np.zeros_like(c)
    avail = n - comps.num_isolated - offset
    j = np.arange(k)
    idx = np.minimum(offset[:, None] + j[None, :], max(m - 1, 0))  # (B, K)
    valid = j[None, :] < avail[:, None]  # (B, K)
    if m == 0:
        vecs = np.zeros((b, n, k), dtype=evecs.dtype)
        vals = np.zeros((b, k))
    elif b == 1:
        vecs, vals = evecs[:, :, idx[0]], evals[:, idx[0]]
    else:
        vecs = evecs[np.arange(b)[:, None, None], np.arange(n)[None, :, None], idx[:, None, :]]
        vals = evals[np.arange(b)[:, None], idx]
    if canonical_null and not drop and n:
        # Replace the (degenerate) null space by the component vectors, ordered by lowest node.
        null = np.where(comps.comp_rank[:, :, None] == j, comps.comp_value[:, :, None], 0.0)
        is_null = j[None, :] < c[:, None]  # (B, K)
        vecs = np.where(is_null[:, None, :], null, vecs)
        vals = np.where(is_null, 0.0, vals)
    keep = valid[:, None, :] & ~comps.isolated[:, :, None]  # isolated rows are exactly zero
    vecs = canonical_phase(np.where(keep, vecs, 0.0)) + 0.0  # + 0.0 turns -0.0 into 0.0
    return Eigenpairs(vecs, np.where(valid, vals, 0.0), valid)


class UseDense(Exception):
    """Raised when a sparse solver cannot handle a problem this small."""


def _sparse_solve(
    u: GraphUnion,
    lap: sp.csr_matrix,
    gid: int,
    k: int,
    trivial: str,
    solver: str,
    tol: float,
    shift: float,
    deflate_null: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest eigenpairs of one graph with ARPACK or LOBPCG, ascending, ``(n, m)``.

    For the real Laplacian the null space is known exactly and is deflated (moved to
    ``shift``); the returned pairs then start after it, and the caller treats them as if the
    null columns had been computed. Otherwise the ``c`` lowest pairs are computed and kept.

    Raises:
        UseDense: If the problem is too small for the solver.
        RuntimeError: If LOBPCG stops at :data:`LOBPCG_MAXITER` iterations without reaching
            ``tol``.
    """
    lo, hi = int(u.ptr[gid]), int(u.ptr[gid + 1])
    n = hi - lo
    block = lap[lo:hi, lo:hi].tocsr()
    c = int(u.num_comp[gid])
    n_real = n - int(u.num_isolated[gid])
    # deflated: the pairs above the null space; else the c lowest too when they are dropped
    m = min(k, n_real - c) if deflate_null else min(k + (c if trivial == "drop" else 0), n_real)
    dtype = block.dtype
    if m <= 0:
        return np.zeros(0), np.zeros((n, 0), dtype=dtype)
    op: spla.LinearOperator | sp.csr_matrix = block
    if deflate_null:
        ranks = u.comp_rank[lo:hi]
        real = ranks >= 0
        null = sp.csr_matrix(
            (u.comp_value[lo:hi][real], (np.flatnonzero(real), ranks[real])), shape=(n, max(c, 1))
        )
        nt = null.T.tocsr()

        def matvec(x: np.ndarray) -> np.ndarray:
            return np.asarray(block @ x + shift * (null @ (nt @ x)))

        op = spla.LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=dtype)
    rng = np.random.default_rng(0)  # fixed start: same graph -> same result, in any process
    is_complex = np.iscomplexobj(np.zeros(0, dtype=dtype))
    if solver == "arpack":
        if m >= n - 1:
            raise UseDense
        v0 = rng.standard_normal(n)
        if is_complex:
            v0 = v0 + 1j * rng.standard_normal(n)
        ncv = min(n, max(4 * m + 1, 40))
        vals, vecs = spla.eigsh(op, k=m, which="SA", v0=v0, tol=tol, ncv=ncv, maxiter=n * 10)
    else:
        if 5 * m >= n:
            raise UseDense
        x0 = rng.standard_normal((n, m))
        if is_complex:
            x0 = x0 + 1j * rng.standard_normal((n, m))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vals, vecs = spla.lobpcg(
                op, x0, largest=False, tol=max(tol, 1e-12), maxiter=LOBPCG_MAXITER
            )
        # scipy warns (and returns its last iterate) when it stops at maxiter.
        if any("tolerance" in str(w.message) for w in caught):
            raise RuntimeError(
                f"solver='lobpcg' did not reach tol={max(tol, 1e-12):g} in {LOBPCG_MAXITER} "
                f"iterations on a graph of {n} nodes; use solver='arpack' or 'dense', or a "
                "larger tol"
            )
    order = np.argsort(vals, kind="stable")
    return np.ascontiguousarray(vals[order].real), np.ascontiguousarray(vecs[:, order])


def sparse_eigenpairs(
    u: GraphUnion,
    lap: sp.csr_matrix,
    k: int,
    trivial: str,
    solver: str,
    tol: float,
    canonical_null: bool,
    shift: np.ndarray,
) -> dict[int, Eigenpairs]:
    """Eigen-PE of every graph of ``u`` the sparse ``solver`` can take, by graph index.

    ``lap`` carries ``shift[g]`` (above graph ``g``'s spectrum) on the diagonal of its isolated
    nodes; with ``canonical_null`` (real Laplacian) the null space is deflated to it. Graphs
    too small for the solver are left out of the result (the caller solves them densely).
    """
    out: dict[int, Eigenpairs] = {}
    for gid in range(u.sizes.size):
        try:
            vals, vecs = _sparse_solve(
                u, lap, gid, k, trivial, solver, tol, float(shift[gid]), canonical_null
            )
        except UseDense:
            continue
        if canonical_null:
            # Deflated: stand-in columns for the c null vectors (replaced or dropped next).
            c = int(u.num_comp[gid])
            vecs = np.concatenate([np.zeros((vecs.shape[0], c), dtype=vecs.dtype), vecs], axis=1)
            vals = np.concatenate([np.zeros(c), vals])
        picked = select_columns(
            union_components(u, gid), vals[None], vecs[None], k, trivial, canonical_null
        )
        out[gid] = Eigenpairs(picked.vectors[0], picked.values[0], picked.mask[0])
    return out
