"""Registrations of the graph schemes: the PE encoders and the random-walk attention bias.

Each scheme registers its module class itself, so the class signature is the one list of
keywords and defaults (``create_scheme`` reads it). The registry names are those of the
classes in snake case; the pure functions that compute the encodings
(:func:`~multipos.graph.laplacian_pe`, ...) keep the shorter names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multipos.graph.encoders import (
    DirectionalRandomWalkBias,
    LaplacianPEEncoder,
    MagneticLaplacianPEEncoder,
)
from multipos.graph.laplacian import laplacian_pe
from multipos.graph.magnetic import magnetic_laplacian_pe
from multipos.graph.random_walk import directional_random_walk_pe
from multipos.registry import register_scheme

__all__: list[str] = []

_SAMPLE_NODES = 7

SIGNNET = (
    "Sign and Basis Invariant Networks for Spectral Graph Representation Learning (Lim, "
    "Robinson, Zhao, Smidt, Sra, Maron, Jegelka, 2022, arXiv:2202.13013)"
)
GEISLER = (
    "Transformers Meet Directed Graphs (Geisler, Li, Mankowitz, Cemgil, Günnemann, Paduraru, "
    "2023, arXiv:2302.00049)"
)


def _sample_graph(generator: torch.Generator) -> Tensor:
    """A small random directed graph (a path plus random chords), ``(2, E)``."""
    path = torch.stack([torch.arange(_SAMPLE_NODES - 1), torch.arange(1, _SAMPLE_NODES)])
    extra = torch.randint(0, _SAMPLE_NODES, (2, 4), generator=generator)
    return torch.cat([path, extra], dim=1)


def _laplacian_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor, ...]:
    assert isinstance(module, LaplacianPEEncoder)
    k = module.k
    r = laplacian_pe(_sample_graph(generator), _SAMPLE_NODES, k)
    n = r.vectors.shape[0]
    return r.vectors, r.values.expand(n, k), r.mask.expand(n, k)


def _magnetic_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor, ...]:
    assert isinstance(module, MagneticLaplacianPEEncoder)
    k = module.k_per_q
    r = magnetic_laplacian_pe(_sample_graph(generator), _SAMPLE_NODES, k, q=0.25)
    n = r.real.shape[0]
    return r.real, r.imag, r.values.expand(n, k), r.mask.expand(n, k)


def _random_walk_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor]:
    assert isinstance(module, DirectionalRandomWalkBias)
    walk_length = module.num_features // 2  # direction="both": forward and reverse features
    feats = directional_random_walk_pe(
        _sample_graph(generator), _SAMPLE_NODES, walk_length, form="pairwise"
    )
    return (feats.unsqueeze(0),)  # (1, N, N, F)


register_scheme(
    "laplacian_pe_encoder",
    LaplacianPEEncoder,
    paper=f"{SIGNNET}; Laplacian PE from Benchmarking Graph Neural Networks (Dwivedi et al., "
    "2020, arXiv:2003.00982)",
    summary="Sign-invariant encoder rho(phi(v, lambda) + phi(-v, lambda)) of Laplacian "
    "eigenvectors",
    tiny={"k": 4, "out_dim": 8, "hidden_dim": 8},
    sample_inputs=_laplacian_inputs,
    domain="graph",
)
register_scheme(
    "magnetic_laplacian_pe_encoder",
    MagneticLaplacianPEEncoder,
    paper=GEISLER,
    summary="Sign-invariant encoder of magnetic Laplacian eigenvectors (Re, Im, eigenvalue)",
    tiny={"k": 4, "out_dim": 8, "hidden_dim": 8},
    sample_inputs=_magnetic_inputs,
    domain="graph",
)
register_scheme(
    "directional_random_walk_bias",
    DirectionalRandomWalkBias,
    paper=GEISLER,
    summary="Per-head attention bias from forward/reverse random-walk landing probabilities",
    tiny={"num_features": 4, "num_heads": 2, "hidden_dim": 8},
    sample_inputs=_random_walk_inputs,
    domain="graph",
)
