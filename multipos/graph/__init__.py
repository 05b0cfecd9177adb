r"""Graph position schemes: Laplacian, magnetic Laplacian and directional random-walk PEs.

Pure functions (torch + scipy, float64 math, float32 output): :func:`laplacian_pe`,
:func:`magnetic_laplacian_pe`, :func:`directional_random_walk_pe`, their batched forms and
the operators :func:`laplacian`, :func:`magnetic_laplacian`, :func:`transition_matrix`.
PyG transforms: :class:`AddLaplacianPE`, :class:`AddMagneticLaplacianPE`,
:class:`AddDirectionalRandomWalkPE`. Encoders: :class:`LaplacianPEEncoder`,
:class:`MagneticPEEncoder`, :class:`RandomWalkBias`, registered as ``laplacian_pe``,
``magnetic_laplacian_pe`` and ``directional_random_walk_pe``.

The magnetic-Laplacian PE is the subject of patent application WO2024094893A1; check it
before commercial use.
"""

from __future__ import annotations

import torch
from torch import nn

import multipos
from multipos.graph.batched import batched_laplacian_pe, batched_magnetic_laplacian_pe
from multipos.graph.encoders import LaplacianPEEncoder, MagneticPEEncoder, RandomWalkBias
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
    "LaplacianPE",
    "LaplacianPEEncoder",
    "MagneticLaplacianPE",
    "MagneticPEEncoder",
    "RandomWalkBias",
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

_SAMPLE_NODES = 7


def _sample_graph(generator: torch.Generator) -> torch.Tensor:
    """A small random directed graph (a path plus random chords), ``(2, E)``."""
    path = torch.stack([torch.arange(_SAMPLE_NODES - 1), torch.arange(1, _SAMPLE_NODES)])
    extra = torch.randint(0, _SAMPLE_NODES, (2, 4), generator=generator)
    return torch.cat([path, extra], dim=1)


def _laplacian_inputs(module: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    k = int(module.k)  # type: ignore[arg-type]
    r = laplacian_pe(_sample_graph(generator), _SAMPLE_NODES, k)
    n = r.vectors.shape[0]
    return r.vectors, r.values.expand(n, k), r.mask.expand(n, k)


def _magnetic_inputs(module: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    k = int(module.k_per_q)  # type: ignore[arg-type]
    r = magnetic_laplacian_pe(_sample_graph(generator), _SAMPLE_NODES, k, q=0.25)
    n = r.real.shape[0]
    return r.real, r.imag, r.values.expand(n, k), r.mask.expand(n, k)


def _random_walk_inputs(module: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor]:
    feats = directional_random_walk_pe(_sample_graph(generator), _SAMPLE_NODES, 2, form="pairwise")
    return (feats.unsqueeze(0),)  # (1, N, N, F)


_GEISLER = (
    "Transformers Meet Directed Graphs (Geisler, Li, Mankowitz, Cemgil, Günnemann, Paduraru, "
    "2023, arXiv:2302.00049)"
)

for _name, _factory, _paper, _summary, _tiny, _inputs in (
    (
        "laplacian_pe",
        LaplacianPEEncoder,
        "Sign and Basis Invariant Networks for Spectral Graph Representation Learning (Lim, "
        "Robinson, Zhao, Smidt, Sra, Maron, Jegelka, 2022, arXiv:2202.13013); Laplacian PE from "
        "Benchmarking Graph Neural Networks (Dwivedi et al., 2020, arXiv:2003.00982)",
        "Sign-invariant encoder rho(phi(v, lambda) + phi(-v, lambda)) of Laplacian eigenvectors",
        {"k": 4, "dim": 8, "hidden": 8},
        _laplacian_inputs,
    ),
    (
        "magnetic_laplacian_pe",
        MagneticPEEncoder,
        _GEISLER,
        "Sign-invariant encoder of magnetic Laplacian eigenvectors (Re, Im, eigenvalue)",
        {"k": 4, "dim": 8, "hidden": 8},
        _magnetic_inputs,
    ),
    (
        "directional_random_walk_pe",
        RandomWalkBias,
        _GEISLER,
        "Per-head attention bias from forward/reverse random-walk landing probabilities",
        {"num_features": 4, "num_heads": 2, "hidden": 8},
        _random_walk_inputs,
    ),
):
    multipos.register_scheme(
        _name,
        _factory,
        paper=_paper,
        summary=_summary,
        tiny=_tiny,
        sample_inputs=_inputs,
        domain="graph",
    )
