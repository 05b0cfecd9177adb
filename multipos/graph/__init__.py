r"""Graph position schemes: Laplacian, magnetic Laplacian and directional random-walk PEs.

Pure functions (torch + scipy, float64 math, float32 output): :func:`laplacian_pe`,
:func:`magnetic_laplacian_pe`, :func:`directional_random_walk_pe`, their batched forms and
the operators :func:`laplacian`, :func:`magnetic_laplacian`, :func:`transition_matrix`.
PyG transforms: :class:`AddLaplacianPE`, :class:`AddMagneticLaplacianPE`,
:class:`AddDirectionalRandomWalkPE`. Modules, registered under their names in snake case
(``laplacian_pe_encoder``, ``magnetic_laplacian_pe_encoder``,
``directional_random_walk_bias``): :class:`LaplacianPEEncoder`,
:class:`MagneticLaplacianPEEncoder`, :class:`DirectionalRandomWalkBias`.

The magnetic-Laplacian PE is the subject of patent application WO2024094893A1; check it
before commercial use.
"""

from __future__ import annotations

import torch_geometric  # noqa: F401  (fail early with ImportError when the [graph] extra is missing)

from multipos.graph import schemes as _schemes  # noqa: F401  (registers the graph schemes)
from multipos.graph.batched import batched_laplacian_pe, batched_magnetic_laplacian_pe
from multipos.graph.encoders import (
    DirectionalRandomWalkBias,
    LaplacianPEEncoder,
    MagneticLaplacianPEEncoder,
)
from multipos.graph.laplacian import LaplacianPE, laplacian, laplacian_pe
from multipos.graph.magnetic import MagneticLaplacianPE, magnetic_laplacian, magnetic_laplacian_pe
from multipos.graph.random_walk import directional_random_walk_pe, transition_matrix
from multipos.graph.transforms import (
    AddDirectionalRandomWalkPE,
    AddLaplacianPE,
    AddMagneticLaplacianPE,
    pairwise_to_dense,
)

__all__ = [
    "AddDirectionalRandomWalkPE",
    "AddLaplacianPE",
    "AddMagneticLaplacianPE",
    "DirectionalRandomWalkBias",
    "LaplacianPE",
    "LaplacianPEEncoder",
    "MagneticLaplacianPE",
    "MagneticLaplacianPEEncoder",
    "batched_laplacian_pe",
    "batched_magnetic_laplacian_pe",
    "directional_random_walk_pe",
    "laplacian",
    "laplacian_pe",
    "magnetic_laplacian",
    "magnetic_laplacian_pe",
    "pairwise_to_dense",
    "transition_matrix",
]
