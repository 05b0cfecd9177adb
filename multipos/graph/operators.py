r"""Sparse (magnetic) Laplacians of a graph union, with the effective magnetic potential.

From "Transformers Meet Directed Graphs" (Geisler, Li, Mankowitz, Cemgil, Günnemann,
Paduraru, 2023, arXiv:2302.00049), Eq. (2)-(3); ``q_eff = None`` gives the ordinary
Laplacian of "Benchmarking Graph Neural Networks" (Dwivedi et al., 2020, arXiv:2003.00982):

.. math::
    L^{(q)} = I - D_s^{-1/2} (A_s \odot e^{i \Theta}) D_s^{-1/2}, \qquad
    \Theta = 2 \pi q_{\mathrm{eff}} S.

float64 for the real Laplacian, complex128 for the magnetic one.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from multipos.graph.union import GraphUnion

__all__ = ["effective_q", "isolated_shift", "sparse_laplacian"]


def effective_q(u: GraphUnion, q: float, q_mode: str) -> np.ndarray:
    r"""Per-graph magnetic potential, ``(G,)`` float64.

    ``q_mode="absolute"`` returns ``q`` for every graph; ``"relative"`` (the official code's
    rule) returns :math:`q / \max(1, \min(m, N))`, ``m`` the graph's number of node pairs
    joined in one direction only.
    """
    if q_mode == "absolute":
        return np.full(u.sizes.shape, q, dtype=np.float64)
    denom: np.ndarray = np.maximum(1, np.minimum(u.one_way, u.sizes)).astype(np.float64)
    out: np.ndarray = q / denom
    return out


def sparse_laplacian(
    u: GraphUnion, normalization: str, q_eff: np.ndarray | None, isolated_diag: float | np.ndarray
) -> sp.csr_matrix:
    r"""Sparse (magnetic) Laplacian of the union, ``(N, N)``; isolated nodes get ``isolated_diag``.

    .. math::
        L^{(q)}_{\mathrm{sym}} = I - D_s^{-1/2} (A_s \odot e^{i \Theta}) D_s^{-1/2}, \qquad
        L^{(q)} = D_s - A_s \odot e^{i \Theta}, \qquad \Theta = 2 \pi q_{\mathrm{eff}} S

    Args:
        u: The graph union.
        normalization: ``"sym"`` or ``"none"``.
        q_eff: Per-graph potential from :func:`effective_q`, or ``None`` for the real
            Laplacian (float64; otherwise complex128).
        isolated_diag: Diagonal entry of isolated nodes (``0`` for the true operator, or per
            graph ``(G,)`` a value above its spectrum from :func:`isolated_shift`).
    """
    iso_diag = np.broadcast_to(np.asarray(isolated_diag, dtype=np.float64), u.sizes.shape)
    iso_diag = iso_diag[u.graph_of]
    w: sp.csr_matrix = u.a_sym
    if q_eff is not None and u.skew.nnz:
        rot = u.skew.tocoo()
        theta = 2.0 * math.pi * q_eff[u.graph_of[rot.row]] * rot.data
        phase_minus_one = sp.csr_matrix((np.expm1(1j * theta), (rot.row, rot.col)), shape=w.shape)
        w = (w + w.multiply(phase_minus_one)).tocsr()
    elif q_eff is not None:
        w = w.astype(np.complex128)
    if normalization == "sym":
        dinv = np.where(u.isolated, 0.0, 1.0 / np.sqrt(np.where(u.isolated, 1.0, u.deg)))
        diag = np.where(u.isolated, iso_diag, 1.0)
        dm = sp.diags(dinv)
        lap = sp.diags(diag) - dm @ w @ dm
    else:
        diag = np.where(u.isolated, iso_diag, u.deg)
        lap = sp.diags(diag) - w
    out: sp.csr_matrix = sp.csr_matrix(lap)
    out.sort_indices()
    return out


def isolated_shift(u: GraphUnion, normalization: str) -> np.ndarray:
    """Per graph, ``(G,)``, a value above its spectrum: eigenpairs moved there are never kept.

    The normalised Laplacian's spectrum lies in ``[0, 2]``; that of ``D - A`` in
    ``[0, 2 max(deg)]``, the maximum taken over the graph's own nodes (so the value does not
    depend on the other graphs of the union).
    """
    if normalization == "sym":
        return np.full(u.sizes.shape, 3.0)
    max_deg = np.zeros(u.sizes.shape)
    np.maximum.at(max_deg, u.graph_of, u.deg)
    out: np.ndarray = 2.0 * max_deg + 1.0
    return out
