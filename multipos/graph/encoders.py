r"""Encoders that turn graph PEs into node embeddings or attention biases.

* :class:`LaplacianPEEncoder`: sign-invariant, from "Sign and Basis Invariant Networks for
  Spectral Graph Representation Learning" (Lim, Robinson, Zhao, Smidt, Sra, Maron, Jegelka,
  2022, arXiv:2202.13013), Eq. (1), with an element-wise ``phi`` (the eigenvalue is an input
  of ``phi``, as in the SignNet variant used by GraphGPS):

  .. math::
      f(v_1, \dots, v_K) = \rho\left([\phi(v_j, \lambda_j) + \phi(-v_j, \lambda_j)]_{j=1}^K\right)

* :class:`MagneticPEEncoder`: the same construction on ``(Re v_j, Im v_j, lambda_j)``, the
  sign-symmetrised ``MagLapNet`` of "Transformers Meet Directed Graphs" (Geisler et al., 2023,
  arXiv:2302.00049), Sec. 3.
* :class:`RandomWalkBias`: an MLP from the pairwise random-walk features of
  :func:`multipos.graph.directional_random_walk_pe` to one additive attention bias per head.

Masked eigenvector columns (``mask`` false) contribute exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LaplacianPEEncoder", "MagneticPEEncoder", "RandomWalkBias"]


def _check_pos(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class _SignInvariant(nn.Module):
    """``rho(concat_j [phi(x_j) + phi(-x_j)])`` with sign-flipped channels ``x_j[:flip]``."""

    def __init__(self, in_features: int, k: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.k = _check_pos("k", k)
        self.dim = _check_pos("dim", dim)
        self.hidden = _check_pos("hidden", hidden)
        self.phi = _mlp(in_features, hidden, hidden)
        self.rho = _mlp(k * hidden, hidden, dim)

    def _encode(self, signed: Tensor, unsigned: Tensor, mask: Tensor) -> Tensor:
        # signed: (N, K, S), unsigned: (N, K, U), mask: (N, K)
        pos = torch.cat([signed, unsigned], dim=-1)
        neg = torch.cat([-signed, unsigned], dim=-1)
        h = (self.phi(pos) + self.phi(neg)) * mask.unsqueeze(-1).to(pos.dtype)  # (N, K, hidden)
        out: Tensor = self.rho(h.flatten(1))  # (N, K * hidden) -> (N, dim)
        return out


class LaplacianPEEncoder(_SignInvariant):
    r"""SignNet-style, sign-invariant encoder of Laplacian PEs.

    From "Sign and Basis Invariant Networks for Spectral Graph Representation Learning"
    (Lim et al., 2022, arXiv:2202.13013), Eq. (1):

    .. math::
        \mathrm{out}_u = \rho\left(\left[\phi(v_{uj}, \lambda_j) + \phi(-v_{uj},
        \lambda_j)\right]_{j=1}^{K}\right)

    Args:
        k: Number of eigenvectors ``K`` of the input.
        dim: Output channels ``D``.
        hidden: Width of ``phi`` and ``rho``.

    Shapes:
        ``vectors (N, K)``, ``values`` and ``mask`` broadcastable to ``(N, K)`` (per node, as
        stored by :class:`~multipos.graph.AddLaplacianPE`, or ``(K,)``) -> ``(N, D)``.

    Raises:
        TypeError / ValueError: If ``k``, ``dim`` or ``hidden`` is not a positive int, or the
            input's last dimension is not ``K``.
    """

    def __init__(self, k: int, dim: int, hidden: int = 32) -> None:
        super().__init__(2, k, dim, hidden)

    def forward(self, vectors: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        if vectors.dim() != 2 or vectors.shape[-1] != self.k:
            raise ValueError(f"vectors must have shape (N, K={self.k}), got {tuple(vectors.shape)}")
        values = values.to(vectors.dtype).expand_as(vectors)
        mask = mask.expand_as(vectors)
        return self._encode(vectors.unsqueeze(-1), values.unsqueeze(-1), mask)


class MagneticPEEncoder(_SignInvariant):
    r"""Sign-invariant encoder of magnetic Laplacian PEs (real, imaginary, eigenvalues).

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049),
    Sec. 3 (MagLapNet with SignNet-style symmetrisation):

    .. math::
        \mathrm{out}_u = \rho\left(\left[\phi(\Re v_{uj}, \Im v_{uj}, \lambda_j)
        + \phi(-\Re v_{uj}, -\Im v_{uj}, \lambda_j)\right]_{j=1}^{QK}\right)

    Args:
        k: Eigenvectors per potential ``K``.
        dim: Output channels ``D``.
        hidden: Width of ``phi`` and ``rho``.
        num_q: Number of potentials ``Q`` stacked in the input.

    Shapes:
        ``real``, ``imag``: ``(N, K)`` or ``(N, Q, K)``; ``values``, ``mask`` broadcastable to
        them -> ``(N, D)``.

    Raises:
        TypeError / ValueError: On a non-positive size or a wrongly shaped input.
    """

    def __init__(self, k: int, dim: int, hidden: int = 32, num_q: int = 1) -> None:
        self.num_q = _check_pos("num_q", num_q)
        super().__init__(3, _check_pos("k", k) * num_q, dim, hidden)
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


class RandomWalkBias(nn.Module):
    r"""Attention-logit bias from pairwise directional random-walk features.

    From "Transformers Meet Directed Graphs" (Geisler et al., 2023, arXiv:2302.00049),
    Sec. 4 (random-walk PEs used as relative encodings):

    .. math::
        b_{h, u v} = \mathrm{MLP}(R_{uv})_h

    Args:
        num_features: ``F``, the last dimension of the pairwise features.
        num_heads: ``H``.
        hidden: Width of the MLP.

    Shapes:
        ``features (B, N, N, F)`` (e.g. from
        :func:`multipos.graph.transforms.pairwise_to_dense`) -> ``(B, H, N, N)``.
    """

    def __init__(self, num_features: int, num_heads: int, hidden: int = 32) -> None:
        super().__init__()
        self.num_features = _check_pos("num_features", num_features)
        self.num_heads = _check_pos("num_heads", num_heads)
        self.mlp = _mlp(num_features, _check_pos("hidden", hidden), num_heads)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 4 or features.shape[-1] != self.num_features:
            raise ValueError(
                f"features must have shape (B, N, N, F={self.num_features}), "
                f"got {tuple(features.shape)}"
            )
        bias: Tensor = self.mlp(features)  # (B, N, N, H)
        return bias.permute(0, 3, 1, 2)  # (B, H, N, N)
