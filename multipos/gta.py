r"""GTA on grids: the registered ``gta`` scheme (SO(2) representations of token coordinates)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from multipos.attention import attention
from multipos.group_blocks import so2_angles
from multipos.groups import GTARepresentation

__all__ = ["GeometricTransformAttention"]


class GeometricTransformAttention(nn.Module):
    r"""Geometric transform attention over an ``A``-axis grid (2-D GTA).

    From "GTA: A Geometry-Aware Attention Mechanism for Multi-View Transformers" (Miyato et al.,
    2024, arXiv:2310.10375), Eq. (5), with the SO(2) representation of token coordinates
    (the paper's image-generation variant): every head channel pair ``a F + f`` turns by
    :math:`p_a\, b^{-f/F}` (:func:`~multipos.groups.so2_angles`) and

    .. math::
        o_i = \sum_j a_{ij}\, \rho_i^{-1}\rho_j v_j,\qquad
        a_{ij} = \operatorname{softmax}_j\big(s\, q_i^\top \rho_i^{-1}\rho_j k_j\big)

    With ``transform_values=False`` this is exactly ``rope_axial_2d`` (same frequencies, same
    interleaved layout). Channels beyond ``2 A F`` are identity. No parameters.

    Args:
        head_dim: Channels per head ``D``.
        num_axes: Position axes ``A``.
        num_freqs: Frequencies per axis ``F``; default ``D / (2 A)`` (all channels rotate).
        base: Frequency base ``b`` (100, as RoPE-ViT axial).
        transform_values: Transform values and outputs too (GTA); ``False`` gives RoPE.

    Shape:
        ``representation(positions)`` with ``positions: (A, L)`` or ``(A, B, L)`` returns the
        :class:`~multipos.groups.GTARepresentation`, built once and shared by layers;
        ``forward(q, k, v, positions, mask=None)`` with ``q, k, v: (B, H, L, D)`` returns
        ``(B, H, L, D)``.

    Raises:
        TypeError: If ``head_dim`` or ``num_freqs`` is not an int.
        ValueError: If ``D`` does not split into ``A`` axes of channel pairs (without
            ``num_freqs``), ``2 A F > D``, or positions are not ``(A, [B,] L)``.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        num_axes: int = 2,
        num_freqs: int | None = None,
        base: float = 100.0,
        transform_values: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("head_dim", head_dim), ("num_axes", num_axes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive int, got {value!r}")
        if num_freqs is None:
            if head_dim % (2 * num_axes):
                raise ValueError(
                    f"head_dim {head_dim} does not split into {num_axes} axes of channel pairs; "
                    "pass num_freqs (the remaining channels are identity)"
                )
            num_freqs = head_dim // (2 * num_axes)
        if isinstance(num_freqs, bool) or not isinstance(num_freqs, int) or num_freqs < 1:
            raise TypeError(f"num_freqs must be a positive int, got {num_freqs!r}")
        if 2 * num_axes * num_freqs > head_dim:
            raise ValueError(
                f"{num_axes} axes x {num_freqs} frequencies need {2 * num_axes * num_freqs} "
                f"channels, more than head_dim {head_dim}"
            )
        self.head_dim, self.num_axes, self.num_freqs = head_dim, num_axes, num_freqs
        self.base = float(base)
        self.transform_values = bool(transform_values)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving alongside a checkpoint."""
        return {
            "head_dim": self.head_dim,
            "num_axes": self.num_axes,
            "num_freqs": self.num_freqs,
            "base": self.base,
            "transform_values": self.transform_values,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    def representation(self, positions: Tensor) -> GTARepresentation:
        """SO(2) representation of ``positions: (A, L)`` or ``(A, B, L)`` (float; angles in
        float32 or wider)."""
        if positions.dim() not in (2, 3) or positions.shape[0] != self.num_axes:
            raise ValueError(
                f"positions must be (A={self.num_axes}, L) or (A, B, L), got "
                f"{tuple(positions.shape)}"
            )
        coords = positions.movedim(0, -1)  # (A, [B,] L) -> ([B,] L, A)
        if coords.dim() == 2:
            coords = coords.unsqueeze(0)
        angles = so2_angles(
            coords.float() if not coords.is_floating_point() else coords,
            self.num_freqs,
            base=self.base,
        )
        return GTARepresentation.from_angles(angles, self.head_dim)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        rep = self.representation(positions)
        return attention(q, k, v, gta=rep, transform_values=self.transform_values, mask=mask)
