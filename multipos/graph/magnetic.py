r"""Magnetic Laplacian positional encodings for directed graphs.

From "Transformers Meet Directed Graphs" (Geisler, Li, Mankowitz, Cemgil, Günnemann,
Paduraru, 2023, arXiv:2302.00049), Eq. (2)-(3), after "MagNet: A Neural Network for Directed
Graphs" (Zhang, He, Brugnone, Perlmutter, Hirn, 2021, arXiv:2102.11391):

.. math::
    L^{(q)} = I - \left(D_s^{-1/2} A_s D_s^{-1/2}\right) \odot \exp\left(i \Theta^{(q)}\right),
    \qquad \Theta^{(q)} = 2 \pi q \, S,

where ``A_s`` is the symmetrised adjacency and ``S`` the antisymmetric direction matrix.
``L^{(q)}`` is Hermitian; with ``normalization="sym"`` its eigenvalues lie in [0, 2].

The magnetic-Laplacian PE is the subject of patent application WO2024094893A1 (DeepMind,
"Generating positional encodings of directed graphs"); check it before commercial use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from multipos.graph.checks import check_choice, check_eigen_options, check_q, graph_arrays
from multipos.graph.operators import effective_q, sparse_laplacian
from multipos.graph.options import (
    MAGNETIC_SYMMETRIZE,
    NORMALIZATION,
    Q_MODES,
    MagneticSymmetrize,
    Normalization,
    QMode,
    Solver,
    Trivial,
)
from multipos.graph.spectral import eigen_pe_many
from multipos.graph.union import StackedGraphs, build_union, stack_graph_arrays

__all__ = ["MagneticLaplacianPE", "magnetic_laplacian", "magnetic_laplacian_pe"]


class MagneticLaplacianPE(NamedTuple):
    """Result of :func:`magnetic_laplacian_pe`.

    Attributes:
        real: Real parts of the eigenvectors, ``(N, K)`` (``(N, Q, K)`` for several ``q``),
            float32; zero in masked columns.
        imag: Imaginary parts, same shape.
        values: Eigenvalues, ``(K,)`` (``(Q, K)``) float32, ascending; ``0`` where masked.
        mask: ``(K,)`` (``(Q, K)``) bool, true for the columns that hold an eigenvector.
    """

    real: Tensor
    imag: Tensor
    values: Tensor
    mask: Tensor


def magnetic_laplacian(
    edge_index: Tensor,
    num_nodes: int | None = None,
    *,
    q: float = 0.25,
    q_mode: QMode = "relative",
    edge_weight: Tensor | None = None,
    normalization: Normalization = "sym",
    symmetrize: MagneticSymmetrize = "union",
) -> Tensor:
    r"""Dense magnetic Laplacian :math:`L^{(q)}`, ``(N, N)`` complex128, Hermitian.

    .. math::
        L^{(q)}_{\mathrm{sym}} = I - D_s^{+1/2} (A_s \odot e^{i\Theta}) D_s^{+1/2}, \qquad
        L^{(q)} = D_s - A_s \odot e^{i\Theta}, \qquad \Theta = 2\pi q_{\mathrm{eff}} S.

    Symmetrisation (``symmetrize``):

    * ``"union"`` (Geisler et al.): :math:`a^s_{uv} = \max(a_{uv}, a_{vu})` and
      :math:`S_{uv} = [a_{uv} > 0] - [a_{vu} > 0]`, so a one-way edge and a reciprocal pair
      both have weight 1 on a binary graph, and only one-way edges carry a phase;
    * ``"mean"`` (MagNet, PyG-signed-directed): :math:`a^s = (a_{uv} + a_{vu}) / 2` and
      :math:`S_{uv} = a_{uv} - a_{vu}`.

    ``q_mode="relative"`` uses :math:`q_{\mathrm{eff}} = q / \max(1, \min(m, N))` with ``m``
    the number of node pairs joined in one direction only (the official code's rule);
    ``"absolute"`` uses ``q``. An edge ``u -> v`` gives :math:`L_{uv} \propto -e^{+2\pi i q}`.
    Self-loops are dropped, duplicate edges add their weights, isolated nodes get zero rows.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight, ``q`` or option is invalid.
    """
    qs, many = check_q(q)
    if many:
        raise TypeError("magnetic_laplacian takes one q (a float)")
    check_choice("q_mode", q_mode, Q_MODES)
    check_choice("normalization", normalization, NORMALIZATION)
    check_choice("symmetrize", symmetrize, MAGNETIC_SYMMETRIZE)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    u = build_union(stack_graph_arrays([g]), symmetrize, normalization)
    q_eff = effective_q(u, qs[0], q_mode)
    return torch.from_numpy(sparse_laplacian(u, normalization, q_eff, 0.0).toarray())


def magnetic_laplacian_pe(
    edge_index: Tensor,
    num_nodes: int | None = None,
    k: int = 8,
    *,
    q: float | Sequence[float] = 0.25,
    q_mode: QMode = "relative",
    edge_weight: Tensor | None = None,
    normalization: Normalization = "sym",
    symmetrize: MagneticSymmetrize = "union",
    trivial: Trivial = "keep",
    solver: Solver = "auto",
    tol: float = 1e-8,
) -> MagneticLaplacianPE:
    r"""Magnetic Laplacian eigenvector PE (real part, imaginary part, eigenvalues, mask).

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049):

    .. math::
        L^{(q)} = U \Lambda U^{*}, \qquad
        \mathrm{PE}(u) = \left(\Re\, U_{u, j}, \Im\, U_{u, j}\right)_{j < K}

    with :math:`L^{(q)}` from :func:`magnetic_laplacian`.

    Conventions:

    * ``trivial="keep"`` (default, as the official presets) keeps the lowest eigenvector,
      which carries direction when ``q > 0``; ``"drop"`` removes the ``c`` lowest pairs of a
      graph with ``c`` connected components (the null space when ``q = 0``).
    * phase: each eigenvector is multiplied by :math:`\bar v_a / |v_a|`, ``a`` its entry of
      largest magnitude (ties within 1e-8: lowest node index), so :math:`v_a > 0` is real.
      This commutes with conjugation: reversing every edge conjugates the PE exactly. (The
      official code instead rotates every vector to be real at one shared anchor node.)
    * ``q = 0`` runs the real Laplacian path, so the result equals :func:`laplacian_pe`
      with the same options (``imag`` is zero).
    * several ``q`` (a sequence) stack a ``Q`` axis: ``real (N, Q, K)``, ``values (Q, K)``.
    * padding, isolated nodes, solvers and determinism as in :func:`laplacian_pe`;
      degenerate eigenspaces keep the solver's (deterministic) basis.

    Args:
        edge_index: ``(2, E)`` integer tensor of directed edges ``source -> target``.
        num_nodes: ``N``; inferred when omitted.
        k: Number of eigenvectors ``K``.
        q: Potential, a float or a sequence of floats ``>= 0``.
        q_mode: ``"relative"`` or ``"absolute"`` (see :func:`magnetic_laplacian`).
        edge_weight: Optional non-negative ``(E,)`` weights.
        normalization: ``"sym"`` or ``"none"``.
        symmetrize: ``"union"`` (Geisler) or ``"mean"`` (MagNet).
        trivial: ``"keep"`` or ``"drop"``.
        solver: ``"auto"``, ``"dense"``, ``"arpack"`` or ``"lobpcg"``.
        tol: Tolerance of the sparse solvers.

    Returns:
        :class:`MagneticLaplacianPE`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a shape, index, weight, ``q`` or option is invalid.
    """
    qs, many = check_q(q)
    check_choice("q_mode", q_mode, Q_MODES)
    check_eigen_options(k, normalization, symmetrize, trivial, solver, tol, MAGNETIC_SYMMETRIZE)
    g = graph_arrays(edge_index, num_nodes, edge_weight)
    res = magnetic_laplacian_pe_many(
        stack_graph_arrays([g]), k, qs, q_mode, normalization, symmetrize, trivial, solver, tol
    )[0]
    return res if many else squeeze_q(res)


def squeeze_q(r: MagneticLaplacianPE) -> MagneticLaplacianPE:
    """Drop the ``Q`` axis of a result computed for a single ``q``."""
    return MagneticLaplacianPE(r.real[:, 0], r.imag[:, 0], r.values[0], r.mask[0])


def magnetic_laplacian_pe_many(
    graphs: StackedGraphs,
    k: int,
    qs: Sequence[float],
    q_mode: str,
    normalization: str,
    symmetrize: str,
    trivial: str,
    solver: str,
    tol: float,
) -> list[MagneticLaplacianPE]:
    """Validated graphs -> :class:`MagneticLaplacianPE` each, with a ``Q`` axis."""
    # q = 0 is the real Laplacian: its null space is known and handled exactly.
    potentials = [None if q == 0.0 else q for q in qs]
    solved = eigen_pe_many(
        graphs, k, normalization, symmetrize, trivial, solver, tol, potentials, q_mode
    )
    out = []
    for per_q in solved:
        vecs = np.stack([p.vectors for p in per_q], axis=1)  # (N, Q, K)
        out.append(
            MagneticLaplacianPE(
                torch.from_numpy(np.real(vecs).astype(np.float32)),
                torch.from_numpy(np.imag(vecs).astype(np.float32)),
                torch.from_numpy(np.stack([p.values for p in per_q]).astype(np.float32)),
                torch.from_numpy(np.stack([p.mask for p in per_q])),
            )
        )
    return out
