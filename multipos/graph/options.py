r"""Options of the eigenvector PEs: the named choices and their valid values.

Each option is a ``Literal`` for type checkers and a tuple of the same strings for the
run-time checks in :mod:`multipos.graph.checks`; see :func:`~multipos.graph.laplacian_pe` and
:func:`~multipos.graph.magnetic_laplacian_pe` for what each choice computes.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "MAGNETIC_SYMMETRIZE",
    "NORMALIZATION",
    "Q_MODES",
    "SOLVERS",
    "SYMMETRIZE",
    "TRIVIAL",
    "MagneticSymmetrize",
    "Normalization",
    "QMode",
    "Solver",
    "Symmetrize",
    "Trivial",
]

#: How a directed graph becomes undirected: max of both directions, their mean, or no change
#: (the graph must already be undirected).
Symmetrize = Literal["union", "mean", "none"]
#: The magnetic Laplacian keeps the direction in its phase, so it always symmetrises.
MagneticSymmetrize = Literal["union", "mean"]
#: ``"sym"``: :math:`I - D^{-1/2} A D^{-1/2}`; ``"none"``: :math:`D - A`.
Normalization = Literal["sym", "none"]
#: Drop or keep the ``c`` lowest eigenpairs of a graph with ``c`` connected components.
Trivial = Literal["drop", "keep"]
#: Eigensolver: ``"auto"`` picks dense or ARPACK by graph size.
Solver = Literal["auto", "dense", "arpack", "lobpcg"]
#: Magnetic potential ``q`` as given, or divided by the number of one-way node pairs.
QMode = Literal["absolute", "relative"]

# The run-time lists are read from the Literals, so a choice is written once.
SYMMETRIZE: tuple[str, ...] = get_args(Symmetrize)
MAGNETIC_SYMMETRIZE: tuple[str, ...] = get_args(MagneticSymmetrize)
NORMALIZATION: tuple[str, ...] = get_args(Normalization)
TRIVIAL: tuple[str, ...] = get_args(Trivial)
SOLVERS: tuple[str, ...] = get_args(Solver)
Q_MODES: tuple[str, ...] = get_args(QMode)
