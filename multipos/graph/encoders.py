r"""Encoders that turn graph PEs into node embeddings or attention biases.

* :class:`LaplacianPEEncoder`: sign-invariant, from "Sign and Basis Invariant Networks for
  Spectral Graph Representation Learning" (Lim, Robinson, Zhao, Smidt, Sra, Maron, Jegelka,
  2022, arXiv:2202.13013), Eq. (1), with an element-wise ``phi`` (the eigenvalue is an input
  of ``phi``, as in the SignNet variant used by GraphGPS):

  .. math::
      f(v_1, \dots, v_K) = \rho\left([\phi(v_j, \lambda_j) + \phi(-v_j, \lambda_j)]_{j=1}^K\right)

* :class:`MagneticLaplacianPEEncoder`: the same construction on ``(Re v_j, Im v_j, lambda_j)``, the
  sign-symmetrised ``MagLapNet`` of "Transformers Meet Directed Graphs" (Geisler et al., 2023,
  arXiv:2302.00049), Sec. 3.
* :class:`DirectionalRandomWalkBias`: an MLP from the pairwise random-walk features of
  :func:`multipos.graph.directional_random_walk_pe` to one additive attention bias per head.

Masked eigenvector columns (``mask`` false) contribute exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DirectionalRandomWalkBias", "LaplacianPEEncoder", "MagneticLaplacianPEEncoder"]


def _check_pos(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


class _SignInvariant(nn.Module):
    """``rho(concat_j [phi(x_j) + phi(-x_j)])`` with sign-flipped channels ``x_j[:flip]``."""

    def __init__(self, in_dim: int, k: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.k = _check_pos("k", k)
        self.out_dim = _check_pos("out_dim", out_dim)
        self.hidden_dim = _check_pos("hidden_dim", hidden_dim)
        self.phi = _mlp(in_dim, hidden_dim, hidden_dim)
        self.rho = _mlp(k * hidden_dim, hidden_dim, out_dim)

    def _encode(self, signed: Tensor, unsigned: Tensor, mask: Tensor) -> Tensor:
        # signed: (N, K, S), unsigned: (N, K, U), mask: (N, K)
        pos = torch.cat([signed, unsigned], dim=-1)
        neg = torch.cat([-signed, unsigned], dim=-1)
        h = (self.phi(pos) + self.phi(neg)) * mask.unsqueeze(-1).to(pos.dtype)  # (N, K, hidden_dim)
        out: Tensor = self.rho(h.flatten(1))  # (N, K * hidden_dim) -> (N, out_dim)
        return out


class LaplacianPEEncoder(_SignInvariant):
    r"""SignNet-style, sign-invariant encoder of Laplacian PEs.

    From "Sign and Basis Invariant Networks for Spectral Graph Representation Learning"
    (Lim et al., 2022, arXiv:2202.13013), Eq. (1):

    .. math::
        \mathrm{out}_u = \rho\left(\left[\phi(v_{uj}, \lambda_j) + \phi(-v_{uj},
        \lambda_j)\right]_{j=1}^{K}\right)

    Registered as ``laplacian_pe_encoder``.

    Args:
        k: Number of eigenvectors ``K`` of the input.
        out_dim: Width of the output node embedding.
        hidden_dim: Width of ``phi`` and ``rho``.

    Shapes:
        ``vectors (N, K)``, ``values`` and ``mask`` broadcastable to ``(N, K)`` (per node, as
        stored by :class:`~multipos.graph.AddLaplacianPE`, or ``(K,)``) -> ``(N, out_dim)``.

    Raises:
        TypeError / ValueError: If ``k``, ``out_dim`` or ``hidden_dim`` is not a positive int,
            or the input's last dimension is not ``K``.
    """

    def __init__(self, k: int, out_dim: int, hidden_dim: int = 32) -> None:
        super().__init__(2, k, out_dim, hidden_dim)

    def forward(self, vectors: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        if vectors.dim() != 2 or vectors.shape[-1] != self.k:
            raise ValueError(f"vectors must have shape (N, K={self.k}), got {tuple(vectors.shape)}")
        values = values.to(vectors.dtype).expand_as(vectors)
        mask = mask.expand_as(vectors)
        return self._encode(vectors.unsqueeze(-1), values.unsqueeze(-1), mask)


class MagneticLaplacianPEEncoder(_SignInvariant):
    r"""Sign-invariant encoder of magnetic Laplacian PEs (real, imaginary, eigenvalues).

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049),
    Sec. 3 (MagLapNet with SignNet-style symmetrisation):

    .. math::
        \mathrm{out}_u = \rho\left(\left[\phi(\Re v_{uj}, \Im v_{uj}, \lambda_j)
        + \phi(-\Re v_{uj}, -\Im v_{uj}, \lambda_j)\right]_{j=1}^{QK}\right)

    Registered as ``magnetic_laplacian_pe_encoder``.

    Args:
        k: Eigenvectors per potential ``K``.
        out_dim: Width of the output node embedding.
        hidden_dim: Width of ``phi`` and ``rho``.
        num_q: Number of potentials ``Q`` stacked in the input.

    Shapes:
        ``real``, ``imag``: ``(N, K)`` or ``(N, Q, K)``; ``values``, ``mask`` broadcastable to
        them -> ``(N, out_dim)``.

    Raises:
        TypeError / ValueError: On a non-positive size or a wrongly shaped input.
    """

    def __init__(self, k: int, out_dim: int, hidden_dim: int = 32, num_q: int = 1) -> None:
        self.num_q = _check_pos("num_q", num_q)
        super().__init__(3, _check_pos("k", k) * num_q, out_dim, hidden_dim)
        self.k_per_q = k

    def forward(self, real: Tensor, imag: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        if real.dim() == 2:
            real, imag = real.unsqueeze(1), imag.unsqueeze(1)  # (N, 1, K)
            values, mask = values.unsqueeze(-2), mask.unsqueeze(-2)
        if real.dim() != 3 or real.shape[1:] != (self.num_q, self.k_per_q):
            raise ValueError(
                f"real/imag must have shape (N, K={self.k_per_q}) or "
                f"(N, Q={self.num_q}, K={self.k_per_q}); got {tuple(real.shape)}"
            )
        if imag.shape != real.shape:
            raise ValueError(f"imag must match real {tuple(real.shape)}, got {tuple(imag.shape)}")
        values = values.to(real.dtype).expand_as(real).flatten(1)  # (N, Q * K)
        mask = mask.expand_as(real).flatten(1)
        signed = torch.stack([real.flatten(1), imag.flatten(1)], dim=-1)  # (N, QK, 2)
        return self._encode(signed, values.unsqueeze(-1), mask)


class DirectionalRandomWalkBias(nn.Module):
    r"""Attention-logit bias from pairwise directional random-walk features.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049),
    Sec. 4 (random-walk PEs used as relative encodings):

    .. math::
        b_{h, u v} = \mathrm{MLP}(R_{uv})_h

    Registered as ``directional_random_walk_bias``.

    Args:
        num_features: ``F``, the last dimension of the pairwise features.
        num_heads: ``H``.
        hidden_dim: Width of the MLP.

    Shapes:
        ``features (B, N, N, F)`` (e.g. from
        :func:`multipos.graph.transforms.pairwise_to_dense`) -> ``(B, H, N, N)``.

    Raises:
        TypeError / ValueError: If ``num_features``, ``num_heads`` or ``hidden_dim`` is not a
            positive int, or ``features`` is not ``(B, N, N, F)``.
    """

    def __init__(self, num_features: int, num_heads: int, hidden_dim: int = 32) -> None:
        super().__init__()
        self.num_features = _check_pos("num_features", num_features)
        self.num_heads = _check_pos("num_heads", num_heads)
        self.hidden_dim = _check_pos("hidden_dim", hidden_dim)
        self.mlp = _mlp(num_features, hidden_dim, num_heads)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 4 or features.shape[-1] != self.num_features:
            raise ValueError(
                f"features must have shape (B, N, N, F={self.num_features}), "
                f"got {tuple(features.shape)}"
            )
        bias: Tensor = self.mlp(features)  # (B, N, N, H)
        return bias.permute(0, 3, 1, 2)  # (B, H, N, N)
