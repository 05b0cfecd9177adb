r"""RoPE-Mixed: 2-D rotary embedding with learnable per-head frequencies."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from multipos.registry import register_scheme
from multipos.rotary import RotaryTables

__all__ = ["MixedRotaryEmbedding"]


class MixedRotaryEmbedding(nn.Module):
    r"""2-D rotary tables whose frequencies mix both axes and are learned per head.

    From "Rotary Position Embedding for Vision Transformer" (Heo, Park, Han, Yun, ECCV 2024,
    arXiv:2403.13298), Eq. (13): channel pair :math:`t` of head :math:`h` turns by

    .. math::
        \phi_{h,t}(p) = \theta^x_{h,t}\, p_x + \theta^y_{h,t}\, p_y

    with :math:`(\theta^x, \theta^y)` learnable. Initialisation as in the paper: magnitudes
    :math:`\text{base}^{-4t/D}` for :math:`t < D/4`, the first :math:`D/4` pairs pointing in a
    random direction :math:`\alpha_h` per head and the other :math:`D/4` at
    :math:`\alpha_h + \pi/2`. The score still depends only on :math:`p_i - p_j`. The returned
    tables use the interleaved pair layout and say so (``tables.layout``).

    Args:
        num_heads: Heads ``H``.
        head_dim: Channels per head ``D`` (divisible by 4).
        base: Frequency base (10 in the paper for RoPE-Mixed).
        generator: Random generator for the per-head directions.
        device: Device of the parameters.

    Shape:
        ``forward(positions: (2, L))`` returns :class:`~multipos.rotary.RotaryTables`
        ``(cos, sin)``, each ``(H, L, D)`` in float32, layout ``"interleaved"``.

    Raises:
        ValueError: If ``head_dim`` is not divisible by 4 or positions are not ``(2, L)``.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        base: float = 10.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"head_dim must be divisible by 4 for RoPE-Mixed, got {head_dim}")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.base = base
        self.freqs = nn.Parameter(torch.empty(2, num_heads, head_dim // 2, device=device))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        quarter = self.head_dim // 4
        mag = self.base ** (-torch.arange(quarter, dtype=torch.float64) * 4 / self.head_dim)
        alpha = torch.rand(self.num_heads, 1, generator=generator, dtype=torch.float64)
        alpha = alpha * 2 * math.pi
        angle = torch.cat((alpha.expand(-1, quarter), (alpha + math.pi / 2).expand(-1, quarter)), 1)
        mag2 = torch.cat((mag, mag))
        self.freqs.copy_(torch.stack((mag2 * angle.cos(), mag2 * angle.sin())).float())

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, base={self.base}"

    def forward(self, positions: Tensor) -> RotaryTables:
        if positions.dim() != 2 or positions.shape[0] != 2:
            raise ValueError(f"positions must be (2, L), got {tuple(positions.shape)}")
        # Angles in fp32 whatever the parameter dtype: (2, L) x (2, H, D/2) -> (H, L, D/2)
        phi = torch.einsum("al,ahj->hlj", positions.float(), self.freqs.float())
        cos, sin = phi.cos(), phi.sin()
        # (H, L, D/2) -> (H, L, D): pair t owns channels 2t and 2t + 1.
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        return RotaryTables(cos, sin, "interleaved")


register_scheme(
    "rope_mixed",
    MixedRotaryEmbedding,
    paper="Rotary Position Embedding for Vision Transformer (Heo et al., 2024, arXiv:2403.13298)",
    summary="RoPE-Mixed: 2-D rotary tables with learnable per-head frequencies mixing both axes",
    tiny={"num_heads": 2, "head_dim": 8},
    sample_inputs=lambda module, g: (torch.rand(2, 6, generator=g) * 5,),
    domain="vision",
)
