r"""Learnable Fourier features for multi-dimensional positions.

From "Learnable Fourier Features for Multi-Dimensional Spatial Positional Encoding" (Li, Si,
Li, Hsieh, Bengio, NeurIPS 2021, arXiv:2106.02795).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LearnableFourierFeatures"]


class LearnableFourierFeatures(nn.Module):
    r"""Positional encoding from learnable Fourier features followed by an MLP.

    Algorithm 1 and Eq. (2)-(3) of Li et al. (2021, arXiv:2106.02795): for a position
    :math:`x \in \mathbb{R}^M` in each of ``G`` groups,

    .. math::
        r_x = \frac{1}{\sqrt{F}} \big[\cos(x W_r^\top) \,\|\, \sin(x W_r^\top)\big],\qquad
        \text{PE}_x = \operatorname{GeLU}(r_x W_1 + b_1) W_2 + b_2

    with :math:`W_r \in \mathbb{R}^{F/2 \times M}` initialised from
    :math:`\mathcal{N}(0, \gamma^{-2})` (standard deviation :math:`1/\gamma`, as in the paper),
    shared with the MLP across groups; the ``G`` group outputs of width ``D / G`` are
    concatenated. Positions are continuous, so the encoding works at any resolution without
    interpolation.

    The paper leaves :math:`|F|`, :math:`|H|` and :math:`\gamma` as per-task hyperparameters.
    The defaults here (``F = 128``, ``H = 256``, ``gamma = 0.1``) are the ones the ViT adapter
    uses and the resolution benchmark measured; they suit coordinates normalised to (0, 1),
    where :math:`W_r` starts with a standard deviation of 10 radians per unit. Scale ``gamma``
    with your coordinates (``gamma = 0.1 * extent`` for coordinates spanning ``extent``).

    Args:
        num_axes: Position coordinates per group ``M`` (2 for images, 3 for video).
        dim: Output channels ``D``, the token width of the model (divisible by ``groups``).
        num_features: Fourier features ``F`` (even).
        hidden_dim: MLP hidden width ``H``.
        groups: Position groups ``G``.
        gamma: Scale of the initial frequencies (larger = smoother encoding).
        generator: Random generator for the initialisation.
        device: Device of the parameters.

    Shape:
        ``forward(positions)`` with ``positions: (A=M, ..., L)`` (one group) or
        ``(G, M, ..., L)`` returns ``(..., L, D)``.

    Raises:
        ValueError: On an odd ``num_features``, ``dim`` not divisible by ``groups``, a
            non-positive ``gamma``, or positions of the wrong leading shape or not finite
            (NaN, inf; checked outside ``torch.compile``).
    """

    def __init__(
        self,
        num_axes: int,
        dim: int,
        *,
        num_features: int = 128,
        hidden_dim: int = 256,
        groups: int = 1,
        gamma: float = 0.1,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if num_features <= 0 or num_features % 2:
            raise ValueError(f"num_features must be a positive even number, got {num_features}")
        if groups <= 0 or dim % groups:
            raise ValueError(f"dim ({dim}) must be divisible by groups ({groups})")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if num_axes <= 0 or hidden_dim <= 0:
            raise ValueError(
                f"num_axes and hidden_dim must be positive, got {num_axes}, {hidden_dim}"
            )
        self.num_axes = num_axes
        self.dim = dim
        self.num_features = num_features
        self.groups = groups
        self.gamma = gamma
        self.freqs = nn.Parameter(torch.empty(num_features // 2, num_axes, device=device))
        self.mlp = nn.Sequential(
            nn.Linear(num_features, hidden_dim, device=device),
            nn.GELU(),
            nn.Linear(hidden_dim, dim // groups, device=device),
        )
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw :math:`W_r \\sim \\mathcal{N}(0, \\gamma^{-2})` and re-initialise the MLP."""
        self.freqs.normal_(0.0, 1.0 / self.gamma, generator=generator)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def extra_repr(self) -> str:
        return (
            f"num_axes={self.num_axes}, dim={self.dim}, num_features={self.num_features}, "
            f"groups={self.groups}, gamma={self.gamma}"
        )

    def forward(self, positions: Tensor) -> Tensor:
        if self.groups == 1 and positions.shape[0] == self.num_axes:
            positions = positions.unsqueeze(0)
        if positions.dim() < 3 or positions.shape[:2] != (self.groups, self.num_axes):
            raise ValueError(
                f"positions must be (M={self.num_axes}, ..., L) or (G={self.groups}, "
                f"M={self.num_axes}, ..., L); got {tuple(positions.shape)}"
            )
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(positions).all()):
            raise ValueError(
                f"positions must be finite, got NaN or inf in {tuple(positions.shape)}"
            )
        # (G, M, ..., L) -> (..., L, G, M)
        x = positions.movedim(0, -1).movedim(0, -1).to(torch.float32)
        # Angles in fp32 even for a bf16/fp16 module; the finished features are cast once.
        proj = x @ self.freqs.to(torch.float32).t()  # (..., L, G, F/2)
        feats = torch.cat((proj.cos(), proj.sin()), dim=-1) / math.sqrt(self.num_features)
        out: Tensor = self.mlp(feats.to(self.freqs.dtype))  # (..., L, G, D/G)
        return out.flatten(-2)
